"""Snakemake adapter for rule image: the work is in dsa110_contimg.stages.image."""

from dsa110_contimg.stages.image import OUTPUT_KINDS, image

image(
    ms=snakemake.input.ms,
    outputs={kind: snakemake.output[kind] for kind in OUTPUT_KINDS},
    group=snakemake.wildcards.group,
    config=snakemake.config,
    threads=snakemake.threads,
    mem_mb=snakemake.resources.mem_mb,
    log=snakemake.log[0],
)
