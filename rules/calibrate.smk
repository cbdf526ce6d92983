# Calibrator transits -> bandpass + gain tables; every observation -> calibrated MS.


rule solve_calibration:
    input:
        ms=naming.product_path(RESULTS, "ms", "{calgroup}"),
        catalogue=catalogue_file,
    output:
        **outputs("solve_calibration", calgroup="{calgroup}"),
    log:
        log_for("solve_calibration", "{calgroup}"),
    benchmark:
        benchmark_for("solve_calibration", "{calgroup}")
    conda:
        "../envs/contimg.yaml"
    threads: res("solve_calibration", "threads")
    resources:
        mem_mb=mem_mb("solve_calibration"),
        runtime=res("solve_calibration", "runtime"),
    script:
        "../scripts/solve_calibration.py"


rule apply_calibration:
    input:
        unpack(calibration_inputs),
        catalogue=catalogue_file,
    output:
        **outputs("apply_calibration", group="{group}"),
    log:
        log_for("apply_calibration", "{group}"),
    benchmark:
        benchmark_for("apply_calibration", "{group}")
    conda:
        "../envs/contimg.yaml"
    threads: res("apply_calibration", "threads")
    resources:
        mem_mb=mem_mb("apply_calibration"),
        runtime=res("apply_calibration", "runtime"),
    params:
        problem=calibration_problem,
    script:
        "../scripts/apply_calibration.py"


rule calibrator_flux:
    input:
        caltables=calibrator_caltables,
    output:
        **outputs("calibrator_flux"),
    log:
        log_for("calibrator_flux", "all"),
    localrule: True
    conda:
        "../envs/contimg.yaml"
    params:
        earlier=earlier("caltable"),
        left_out=lambda wildcards: PLAN.calflux_left_out,
    script:
        "../scripts/calibrator_flux.py"
