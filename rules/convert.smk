# 16 raw subband files -> one Measurement Set per observation.


rule convert:
    input:
        subband_files,
    output:
        ms=intermediate(directory(naming.ms_path(RESULTS, "{group}"))),
        sidecar=naming.sidecar_path(naming.ms_path(RESULTS, "{group}")),
    log:
        naming.log_path(RESULTS, "convert", "{group}"),
    benchmark:
        naming.benchmark_path(RESULTS, "convert", "{group}")
    threads: res("convert", "threads")
    resources:
        mem_mb=mem_mb("convert"),
        runtime=res("convert", "runtime"),
    script:
        "../scripts/convert.py"
