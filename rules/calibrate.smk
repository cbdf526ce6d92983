# Calibrator transits -> bandpass + gain tables; every observation -> calibrated MS.


rule solve_calibration:
    input:
        ms=naming.ms_path(RESULTS, "{calgroup}"),
    output:
        caltable=directory(naming.product_path(RESULTS, "caltable", "{calgroup}")),
        sidecar=naming.sidecar_path(naming.product_path(RESULTS, "caltable", "{calgroup}")),
    log:
        naming.log_path(RESULTS, "solve_calibration", "{calgroup}"),
    benchmark:
        naming.benchmark_path(RESULTS, "solve_calibration", "{calgroup}")
    threads: res("solve_calibration", "threads")
    resources:
        mem_mb=mem_mb("solve_calibration"),
        runtime=res("solve_calibration", "runtime"),
    script:
        "../scripts/solve_calibration.py"


rule apply_calibration:
    input:
        unpack(calibration_inputs),
    output:
        ms=intermediate(directory(naming.product_path(RESULTS, "calibrated", "{group}"))),
        sidecar=naming.sidecar_path(naming.product_path(RESULTS, "calibrated", "{group}")),
    params:
        problem=calibration_problem,
    log:
        naming.log_path(RESULTS, "apply_calibration", "{group}"),
    benchmark:
        naming.benchmark_path(RESULTS, "apply_calibration", "{group}")
    threads: res("apply_calibration", "threads")
    resources:
        mem_mb=mem_mb("apply_calibration"),
        runtime=res("apply_calibration", "runtime"),
    script:
        "../scripts/apply_calibration.py"


def calflux_caltables(wildcards):
    """The caltables of the targeted calibrator transits (held-back ones are not
    planned: the fan-in lists them instead of waiting)."""
    targeted = set(TARGET_GROUPS)
    return [naming.product_path(RESULTS, "caltable", c) for c in sorted(CALPLAN.calgroups) if c in targeted]


def earlier_caltables(wildcards):
    """Caltables of transits before a rolling run's window that exist (read, not planned)."""
    targeted = set(TARGET_GROUPS)
    paths = (naming.product_path(RESULTS, "caltable", c) for c in sorted(CALPLAN.calgroups) if c not in targeted)
    return [p for p in paths if os.path.exists(naming.sidecar_path(p))]


def calflux_left_out(wildcards):
    """Calibrator transits held back by a failure -> why."""
    if not HELD:
        return {}
    every = calplan.plan_calibration(sorted(GROUPS) + sorted(HELD), config["pointing"]["dec_deg"],
                                     config["calibration"])
    return {g: f"{name}: {HELD[g]}" for g, name in sorted(every.calgroups.items()) if g in HELD}


rule calibrator_flux:
    input:
        caltables=calflux_caltables,
    params:
        earlier=earlier_caltables,
        left_out=calflux_left_out,
    output:
        table=naming.calflux_path(RESULTS),
        sidecar=naming.sidecar_path(naming.calflux_path(RESULTS)),
    log:
        naming.log_path(RESULTS, "calibrator_flux", "all"),
    localrule: True
    script:
        "../scripts/calibrator_flux.py"
