"""Snakemake adapter for rule apply_calibration: the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.apply_calibration(
    ms=snakemake.input.ms,  # noqa: F821 (injected by Snakemake)
    caltables=list(snakemake.input.caltables),  # noqa: F821
    calibrated=snakemake.output.ms,  # noqa: F821
    group=snakemake.wildcards.group,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    problem=snakemake.params.problem,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
