# Tiered mosaics: plan_mosaic -> build_mosaic -> qa_mosaic, one chain per
# results/mosaics/{tier}/{mosaic}.fits. Which observations may belong to a
# mosaic is decided at parse time from the group ids (time) and the meridian at
# each group's mid time (sky region) by dsa110_contimg.mosaic.wiring; their
# images are the plan's inputs. A new observation in a mosaic's window changes
# only that plan's inputs, so Snakemake reruns that plan, build and QA only;
# a plan rewritten with the same bytes (plans hold no time stamp) rebuilds nothing.


# A checkpoint: whether a plan kept any image is known only once it is made.
# Rule mosaic_outcome (the default target's, per mosaic) then asks for the QA of
# a plan that kept images and for nothing more of one that kept none, so an
# empty mosaic is neither built nor a failed job; its plan says why.
checkpoint plan_mosaic:
    input:
        unpack(mosaic_inputs),
    output:
        **outputs("plan_mosaic", tier="{tier}", mosaic="{mosaic}"),
    log:
        log_for("plan_mosaic", "{tier}/{mosaic}"),
    conda:
        "../envs/contimg.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=mosaic_resource("runtime"),
    params:
        selection=lambda wildcards: PLAN.mosaics.selection(
            wildcards.tier, wildcards.mosaic
        ).to_dict(),
        left_out=mosaic_left_out,
    script:
        "../scripts/plan_mosaic.py"


rule build_mosaic:
    input:
        plan=rules.plan_mosaic.output.mosaic_plan,
    output:
        **outputs("build_mosaic", tier="{tier}", mosaic="{mosaic}"),
    log:
        log_for("build_mosaic", "{tier}/{mosaic}"),
    benchmark:
        benchmark_for("build_mosaic", "{tier}/{mosaic}")
    conda:
        "../envs/contimg.yaml"
    threads: mosaic_resource("threads")
    resources:
        mem_mb=mosaic_resource("mem_mb"),
        runtime=mosaic_resource("runtime"),
    script:
        "../scripts/build_mosaic.py"


rule qa_mosaic:
    input:
        mosaic=rules.build_mosaic.output.mosaic,
        noise=rules.build_mosaic.output.mosaic_noise,
        catalogue=catalogue_file,
    output:
        **outputs("qa_mosaic", tier="{tier}", mosaic="{mosaic}"),
    log:
        log_for("qa_mosaic", "{tier}/{mosaic}"),
    conda:
        "../envs/contimg.yaml"
    threads: 1
    resources:
        mem_mb=mosaic_resource("mem_mb"),
        runtime=mosaic_resource("runtime"),
    script:
        "../scripts/qa_mosaic.py"


rule mosaic_outcome:
    input:
        unpack(mosaic_outcome_inputs),
    output:
        **outputs("mosaic_outcome", tier="{tier}", mosaic="{mosaic}"),
    log:
        log_for("mosaic_outcome", "{tier}/{mosaic}"),
    localrule: True
    conda:
        "../envs/contimg.yaml"
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    script:
        "../scripts/mosaic_outcome.py"
