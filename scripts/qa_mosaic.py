"""Snakemake adapter for rule qa_mosaic: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.qa_mosaic(
    mosaic_fits=snakemake.input.mosaic,  # noqa: F821 (injected by Snakemake)
    noise=snakemake.input.noise,  # noqa: F821
    png=snakemake.output.png,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
