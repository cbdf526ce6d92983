# Forced photometry of every beam-corrected image at the reference catalogue's
# positions (+ new-source candidates), then one fan-in over all of it: light
# curves, variability metrics and extreme-scattering-event candidates.
# Switched on by catalogue.path (null: no photometry targets).
CATALOGUE = config["catalogue"]["path"]
# The fan-in's products (as dsa110_contimg.stages.photometry.lightcurve_outputs names them;
# not imported from there: the stages package is slow to import at parse time).
LIGHTCURVES = {
    "lightcurves": naming.product_path(RESULTS, "lightcurves", "all"),
    "epochs": naming.product_path(RESULTS, "lightcurve_epochs", "all"),
    "variability": naming.product_path(RESULTS, "variability", "all"),
    "ese_candidates": naming.product_path(RESULTS, "ese_candidates", "all"),
    "ese_plot": naming.product_path(RESULTS, "ese_plot", "all"),
}


def catalogue_file(wildcards):
    """The reference catalogue (an input, so a new catalogue reruns the photometry)."""
    return [CATALOGUE] if CATALOGUE else []


def photometry_tables(wildcards):
    """The photometry table of every targeted group: the fan-in's inputs (held-back
    groups are not among them, so one failed observation withholds nothing)."""
    return [naming.product_path(RESULTS, "photometry", g) for g in TARGET_GROUPS]


def earlier_photometry(wildcards):
    """Photometry tables of groups before a rolling run's window that exist: read by
    the fan-in (the light curves span the whole survey) without planning their jobs."""
    targeted = set(TARGET_GROUPS)
    paths = (naming.product_path(RESULTS, "photometry", g) for g in sorted(GROUPS) if g not in targeted)
    return [p for p in paths if os.path.exists(p)]


def photometry_targets():
    """Per-group photometry, new sources and the fan-in products (empty without a catalogue or a group)."""
    if not CATALOGUE or not GROUPS:
        return []
    return [LIGHTCURVES["ese_candidates"], LIGHTCURVES["variability"]] + [
        naming.product_path(RESULTS, "new_sources", g) for g in TARGET_GROUPS
    ]


rule photometry:
    input:
        pbcor=naming.product_path(RESULTS, "pbcor", "{group}"),
        pb=naming.product_path(RESULTS, "pb", "{group}"),
        residual=naming.product_path(RESULTS, "residual", "{group}"),
        image_sidecar=naming.sidecar_path(naming.product_path(RESULTS, "image", "{group}")),
        catalogue=catalogue_file,
    output:
        table=naming.product_path(RESULTS, "photometry", "{group}"),
        sidecar=naming.sidecar_path(naming.product_path(RESULTS, "photometry", "{group}")),
        new_sources=naming.product_path(RESULTS, "new_sources", "{group}"),
        new_sources_sidecar=naming.sidecar_path(naming.product_path(RESULTS, "new_sources", "{group}")),
    log:
        naming.log_path(RESULTS, "photometry", "{group}"),
    benchmark:
        naming.benchmark_path(RESULTS, "photometry", "{group}")
    threads: res("photometry", "threads")
    resources:
        mem_mb=mem_mb("photometry"),
        runtime=res("photometry", "runtime"),
    script:
        "../scripts/photometry.py"


rule lightcurves:
    input:
        photometry_tables,
    params:
        earlier=earlier_photometry,
        left_out=lambda wildcards: left_out(),
    output:
        lightcurves=LIGHTCURVES["lightcurves"],
        epochs=LIGHTCURVES["epochs"],
        variability=LIGHTCURVES["variability"],
        ese_candidates=LIGHTCURVES["ese_candidates"],
        ese_plot=LIGHTCURVES["ese_plot"],
        sidecars=[naming.sidecar_path(LIGHTCURVES[k]) for k in ("lightcurves", "variability", "ese_candidates")],
    log:
        naming.log_path(RESULTS, "lightcurves", "all"),
    benchmark:
        naming.benchmark_path(RESULTS, "lightcurves", "all")
    threads: res("lightcurves", "threads")
    resources:
        mem_mb=mem_mb("lightcurves"),
        runtime=res("lightcurves", "runtime"),
    script:
        "../scripts/lightcurves.py"
