"""Snakemake adapter for rule build_mosaic: the work is in dsa110_contimg.stages.mosaic."""

from dsa110_contimg.stages.mosaic import BUILD_KINDS, build_mosaic

build_mosaic(
    plan=snakemake.input.plan,
    outputs={kind: snakemake.output[kind] for kind in BUILD_KINDS},
    config=snakemake.config,
    log=snakemake.log[0],
)
