"""Snakemake adapter for rule image: all the work is in dsa110_contimg.stages."""

from dsa110_contimg import stages

stages.image(
    ms=snakemake.input.ms,  # noqa: F821 (injected by Snakemake)
    outputs={k: v for k, v in snakemake.output.items() if k != "sidecar"},  # noqa: F821
    group=snakemake.wildcards.group,  # noqa: F821
    config=snakemake.config,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    mem_mb=snakemake.resources.mem_mb,  # noqa: F821
    log=snakemake.log[0],  # noqa: F821
)
