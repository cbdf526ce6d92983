"""Snakemake adapter for rule solve_calibration: the work is in dsa110_contimg.stages.calibrate."""

from dsa110_contimg.stages.calibrate import solve_calibration

solve_calibration(
    ms=snakemake.input.ms,
    caltable=snakemake.output.caltable,
    calgroup=snakemake.wildcards.calgroup,
    config=snakemake.config,
    log=snakemake.log[0],
)
