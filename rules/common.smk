# Parse-time set-up shared by every rule: one plan object built from the
# config and the names in raw_dir (dsa110_contimg.run_plan; no file opened, no
# service asked), the wildcard constraints and the input functions.
import sys

from snakemake.exceptions import WorkflowError

from dsa110_contimg import naming, run_plan

RESULTS = config["results_dir"]

try:
    PLAN = run_plan.build(config)
except run_plan.PlanError as err:
    raise WorkflowError(str(err)) from None
for note in PLAN.notes:
    print(note, file=sys.stderr)
GROUPS = PLAN.groups


wildcard_constraints:
    group=naming.GROUP_PATTERN,
    calgroup=naming.GROUP_PATTERN,
    tier="|".join(naming.MOSAIC_TIERS),
    mosaic=naming.MOSAIC_NAME_PATTERN,


def outputs(rule, **wildcards):
    """A rule's outputs, from the product registry (folders marked as such)."""
    return {
        key: (
            directory(path)
            if key in naming.PRODUCTS and naming.PRODUCTS[key].directory
            else path
        )
        for key, path in naming.rule_outputs(RESULTS, rule, **wildcards).items()
    }


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
    """The group's MS and its candidate caltables, nearest first."""
    return {
        "ms": naming.product_path(RESULTS, "ms", wildcards.group),
        "caltables": PLAN.caltables_for(wildcards.group),
    }


def calibration_problem(wildcards):
    """Why a group has no candidate calibration (None when it has some)."""
    return PLAN.calibration_problem(wildcards.group)


def calibrator_caltables(wildcards):
    """Every calibrator transit's solution: the flux monitor's fan-in."""
    return [
        naming.product_path(RESULTS, "caltable", c)
        for c in sorted(PLAN.calibration.calgroups)
    ]


def catalogue_file(wildcards):
    """The reference catalogue (an input, so a new catalogue reruns what used it)."""
    path = config["catalogue"]["path"]
    return [path] if path else []


def photometry_tables(wildcards):
    """Every group's photometry table: the light-curve fan-in's inputs."""
    return [naming.product_path(RESULTS, "photometry", g) for g in sorted(GROUPS)]


def new_source_tables(wildcards):
    """Every group's new-source candidates: grouped by position over epochs in the fan-in."""
    return [naming.product_path(RESULTS, "new_sources", g) for g in sorted(GROUPS)]


def mosaic_inputs(wildcards):
    """The plan's candidate images, primary beams and QA sidecars."""
    return PLAN.mosaics.inputs(wildcards.tier, wildcards.mosaic)


def mosaic_resource(key):
    return lambda wildcards: PLAN.mosaics.resource(wildcards.tier, key)
