# 16 raw subband files -> one Measurement Set per observation.


rule convert:
    input:
        subband_files,
    output:
        **outputs("convert", group="{group}"),
    log:
        log_for("convert", "{group}"),
    benchmark:
        benchmark_for("convert", "{group}")
    conda:
        "../envs/contimg.yaml"
    threads: res("convert", "threads")
    resources:
        mem_mb=mem_mb("convert"),
        runtime=res("convert", "runtime"),
    script:
        "../scripts/convert.py"
