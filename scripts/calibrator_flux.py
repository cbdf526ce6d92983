"""Snakemake adapter for rule calibrator_flux: the work is in dsa110_contimg.stages.calibrate."""

from dsa110_contimg.stages.calibrate import calibrator_flux

calibrator_flux(
    caltables=list(snakemake.params.earlier) + list(snakemake.input.caltables),
    table=snakemake.output.calflux,
    config=snakemake.config,
    log=snakemake.log[0],
    left_out=snakemake.params.left_out,
)
