"""Snakemake adapter for rule convert: the work is in dsa110_contimg.stages.convert."""

from dsa110_contimg.stages.convert import convert

convert(
    subbands=list(snakemake.input),
    ms=snakemake.output.ms,
    group=snakemake.wildcards.group,
    config=snakemake.config,
    log=snakemake.log[0],
)
