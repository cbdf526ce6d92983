"""Which raw groups a rolling run plans: settled ones, in a window of recent nights.

Parse time, names plus one ``stat`` per file of the recent groups (no file is
opened). A group whose newest file was modified less than ``run.settle_s``
ago may still be being written by the correlator (or copied): it is neither
planned nor counted as incomplete, and the next run looks again.

The window is whole UTC nights: the newest group's date and the
``run.window_days - 1`` dates before it. Groups before the window stay known
(calibration candidates, mosaics whose inputs reach back), but the run
targets only the window's products, so the DAG stays the size of the window
however long the survey has run.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..raw import grouping
from ..raw.grouping import newest_mtime


@dataclass(frozen=True)
class RollingSelection:
    """The grouping without unsettled groups, and the window's start."""

    grouping: grouping.Grouping
    """The raw grouping with every unsettled group removed."""
    settling: tuple[str, ...]
    """Ids of the groups left out because a file is younger than the settle time."""
    window_start: dt.datetime | None
    """UTC start of the window (None: no group at all)."""

    def in_window(self, group_ids: Iterable[str]) -> list[str]:
        """The ids (of any group) whose start lies in the window, sorted."""
        if self.window_start is None:
            return []
        start = self.window_start.strftime("%Y-%m-%dT%H:%M:%S")
        return sorted(g for g in group_ids if g >= start)  # ids sort as times


def window_start(newest: dt.datetime | None, window_days: int) -> dt.datetime | None:
    """Midnight UTC (naive) of the first night of the window ending at ``newest``'s night."""
    if newest is None:
        return None
    first = newest.date() - dt.timedelta(days=window_days - 1)
    return dt.datetime.combine(first, dt.time())


def select(found: grouping.Grouping, raw_dir: str | os.PathLike, run_cfg: Mapping[str, Any],
           now: float | None = None) -> RollingSelection:
    """Drop unsettled groups from ``found`` and place the window (config ``run``).

    Only groups in the window (and after it) are ``stat``-ed: an older group
    whose file is rewritten is the operator's business (a replaced corrupt
    file inside the window is picked up by :mod:`.held`).
    """
    now = time.time() if now is None else now
    settle_s = float(run_cfg["settle_s"])
    groups = found.groups
    newest = max((g.start for g in groups), default=None)
    start = window_start(None if newest is None else newest.replace(tzinfo=None), int(run_cfg["window_days"]))
    settling = []
    if settle_s > 0 and start is not None:
        for g in groups:
            if g.start.replace(tzinfo=None) >= start and now - newest_mtime(raw_dir, g) < settle_s:
                settling.append(g.id)
    kept = [g for g in groups if g.id not in set(settling)]
    # The window follows the newest settled group, so a burst of unsettled files cannot move it.
    newest_kept = max((g.start for g in kept), default=None)
    start = window_start(None if newest_kept is None else newest_kept.replace(tzinfo=None),
                         int(run_cfg["window_days"]))
    return RollingSelection(replace(found, groups=kept), tuple(settling), start)
