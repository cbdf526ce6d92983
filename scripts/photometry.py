"""Snakemake adapter for rule photometry: all the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.photometry(
    pbcor=snakemake.input.pbcor,  # noqa: F821 (injected by Snakemake)
    pb=snakemake.input.pb,  # noqa: F821
    residual=snakemake.input.residual,  # noqa: F821
    image_sidecar=snakemake.input.image_sidecar,  # noqa: F821
    output=snakemake.output.table,  # noqa: F821
    new_sources=snakemake.output.new_sources,  # noqa: F821
    group=snakemake.wildcards.group,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
