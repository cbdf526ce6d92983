"""Groups held back by a failure, so the fan-ins run on what succeeded.

A group whose latest run of some per-group rule (convert, solve_calibration,
apply_calibration, image, photometry) failed is left out of a rolling run
(its jobs are not planned again, the fan-ins do not wait for it and list it
with the reason) until its cause may have changed:

- a raw file of the group is newer than the failure (the file was replaced), or
- the failure is older than ``run.retry_failed_after_h`` (a transient fault:
  the group is tried once more; a new failure holds it again), or
- its failure record is gone (``contimg run --retry-failed`` ignores them all).

One query of the job runs of the groups asked about; parse time stays cheap.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

from .. import naming
from ..raw import grouping
from ..raw.grouping import newest_mtime

#: Rules that work on one observation group (wildcard group or calgroup).
GROUP_RULES = ("convert", "solve_calibration", "apply_calibration", "image", "photometry")


def latest_failures(config: Mapping[str, Any], group_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per group: its latest failed per-group job run ({rule, reason, finished, log}), if the latest run failed."""
    if not group_ids:
        return {}
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ..db import Database
    from ..db.schema import JobRun

    found: dict[tuple[str, str], Any] = {}
    with Database.from_config(config) as database, Session(database.engine) as session:
        ids = set(group_ids)
        # Group ids sort as times: one indexed range, however many groups are asked about.
        stmt = select(JobRun).where(JobRun.rule.in_(GROUP_RULES), JobRun.group_id >= min(ids),
                                    JobRun.group_id <= max(ids))
        for run in session.scalars(stmt):
            if run.group_id not in ids:
                continue
            key = (run.group_id, run.rule)
            order = (run.started or dt.datetime.min, run.id)
            if key not in found or order > (found[key].started or dt.datetime.min, found[key].id):
                found[key] = run
        out: dict[str, dict[str, Any]] = {}
        for (group, rule), run in sorted(found.items()):
            if run.status == "failed":
                out.setdefault(group, {"rule": rule, "reason": run.message or "(no reason recorded)",
                                       "finished": run.finished or run.started, "log": run.log_path})
    return out


def window_candidates(config: Mapping[str, Any]) -> dict[str, grouping.Group]:
    """The complete, settled groups a rolling run may plan: its window and, before it, those
    whose calibration may serve it (``calibration.max_separation_h``). Names and stats only
    (no calibration plan): the survey's history is not asked about."""
    from . import window

    raw = config["raw_dir"]
    picked = window.select(grouping.read_raw(raw, config["grouping"]), raw, config["run"])
    if picked.window_start is None:
        return {}
    first = naming.format_timestamp(picked.window_start - dt.timedelta(hours=config["calibration"]["max_separation_h"]))
    return {g.id: g for g in picked.grouping.complete if g.id >= first}


def held_back(
    config: Mapping[str, Any],
    groups: Mapping[str, grouping.Group],
    raw_dir: str | os.PathLike,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Ids of the groups held back by a failure -> why (one line, naming the rule and the reason).

    ``groups`` are those that may be planned: a rolling run passes its window
    (and the calibrator groups that may serve it), not the survey's history.
    """
    retry_h = config["run"]["retry_failed_after_h"]
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    held: dict[str, str] = {}
    for group, failure in latest_failures(config, sorted(groups)).items():
        finished = failure["finished"]
        if finished is None:
            continue
        changed = dt.datetime.fromtimestamp(newest_mtime(raw_dir, groups[group]), dt.UTC)
        if changed.replace(tzinfo=None) > finished:
            continue  # a raw file was replaced after the failure: try again
        if retry_h is not None and (now - finished).total_seconds() > retry_h * 3600:
            continue  # old enough to retry once
        held[group] = f"{failure['rule']} failed: {' '.join(failure['reason'].split())}"
    return held
