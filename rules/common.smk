# Parse-time set-up shared by every rule: the raw listing, its grouping into
# observations, wildcard constraints and the input functions. Names only: no
# raw file is opened here (DESIGN.md, "parse time is cheap").
import datetime
import os
import sys

from snakemake.exceptions import WorkflowError

from dsa110_contimg import naming
from dsa110_contimg.calibration import plan as calplan
from dsa110_contimg.raw import grouping

RAW = config["raw_dir"]
RESULTS = config["results_dir"]

# Every job registers its product: an unreachable database, or one at another
# schema revision, must stop the run here rather than fail each job at its end.
from dsa110_contimg.db import DatabaseError, check_database

try:
    check_database(config)
except DatabaseError as err:
    raise WorkflowError(f"product database: {err}") from None

# A catalogue that cannot be read would fail every photometry job; say so now.
from dsa110_contimg.photometry.catalogue import check_catalogue

if problem := check_catalogue(config):
    raise WorkflowError(f"catalogue: {problem}")


def _say(text):
    print(text, file=sys.stderr)


def raw_names(raw_dir):
    """Names of the entries of raw_dir that are not folders, or a clear error."""
    try:
        return grouping.raw_names(raw_dir)
    except FileNotFoundError:
        raise WorkflowError(
            f"raw_dir {raw_dir!r} does not exist (working directory {os.getcwd()!r}); "
            "set raw_dir in the config or pass --config raw_dir=PATH"
        ) from None


def _summarise(names, limit=10):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


GROUPING = grouping.group_files(
    raw_names(RAW),
    tolerance_s=config["grouping"]["tolerance_s"],
    n_subbands=config["grouping"]["n_subbands"],
)
# A rolling run (contimg run, config run.rolling) plans settled groups only and
# targets a window of recent nights (dsa110_contimg.rolling.window).
ROLLING = config["run"]["rolling"]
if ROLLING:
    from dsa110_contimg.rolling import held as rolling_held
    from dsa110_contimg.rolling import window as rolling_window

    ROLLING_SELECTION = rolling_window.select(GROUPING, RAW, config["run"])
    GROUPING = ROLLING_SELECTION.grouping
    if ROLLING_SELECTION.settling:
        _say(
            f"waiting for {len(ROLLING_SELECTION.settling)} group(s) still being written "
            f"(run.settle_s): {', '.join(ROLLING_SELECTION.settling)}"
        )
try:
    SELECTION = grouping.select_groups(GROUPING, config["grouping"]["incomplete"])
except (grouping.GroupingError, naming.RawNameError) as err:
    raise WorkflowError(f"raw_dir {RAW!r} (grouping.incomplete is 'fail'): {err}") from None
GROUPS = {group.id: group for group in SELECTION.groups}
# Groups held back by a failure (rolling runs): not planned, and the fan-ins
# list them with the reason instead of waiting for them.
if ROLLING:
    # The window and, before it, the groups whose calibration may serve it.
    _first = ""
    if ROLLING_SELECTION.window_start is not None:
        _margin = datetime.timedelta(hours=config["calibration"]["max_separation_h"])
        _first = naming.format_timestamp(ROLLING_SELECTION.window_start - _margin)
    HELD = rolling_held.held_back(config, {g: v for g, v in GROUPS.items() if g >= _first}, RAW)
else:
    HELD = {}
for _group, _why in sorted(HELD.items()):
    _say(f"holding back {_group} until its cause changes: {_why}")
GROUPS = {g: group for g, group in GROUPS.items() if g not in HELD}
# The groups whose products a run targets: all, or a rolling run's window.
TARGET_GROUPS = ROLLING_SELECTION.in_window(GROUPS) if ROLLING else sorted(GROUPS)

if SELECTION.warning:
    _say(f"WARNING: raw_dir {RAW!r}: " + SELECTION.warning)
