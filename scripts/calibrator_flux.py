"""Snakemake adapter for rule calibrator_flux: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.calibrator_flux(
    caltables=list(snakemake.params.earlier) + list(snakemake.input.caltables),  # noqa: F821 (injected by Snakemake)
    table=snakemake.output.table,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
    left_out=snakemake.params.left_out,  # noqa: F821
)
