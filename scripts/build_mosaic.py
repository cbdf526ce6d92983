"""Snakemake adapter for rule build_mosaic: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.build_mosaic(
    plan=snakemake.input.plan,  # noqa: F821 (injected by Snakemake)
    outputs={
        "mosaic": snakemake.output.mosaic,  # noqa: F821
        "mosaic_noise": snakemake.output.noise,  # noqa: F821
        "mosaic_weights": snakemake.output.weights,  # noqa: F821
    },
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
