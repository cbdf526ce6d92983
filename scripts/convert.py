"""Snakemake adapter for rule convert: all the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.convert(
    subbands=list(snakemake.input),  # noqa: F821 (injected by Snakemake)
    ms=snakemake.output.ms,  # noqa: F821
    group=snakemake.wildcards.group,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