if GROUPING.ignored:
    _say(
        f"ignoring {len(GROUPING.ignored)} file(s) in raw_dir {RAW!r} that are not "
        f"observations: {_summarise(sorted(GROUPING.ignored))}"
    )
if not GROUPS:
    _say(f"no complete observation in raw_dir {RAW!r}: nothing to do")


wildcard_constraints:
    group=naming.GROUP_PATTERN,
    calgroup=naming.GROUP_PATTERN,


def intermediate(path):
    """An output the workflow may remove once its consumers are done (retention.intermediates)."""
    return temp(path) if config["retention"]["intermediates"] == "temp" else path


def res(rule, key):
    """``resources.<rule>.<key>`` from the config (defaults from the schema)."""
    return config["resources"][rule][key]


def mem_mb(rule):
    """``resources.<rule>.mem_mb`` times the attempt: a retry after running out
    of memory (profiles set ``retries``) asks the scheduler for more."""
    return lambda wildcards, attempt: res(rule, "mem_mb") * attempt


def group_of(wildcards):
    """The complete group named by the ``group`` wildcard, or a clear error."""
    try:
        return GROUPS[wildcards.group]
    except KeyError:
        if wildcards.group in HELD:
            raise ValueError(f"group {wildcards.group} is held back: {HELD[wildcards.group]}") from None
        known = GROUPING.by_id.get(wildcards.group)
        if known is not None:
            raise ValueError(f"group {known.id} cannot be processed: {known.problem()}") from None
        raise ValueError(f"no observation {wildcards.group} in raw_dir {RAW!r}") from None


def subband_files(wildcards):
    """Raw files of one group, sb00 (highest frequency) first."""
    return [os.path.join(RAW, name) for name in group_of(wildcards).ordered_files()]


# Calibration plan (names and config only): calibrator-transit groups and,
# for every group, its candidate calibrations nearest first.
CALPLAN = calplan.plan_calibration(GROUPS, config["pointing"]["dec_deg"], config["calibration"])
if CALPLAN.calgroups:
    _say(
        "calibrator transits: "
        + ", ".join(f"{name} in {g}" for g, name in sorted(CALPLAN.calgroups.items()))
    )
if CALPLAN.problems:
    _say(
        f"WARNING: {len(CALPLAN.problems)} group(s) have no calibration and will fail at "
        f"apply_calibration: {_summarise(sorted(CALPLAN.problems))}"
    )


def calibration_inputs(wildcards):
    """The group's MS and its candidate caltables, nearest first."""
    return {
        "ms": naming.ms_path(RESULTS, wildcards.group),
        "caltables": [
            naming.product_path(RESULTS, "caltable", c)
            for c in CALPLAN.candidates.get(wildcards.group, [])
        ],
    }


def calibration_problem(wildcards):
    """Why a group has no candidate calibration (None when it has some)."""
    return CALPLAN.problems.get(wildcards.group)


def left_out(group_ids=None):
    """Groups a fan-in goes without -> why: held back by a failure, or incomplete
    (within ``group_ids`` when given). Groups still being written are not listed."""
    why = dict(HELD)
    why.update({g.id: f"incomplete: {g.problem()}" for g in GROUPING.incomplete})
    if group_ids is not None:
        why = {g: w for g, w in why.items() if g in set(group_ids)}
    return dict(sorted(why.items()))


def all_targets(wildcards=None):
    """Every final product of every complete group (images, photometry and the
    light-curve fan-in when a catalogue is configured; the calibrator flux
    table when a calibrator transits; the mosaics of ``mosaic.targets``).

    With no group, the target is raw_dir itself (it exists), so Snakemake
    plans no job at all; a target list that is empty would still run 'all'.
    """
    targets = [naming.product_path(RESULTS, "image", group_id) for group_id in TARGET_GROUPS]
    if CALPLAN.calgroups:
        targets.append(naming.calflux_path(RESULTS))
    targets += photometry_targets()
    targets += [mosaic_outcome_target(t) for t in MOSAIC_TARGETS]
    return targets or [RAW]
