# Forced photometry of every beam-corrected image at the reference catalogue's
# positions (+ new-source candidates), then one fan-in over all of it: light
# curves, variability metrics and extreme-scattering-event candidates.
# Switched on by catalogue.path (null: no photometry targets).


rule photometry:
    input:
        pbcor=rules.image.output.pbcor,
        pb=rules.image.output.pb,
        residual=rules.image.output.residual,
        image_sidecar=rules.image.output.image_sidecar,
        catalogue=catalogue_file,
    output:
        **outputs("photometry", group="{group}"),
    log:
        log_for("photometry", "{group}"),
    benchmark:
        benchmark_for("photometry", "{group}")
    conda:
        "../envs/contimg.yaml"
    threads: res("photometry", "threads")
    resources:
        mem_mb=mem_mb("photometry"),
        runtime=res("photometry", "runtime"),
    script:
        "../scripts/photometry.py"


rule lightcurves:
    input:
        tables=photometry_tables,
        new_sources=new_source_tables,
    output:
        **outputs("lightcurves", name="all"),
    log:
        log_for("lightcurves", "all"),
    benchmark:
        benchmark_for("lightcurves", "all")
    conda:
        "../envs/contimg.yaml"
    threads: res("lightcurves", "threads")
    resources:
        mem_mb=mem_mb("lightcurves"),
        runtime=res("lightcurves", "runtime"),
    params:
        earlier_tables=earlier("photometry"),
        earlier_new_sources=earlier("new_sources"),
        left_out=left_out,
    script:
        "../scripts/lightcurves.py"
