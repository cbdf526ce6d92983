# Calibrated MS -> image, residual, PSF, primary beam, corrected image, thumbnail
# and a QA sidecar (kind "image") per observation.


rule image:
    input:
        ms=naming.product_path(RESULTS, "calibrated", "{group}"),
    output:
        image=naming.product_path(RESULTS, "image", "{group}"),
        residual=naming.product_path(RESULTS, "residual", "{group}"),
        psf=naming.product_path(RESULTS, "psf", "{group}"),
        pb=naming.product_path(RESULTS, "pb", "{group}"),
        pbcor=naming.product_path(RESULTS, "pbcor", "{group}"),
        thumbnail=naming.product_path(RESULTS, "thumbnail", "{group}"),
        sidecar=naming.sidecar_path(naming.product_path(RESULTS, "image", "{group}")),
    log:
        naming.log_path(RESULTS, "image", "{group}"),
    benchmark:
        naming.benchmark_path(RESULTS, "image", "{group}")
    threads: res("image", "threads")
    resources:
        mem_mb=mem_mb("image"),
        runtime=res("image", "runtime"),
    script:
        "../scripts/image.py"
