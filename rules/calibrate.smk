# Calibrator transits -> bandpass + gain tables; every observation -> calibrated MS.


rule solve_calibration:
    input:
        ms=naming.ms_path(RESULTS, "{calgroup}"),
        catalogue=lambda wildcards: config["catalogue"]["path"] or [],
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
        catalogue=lambda wildcards: config["catalogue"]["path"] or [],
    output:
        ms=directory(naming.product_path(RESULTS, "calibrated", "{group}")),
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


rule calibrator_flux:
    input:
        caltables=lambda wildcards: [
            naming.product_path(RESULTS, "caltable", c) for c in sorted(CALPLAN.calgroups)
        ],
    output:
        table=naming.calflux_path(RESULTS),
        sidecar=naming.sidecar_path(naming.calflux_path(RESULTS)),
    log:
        naming.log_path(RESULTS, "calibrator_flux", "all"),
    localrule: True
    script:
        "../scripts/calibrator_flux.py"
