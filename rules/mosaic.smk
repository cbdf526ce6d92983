# Tiered mosaics: plan_mosaic -> build_mosaic -> qa_mosaic, one chain per
# results/mosaics/{tier}/{mosaic}.fits. Which observations may belong to a
# mosaic is decided at parse time from the group ids (time) and the meridian at
# each group's mid time (sky region) by dsa110_contimg.mosaic.Wiring; their
# images are the plan's inputs. A new observation in a mosaic's window changes
# only that plan's inputs, so Snakemake reruns that plan, build and QA only;
# a plan rewritten with the same bytes (plans hold no time stamp) rebuilds nothing.
from dsa110_contimg.mosaic import wiring as mosaic_wiring

MOSAICS = mosaic_wiring.Wiring(RESULTS, GROUPS, config, held=HELD, target_ids=TARGET_GROUPS)
# The mosaics the default target builds (mosaic.targets), for all_targets().
MOSAIC_TARGETS, MOSAIC_NOTES = MOSAICS.targets()
for note in MOSAIC_NOTES:
    _say(note)


wildcard_constraints:
    tier="|".join(naming.MOSAIC_TIERS),
    mosaic=naming.MOSAIC_NAME_PATTERN,


# A checkpoint: whether a plan kept any image is known only once it is made.
# Rule mosaic_outcome (the default target's per mosaic) then asks for the QA of
# a plan that kept images and for nothing more of one that kept none, so an
# empty mosaic is neither made nor a failed job; its plan says why.
checkpoint plan_mosaic:
    input:
        unpack(lambda wildcards: MOSAICS.inputs(wildcards.tier, wildcards.mosaic)),
    output:
        plan=naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_plan"),
        sidecar=naming.sidecar_path(naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_plan")),
    params:
        selection=lambda wildcards: MOSAICS.selection(wildcards.tier, wildcards.mosaic).to_dict(),
        left_out=lambda wildcards: MOSAICS.left_out(wildcards.tier, wildcards.mosaic),
        tier=lambda wildcards: config["mosaic"]["tiers"][wildcards.tier],
    log:
        naming.log_path(RESULTS, "plan_mosaic", "{tier}/{mosaic}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=lambda wildcards: MOSAICS.resource(wildcards.tier, "runtime"),
    script:
        "../scripts/plan_mosaic.py"


rule build_mosaic:
    input:
        plan=rules.plan_mosaic.output.plan,
    output:
        mosaic=naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic"),
        noise=naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_noise"),
        weights=naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_weights"),
        sidecar=naming.sidecar_path(naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic")),
    log:
        naming.log_path(RESULTS, "build_mosaic", "{tier}/{mosaic}"),
    benchmark:
        naming.benchmark_path(RESULTS, "build_mosaic", "{tier}/{mosaic}")
    threads: lambda wildcards: MOSAICS.resource(wildcards.tier, "threads")
    resources:
        mem_mb=lambda wildcards: MOSAICS.resource(wildcards.tier, "mem_mb"),
        runtime=lambda wildcards: MOSAICS.resource(wildcards.tier, "runtime"),
    script:
        "../scripts/build_mosaic.py"


rule qa_mosaic:
    input:
        mosaic=rules.build_mosaic.output.mosaic,
        noise=rules.build_mosaic.output.noise,
        catalogue=lambda wildcards: config["catalogue"]["path"] or [],
    output:
        png=naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_qa"),
        sidecar=naming.sidecar_path(naming.mosaic_path(RESULTS, "{tier}", "{mosaic}", "mosaic_qa")),
    params:
        qa=config["mosaic"]["qa"],
        catalogue=config["catalogue"],
    log:
        naming.log_path(RESULTS, "qa_mosaic", "{tier}/{mosaic}"),
    threads: 1
    resources:
        mem_mb=lambda wildcards: MOSAICS.resource(wildcards.tier, "mem_mb"),
        runtime=lambda wildcards: MOSAICS.resource(wildcards.tier, "runtime"),
    script:
        "../scripts/qa_mosaic.py"



def mosaic_outcome_inputs(wildcards):
    """The plan, and the QA preview when the plan kept an image (evaluated after the checkpoint)."""
    plan = checkpoints.plan_mosaic.get(tier=wildcards.tier, mosaic=wildcards.mosaic).output.plan
    if mosaic_wiring.plan_keeps_images(plan):
        return {"plan": plan, "qa": naming.mosaic_path(RESULTS, wildcards.tier, wildcards.mosaic, "mosaic_qa")}
    return {"plan": plan}


def mosaic_outcome_target(qa_path):
    """The outcome record standing for a default-target mosaic (``mosaic.targets``)."""
    tier, name, _ = naming.parse_mosaic_path(qa_path)
    return naming.mosaic_outcome_path(RESULTS, tier, name)


rule mosaic_outcome:
    input:
        unpack(mosaic_outcome_inputs),
    output:
        naming.mosaic_outcome_path(RESULTS, "{tier}", "{mosaic}"),
    log:
        naming.log_path(RESULTS, "mosaic_outcome", "{tier}/{mosaic}"),
    localrule: True
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    script:
        "../scripts/mosaic_outcome.py"
