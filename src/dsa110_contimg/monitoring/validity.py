"""Which calibration covers a time: ``contimg calibration at TIME``.

From the product database's calibration tables (current ones): each
solution's validity window and whether it passed QA. At a time, the
covering solutions are listed nearest transit first; the pipeline uses the
nearest one that passed (the rule of :mod:`..calibration.plan`), so that one
is marked ``chosen``. ``timeline`` is every solution in order with the gaps
and overlaps between consecutive windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..db.registry import utc_naive


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else utc_naive(t).isoformat(timespec="seconds")


def solutions(database: Any) -> list[dict[str, Any]]:
    """Every current calibration table: calgroup, calibrator, transit, window, passed, reason; by transit."""
    rows = database.list_products("caltable", status="current")
    out = [
        {"calgroup": r["group_id"], "calibrator": r["calibrator"], "transit_time": _iso(r["transit_time"]),
         "valid_start": _iso(r["valid_start"]), "valid_end": _iso(r["valid_end"]),
         "passed": r["cal_status"] == "active", "reason": r["reason"], "path": r["path"]}
        for r in rows
    ]  # fmt: skip
    return sorted(out, key=lambda s: (s["transit_time"] or "", s["calgroup"] or ""))


def at(sols: list[Mapping[str, Any]], when: dt.datetime) -> dict[str, Any]:
    """The solutions whose window covers ``when``, nearest transit first, and the one the pipeline uses."""
    t = utc_naive(when)
    covering = []
    for s in sols:
        if s["valid_start"] and s["valid_end"] and s["valid_start"] <= t.isoformat() <= s["valid_end"]:
            transit = dt.datetime.fromisoformat(s["transit_time"])
            covering.append({**s, "offset_h": round((t - transit).total_seconds() / 3600, 3)})
    covering.sort(key=lambda s: (abs(s["offset_h"]), s["transit_time"]))
    chosen = next((s for s in covering if s["passed"]), None)
    for s in covering:
        s["chosen"] = s is chosen
    return {"time": t.isoformat(timespec="seconds"), "covering": covering, "n_overlapping": len(covering),
            "chosen": None if chosen is None else chosen["calgroup"]}


def timeline(sols: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every solution by transit, with the gap (h, > 0) or overlap (h, < 0) to the next passing window."""
    out = []
    passing = [s for s in sols if s["passed"] and s["valid_start"] and s["valid_end"]]
    for s in sols:
        row = dict(s)
        later = [p for p in passing if p["valid_start"] > s["valid_start"]] if s in passing else []
        if later:
            nxt = dt.datetime.fromisoformat(later[0]["valid_start"])
            row["to_next_h"] = round((nxt - dt.datetime.fromisoformat(s["valid_end"])).total_seconds() / 3600, 3)
        else:
            row["to_next_h"] = None
        out.append(row)
    return out


def render(answer: Mapping[str, Any]) -> str:
    lines = [f"calibration at {answer['time']}: "
             + (f"{answer['chosen']} (of {answer['n_overlapping']} covering)" if answer["chosen"]
                else f"none usable ({answer['n_overlapping']} covering, none passed QA)")]
    for s in answer["covering"]:
        mark = "*" if s["chosen"] else " "
        qa = "passed" if s["passed"] else f"failed QA: {s['reason']}"
        lines.append(f" {mark} {s['calgroup']}  {s['calibrator']}  transit {s['transit_time']} ({s['offset_h']:+.2f} h)  "
                     f"valid {s['valid_start']} .. {s['valid_end']}  {qa}")
    return "\n".join(lines)
