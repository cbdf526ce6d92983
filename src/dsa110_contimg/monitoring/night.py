"""A night's counts, computed once for ``contimg products night`` and ``contimg status``.

The database knows what was made and what failed; only the raw listing knows
which groups are incomplete now (the database sees raw files after a ``db
sync``). :func:`merge` joins the two for one UTC date, so both commands count
the same groups the same way.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..raw import grouping
from ..raw.grouping import newest_mtime

#: Per-night totals, in the order they are shown.
TOTALS = ("seen", "complete", "incomplete", "converted", "calibrated", "imaged", "photometry", "failed")

_STAGES = ("converted", "calibrated", "imaged", "photometry", "caltable")


def raw_groups(config: Mapping[str, Any]) -> tuple[list[grouping.Group], str | None]:
    """The raw listing's groups (unreadable files marked), or none and why."""
    raw = config["raw_dir"]
    try:
        groups = grouping.read_raw(raw, config["grouping"]).groups
    except FileNotFoundError:
        return [], f"raw_dir {raw!r} does not exist"
    # An incomplete group whose newest file is younger than run.settle_s is still
    # being written: not reported (a rolling run does not plan it either). One with
    # a file that is not a readable regular file (a dangling symlink) is reported now.
    settle_s, now = config["run"]["settle_s"], time.time()
    return [g for g in groups if g.complete or g.unreadable or now - newest_mtime(raw, g) >= settle_s], None


def empty_summary(day: dt.date) -> dict[str, Any]:
    """The database's night summary when there is no database."""
    return {"night": day.isoformat(), "totals": {}, "groups": [], "failures": []}


def _raw_row(group: grouping.Group, n_subbands: int) -> dict[str, Any]:
    return {
        "group": group.id, "raw": f"{len(group.files)}/{n_subbands}", "complete": group.complete,
        "dec_deg": None, "grade": None, "flagged_fraction": None, "rfi_flagged_fraction": None,
        "failed": [], **dict.fromkeys(_STAGES, False),
    }  # fmt: skip


def merge(
    summary: Mapping[str, Any], raw: Sequence[grouping.Group], day: dt.date, n_subbands: int = 16
) -> dict[str, Any]:
    """The night ``day``: the database's ``night_summary`` joined with the raw groups of that date.

    Every group in either is seen; completeness comes from the listing when
    the group is listed there (a file made unreadable since it was registered
    counts), else from the database. A group is failed when the latest run of
    one of its jobs failed or died. ``incomplete`` lists each incomplete
    listed group with its problem.
    """
    on_disk = {g.id: g for g in raw if g.start.date() == day}
    rows = {row["group"]: dict(row) for row in summary["groups"]}
    for gid, group in on_disk.items():
        if gid in rows:
            rows[gid]["complete"] = group.complete
            rows[gid]["raw"] = f"{len(group.files)}/{n_subbands}"
        else:
            rows[gid] = _raw_row(group, n_subbands)
    ordered = [rows[g] for g in sorted(rows)]
    failures = list(summary["failures"])
    failed_groups = {f["group"] for f in failures if f["group"] is not None}
    totals = {
        "seen": len(ordered),
        "complete": sum(r["complete"] is True for r in ordered),
        "incomplete": sum(r["complete"] is False for r in ordered),
        **{key: sum(bool(r[key]) for r in ordered) for key in ("converted", "calibrated", "imaged", "photometry")},
        "failed": len(failed_groups & set(rows)),
        "failed_jobs": len(failures),
    }
    incomplete = [{"group": g.id, "problem": g.problem()} for g in on_disk.values() if not g.complete]
    return {
        "night": day.isoformat(),
        "totals": totals,
        "groups": ordered,
        "failures": failures,
        "incomplete": sorted(incomplete, key=lambda i: i["group"]),
    }
