"""Snakemake adapter for rule summary: the work is in dsa110_contimg.stages.report."""

from dsa110_contimg.stages.report import summary

summary(
    groups=snakemake.params.groups,
    outputs=dict(snakemake.output.items()),
    config=snakemake.config,
    log=snakemake.log[0],
)
