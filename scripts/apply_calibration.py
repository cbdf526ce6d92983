"""Snakemake adapter for rule apply_calibration: the work is in dsa110_contimg.stages.calibrate."""

from dsa110_contimg.stages.calibrate import apply_calibration

apply_calibration(
    ms=snakemake.input.ms,
    caltables=list(snakemake.input.caltables),
    flux_references=list(snakemake.input.flux_references),
    calibrated=snakemake.output.calibrated,
    group=snakemake.wildcards.group,
    config=snakemake.config,
    problem=snakemake.params.problem,
    log=snakemake.log[0],
)
