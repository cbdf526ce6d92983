"""Snakemake adapter for rule summary: all the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.summary(
    groups=snakemake.params.groups,  # noqa: F821 (injected by Snakemake)
    thumbnails=list(snakemake.input.thumbnails),  # noqa: F821
    mosaic_previews=list(snakemake.input.mosaic_previews),  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
