"""Snakemake adapter for rule plan_mosaic: the work is in dsa110_contimg.stages.mosaic."""

from dsa110_contimg.stages.mosaic import plan_mosaic

plan_mosaic(
    images=list(snakemake.input.images),
    pbs=list(snakemake.input.pbs),
    plan=snakemake.output.mosaic_plan,
    tier=snakemake.wildcards.tier,
    name=snakemake.wildcards.mosaic,
    config=snakemake.config,
    selection=snakemake.params.selection,
    log=snakemake.log[0],
    left_out=snakemake.params.left_out,
)
