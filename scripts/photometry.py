"""Snakemake adapter for rule photometry: the work is in dsa110_contimg.stages.photometry."""

from dsa110_contimg.stages.photometry import photometry

photometry(
    pbcor=snakemake.input.pbcor,
    pb=snakemake.input.pb,
    residual=snakemake.input.residual,
    image_sidecar=snakemake.input.image_sidecar,
    output=snakemake.output.photometry,
    new_sources=snakemake.output.new_sources,
    group=snakemake.wildcards.group,
    config=snakemake.config,
    log=snakemake.log[0],
)
