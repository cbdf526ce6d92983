# DSA-110 continuum pipeline. Read README.md; the data flow is in rules/*.smk.
from snakemake.utils import min_version

min_version("9.0")

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
include: "rules/mosaic.smk"
include: "rules/photometry.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets,
    default_target: True
