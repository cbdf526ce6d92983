# DSA-110 continuum pipeline. Read README.md; the data flow is in rules/*.smk.
from snakemake.utils import min_version

min_version("9.0")

from dsa110_contimg import run_plan, runlock
from dsa110_contimg.config import ConfigError, validate_config


configfile: "config/config.yaml"


# `snakemake --report`: this page opens the report (see rules/report.smk).
report: "report/workflow.rst"


# Defaults come from the package schema; a bad key or value stops here,
# before any job is planned.
try:
    config.update(validate_config(config))
except ConfigError as err:
    raise ConfigError(f"invalid configuration: {err}") from None


include: "rules/common.smk"
include: "rules/convert.smk"
include: "rules/calibrate.smk"
include: "rules/image.smk"
include: "rules/photometry.smk"
include: "rules/mosaic.smk"
include: "rules/report.smk"


# Once, when a real run starts (not at every parse, and not in every cluster
# job's own snakemake): an unreachable database or an unreadable catalogue
# stops the run before any job; then the run takes <results_dir>/.contimg-run.lock
# (one run per results_dir, whatever the working directory; its jobs rename
# their outputs into place only while it holds it), removes what dead attempts
# left and records dead jobs as died (dsa110_contimg.runlock).
onstart:
    try:
        for line in run_plan.preflight(config):
            print(line, file=sys.stderr)
        runlock.start_run(config, lambda text: print(text, file=sys.stderr))
    except (run_plan.PlanError, runlock.RunLockError) as err:
        raise WorkflowError(str(err)) from None


onsuccess:
    runlock.release(RESULTS)


onerror:
    runlock.release(RESULTS)


rule all:
    default_target: True
    input:
        PLAN.targets(),
