"""Snakemake adapter for rule lightcurves: the work is in dsa110_contimg.stages.photometry."""

from dsa110_contimg.stages.photometry import lightcurves

lightcurves(
    photometry_files=list(snakemake.params.earlier_tables) + list(snakemake.input.tables),
    new_source_files=list(snakemake.params.earlier_new_sources) + list(snakemake.input.new_sources),
    outputs={k: v for k, v in snakemake.output.items() if not k.endswith("_sidecar")},
    config=snakemake.config,
    log=snakemake.log[0],
    mem_mb=snakemake.resources.mem_mb,
    left_out=snakemake.params.left_out,
)
