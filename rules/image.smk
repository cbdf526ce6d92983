# Calibrated MS -> image, residual, PSF, primary beam, corrected image, thumbnail
# and a QA sidecar (kind "image") per observation.


rule image:
    input:
        ms=rules.apply_calibration.output.calibrated,
    output:
        **outputs("image", group="{group}"),
    log:
        log_for("image", "{group}"),
    benchmark:
        benchmark_for("image", "{group}")
    conda:
        "../envs/contimg.yaml"
    threads: res("image", "threads")
    resources:
        mem_mb=mem_mb("image"),
        runtime=res("image", "runtime"),
    script:
        "../scripts/image.py"
