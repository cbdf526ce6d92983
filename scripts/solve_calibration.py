"""Snakemake adapter for rule solve_calibration: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.solve_calibration(
    ms=snakemake.input.ms,  # noqa: F821 (injected by Snakemake)
    caltable=snakemake.output.caltable,  # noqa: F821
    calgroup=snakemake.wildcards.calgroup,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
