"""Snakemake adapter for rule qa_mosaic: the work is in dsa110_contimg.stages.mosaic."""

from dsa110_contimg.stages.mosaic import qa_mosaic

qa_mosaic(
    mosaic_fits=snakemake.input.mosaic,
    noise=snakemake.input.noise,
    png=snakemake.output.mosaic_qa,
    config=snakemake.config,
    log=snakemake.log[0],
)
