# Parse-time set-up shared by every rule: one plan object built from the
# config and the names in raw_dir (dsa110_contimg.run_plan; no file opened, no
# service asked), the wildcard constraints and the input functions.
import sys

from snakemake.exceptions import WorkflowError

from dsa110_contimg import naming, run_plan
from dsa110_contimg.mosaic import wiring as mosaic_wiring

RESULTS = config["results_dir"]

try:
    PLAN = run_plan.build(config)
except run_plan.PlanError as err:
    raise WorkflowError(str(err)) from None
for note in PLAN.notes:
    print(note, file=sys.stderr)
GROUPS = PLAN.groups
TEMP_INTERMEDIATES = config["retention"]["intermediates"] == "temp"


wildcard_constraints:
    group=naming.GROUP_PATTERN,
    calgroup=naming.GROUP_PATTERN,
    tier="|".join(naming.MOSAIC_TIERS),
    mosaic=naming.MOSAIC_NAME_PATTERN,


def outputs(rule, **wildcards):
    """A rule's outputs, from the product registry: folders marked as such, and
    regenerable intermediates temp() when retention.intermediates is 'temp'."""
    marked = {}
    for key, path in naming.rule_outputs(RESULTS, rule, **wildcards).items():
        kind = naming.PRODUCTS.get(key)
        if kind is not None and kind.directory:
            path = directory(path)
        if kind is not None and kind.intermediate and TEMP_INTERMEDIATES:
            path = temp(path)
        marked[key] = path
    return marked


def log_for(rule, wildcard):
    return naming.log_path(RESULTS, rule, wildcard)


def benchmark_for(rule, wildcard):
    return naming.benchmark_path(RESULTS, rule, wildcard)


def report_file(name):
    """A table or figure of the report (rule summary)."""
    return naming.report_path(RESULTS, name)


def res(rule, key):
    """``resources.<rule>.<key>`` from the config (defaults from the schema)."""
    return config["resources"][rule][key]


def mem_mb(rule):
    """``resources.<rule>.mem_mb`` times the attempt: a retry after running out
    of memory (profiles set ``retries``) asks the scheduler for more."""
    return lambda wildcards, attempt: res(rule, "mem_mb") * attempt


# ------------------------------------------------------------- input functions


def subband_files(wildcards):
    """Raw files of one group, sb00 (highest frequency) first."""
    return PLAN.subband_files(wildcards.group)


def calibration_inputs(wildcards):
    """The group's MS, its candidate caltables (nearest first) and the flux-standard
    solutions a secondary candidate's flux bootstrap reads."""
    return {
        "ms": naming.product_path(RESULTS, "ms", wildcards.group),
        "caltables": PLAN.caltables_for(wildcards.group),
        "flux_references": PLAN.flux_references_for(wildcards.group),
    }


def calibration_problem(wildcards):
    """Why a group has no candidate calibration (None when it has some)."""
    return PLAN.calibration_problem(wildcards.group)


def calibrator_caltables(wildcards):
    """The targeted calibrator transits' solutions: the flux monitor's fan-in
    (held-back ones are listed by it, not waited for)."""
    return PLAN.calibrator_caltables()


def catalogue_file(wildcards):
    """The reference catalogue (an input, so a new catalogue reruns what used it)."""
    path = config["catalogue"]["path"]
    return [path] if path else []


def photometry_tables(wildcards):
    """The targeted groups' photometry tables: the light-curve fan-in's inputs
    (a held-back group is not among them, so it withholds nothing)."""
    return PLAN.products("photometry")


def new_source_tables(wildcards):
    """The targeted groups' new-source candidates: grouped by position over epochs in the fan-in."""
    return PLAN.products("new_sources")


def earlier(kind):
    """Existing products before a rolling run's window: read by a fan-in, not planned."""
    return lambda wildcards: PLAN.earlier(kind)


def left_out(wildcards):
    """Groups a fan-in goes without -> why."""
    return PLAN.left_out()


def mosaic_inputs(wildcards):
    """The plan's candidate images, primary beams and QA sidecars."""
    return PLAN.mosaics.inputs(wildcards.tier, wildcards.mosaic)


def mosaic_resource(key):
    return lambda wildcards: PLAN.mosaics.resource(wildcards.tier, key)


def mosaic_left_out(wildcards):
    """Groups of a mosaic's selection its plan goes without -> why."""
    return PLAN.mosaics.left_out(wildcards.tier, wildcards.mosaic)


def mosaic_outcome_inputs(wildcards):
    """The plan, and the QA preview when the plan kept an image (asked after the checkpoint)."""
    which = {"tier": wildcards.tier, "mosaic": wildcards.mosaic}
    plan = checkpoints.plan_mosaic.get(**which).output.mosaic_plan
    if mosaic_wiring.plan_keeps_images(plan):
        return {"plan": plan, "qa": naming.path_of(RESULTS, "mosaic_qa", **which)}
    return {"plan": plan}
