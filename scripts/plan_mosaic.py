"""Snakemake adapter for rule plan_mosaic: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.plan_mosaic(
    images=list(snakemake.input.images),  # noqa: F821 (injected by Snakemake)
    pbs=list(snakemake.input.pbs),  # noqa: F821
    plan=snakemake.output.plan,  # noqa: F821
    tier=snakemake.wildcards.tier,  # noqa: F821
    name=snakemake.wildcards.mosaic,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    selection=snakemake.params.selection,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
    left_out=snakemake.params.left_out,  # noqa: F821
)
