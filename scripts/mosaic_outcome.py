"""Snakemake adapter for rule mosaic_outcome: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.mosaic_outcome(
    plan=snakemake.input.plan,  # noqa: F821 (injected by Snakemake)
    qa=snakemake.input.get("qa"),  # noqa: F821
    outcome=snakemake.output[0],  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
