# The report: rule summary turns the products that exist into the tables and
# figures of `snakemake --report` (captions in report/*.rst) and the Prometheus
# metrics file. It reads whatever products exist when it runs (a partial run,
# some groups failed or nothing imaged yet, still gets a report that says what
# is missing), so it has no inputs: the DAG never depends on what is on disk.
# Run it after the products, forced:
#
#     snakemake summary --forcerun summary && snakemake summary --report report.html
#
# (`make report` does both.) It is not part of rule all.


rule summary:
    output:
        observations=report(
            report_file("observations.html"),
            caption="../report/observations.rst",
            category="1. Observations",
        ),
        throughput=report(
            report_file("throughput.png"),
            caption="../report/throughput.rst",
            category="1. Observations",
        ),
        thumbnails=report(
            directory(report_file("thumbnails")),
            patterns=["{name}.png"],
            caption="../report/thumbnail.rst",
            category="2. Images",
        ),
        calibration_timeline=report(
            report_file("calibration_timeline.png"),
            caption="../report/calibration_timeline.rst",
            category="3. Calibration",
        ),
        calibrator_flux=report(
            report_file("calibrator_flux.png"),
            caption="../report/calibrator_flux.rst",
            category="3. Calibration",
        ),
        lightcurves=report(
            report_file("lightcurves.png"),
            caption="../report/lightcurves.rst",
            category="4. Variability",
        ),
        mosaics=report(
            report_file("mosaics.html"),
            caption="../report/mosaics.rst",
            category="5. Mosaics",
        ),
        mosaic_previews=report(
            directory(report_file("mosaic_previews")),
            patterns=["{name}.png"],
            caption="../report/mosaic_preview.rst",
            category="5. Mosaics",
        ),
        metrics=report_file("metrics.prom"),
    log:
        log_for("summary", "all"),
    benchmark:
        benchmark_for("summary", "all")
    localrule: True
    conda:
        "../envs/contimg.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        groups=sorted(GROUPS),
    script:
        "../scripts/summary.py"
