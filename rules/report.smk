# The report: rule summary turns the products that exist into the tables and
# figures of `snakemake --report` (captions in report/*.rst) and the Prometheus
# metrics file. Its inputs are the products found on disk when the DAG is
# built, not every product the workflow could make, so a partial run (some
# groups failed, nothing imaged yet) still gets a report that says what is
# missing; a new or remade product changes its inputs and reruns it.
#
#     snakemake summary && snakemake summary --report report.html
#
# (`make report` does both.) It is not part of rule all: run after the products.
SUMMARY_DIR = os.path.join(RESULTS, "report")


def _existing(paths):
    return [p for p in paths if os.path.exists(p)]


def summary_inputs(wildcards):
    """The products the summary reads, those that exist now."""
    groups = sorted(GROUPS)
    per_group = {
        "thumbnails": "thumbnail",
        "image_sidecars": "image",
        "calibrated_sidecars": "calibrated",
        "photometry": "photometry",
    }
    inputs = {
        key: _existing(
            naming.sidecar_path(naming.product_path(RESULTS, kind, g)) if key.endswith("sidecars")
            else naming.product_path(RESULTS, kind, g)
            for g in groups
        )
        for key, kind in per_group.items()
    }
    inputs["fan_in"] = _existing(
        [naming.calflux_path(RESULTS)] + [LIGHTCURVES[k] for k in ("lightcurves", "variability", "ese_candidates")]
    )
    inputs["mosaic_previews"] = _existing(MOSAIC_TARGETS)
    return inputs


rule summary:
    input:
        unpack(summary_inputs),
    output:
        observations=report(
            os.path.join(SUMMARY_DIR, "observations.html"),
            caption="../report/observations.rst",
            category="1. Observations",
        ),
        throughput=report(
            os.path.join(SUMMARY_DIR, "throughput.png"),
            caption="../report/throughput.rst",
            category="1. Observations",
        ),
        thumbnails=report(
            directory(os.path.join(SUMMARY_DIR, "thumbnails")),
            patterns=["{name}.png"],
            caption="../report/thumbnail.rst",
            category="2. Images",
        ),
        calibration_timeline=report(
            os.path.join(SUMMARY_DIR, "calibration_timeline.png"),
            caption="../report/calibration_timeline.rst",
            category="3. Calibration",
        ),
        calibrator_flux=report(
            os.path.join(SUMMARY_DIR, "calibrator_flux.png"),
            caption="../report/calibrator_flux.rst",
            category="3. Calibration",
        ),
        lightcurves=report(
            os.path.join(SUMMARY_DIR, "lightcurves.png"),
            caption="../report/lightcurves.rst",
            category="4. Variability",
        ),
        mosaics=report(
            os.path.join(SUMMARY_DIR, "mosaics.html"),
            caption="../report/mosaics.rst",
            category="5. Mosaics",
        ),
        mosaic_previews=report(
            directory(os.path.join(SUMMARY_DIR, "mosaic_previews")),
            patterns=["{name}.png"],
            caption="../report/mosaic_preview.rst",
            category="5. Mosaics",
        ),
        metrics=os.path.join(SUMMARY_DIR, "metrics.prom"),
    params:
        groups=sorted(GROUPS),
    log:
        naming.log_path(RESULTS, "summary", "all"),
    benchmark:
        naming.benchmark_path(RESULTS, "summary", "all")
    localrule: True
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/summary.py"
