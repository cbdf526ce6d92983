"""Snakemake adapter for rule lightcurves: all the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.lightcurves(
    photometry_files=list(snakemake.params.earlier) + list(snakemake.input),  # noqa: F821 (injected by Snakemake)
    outputs={  # noqa: F821
        key: getattr(snakemake.output, key)  # noqa: F821
        for key in ("lightcurves", "epochs", "variability", "ese_candidates", "ese_plot")
    },
    config=snakemake.config,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
    mem_mb=snakemake.resources.mem_mb,  # noqa: F821
    left_out=snakemake.params.left_out,  # noqa: F821
)
