"""Snakemake adapter for rule mosaic_outcome: the work is in dsa110_contimg.stages.mosaic."""

from dsa110_contimg.stages.mosaic import mosaic_outcome

mosaic_outcome(
    plan=snakemake.input.plan,
    qa=snakemake.input.get("qa"),
    outcome=snakemake.output.mosaic_outcome,
    config=snakemake.config,
    log=snakemake.log[0],
)
