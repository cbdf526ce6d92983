"""Parse-time calibration plan: which groups are calibrator transits, and which
calibrations each observation may use, nearest first.

A pure function of group ids (their start times), the pointing declination and
config (the calibrators are the VLA list under calibration.calibrator_* ; a
group holding several transits calibrates on the brightest in the beam), so the Snakefile can wire every job before anything runs. Whether a
solution passes QA is known only after solving, so each observation is given
its candidates in order of preference; rule apply_calibration takes the first
that passed (:func:`pick`), or stops with the reason none can be used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from astropy.time import Time

from dsa110_contimg.calibration import standards
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.transits import (
    CalInfo,
    Choice,
    GroupInfo,
    calibrator_transits,
    choose_calibration,
)

from .. import naming, telescope


@dataclass(frozen=True)
class CalibrationPlan:
    """Calibrator groups (id -> calibrator name) and each group's candidates."""

    calgroups: dict[str, str]
    candidates: dict[str, list[str]]
    problems: dict[str, str] = field(default_factory=dict)


def group_start_jd(group_ids: Iterable[str]) -> dict[str, float]:
    """Start JD of each group, from its id (its earliest file name time)."""
    ids = list(group_ids)
    if not ids:
        return {}
    jd = Time([naming.parse_timestamp(g) for g in ids]).jd
    return dict(zip(ids, np.atleast_1d(jd).tolist(), strict=True))


def plan_calibration(group_ids: Iterable[str], dec_deg: float, cfg: Mapping) -> CalibrationPlan:
    """The plan for ``group_ids`` pointed at ``dec_deg``, with ``cfg`` = config["calibration"]."""
    starts = group_start_jd(group_ids)
    if not starts:
        return CalibrationPlan({}, {})
    ids = sorted(starts, key=starts.get)
    start_jd = np.array([starts[g] for g in ids])
    span = telescope.OBSERVATION_S / 86400
    transits = calibrator_transits(start_jd[0], start_jd[-1] + span, dec_deg, cfg["dec_tolerance_deg"],
                                   catalogue=load_calibrators(cfg), min_apparent_jy=cfg["calibrator_min_apparent_jy"])
    calgroups: dict[str, str] = {}
    brightest: dict[str, float] = {}
    for row in transits.itertuples():
        i = np.searchsorted(start_jd, row.transit_jd, side="right") - 1
        if i >= 0 and row.transit_jd < start_jd[i] + span and row.apparent_jy > brightest.get(ids[i], -1.0):
            calgroups[ids[i]], brightest[ids[i]] = row.name, row.apparent_jy
    candidates, problems = {}, {}
    limit_days = cfg["max_separation_h"] / 24
    for g in ids:
        if cfg.get("pin"):
            candidates[g] = [cfg["pin"]]
            continue
        near = [c for c in calgroups if abs(starts[c] - starts[g]) <= limit_days]
        candidates[g] = sorted(near, key=lambda c: (abs(starts[c] - starts[g]), starts[c]))
        if not near:
            problems[g] = (
                f"no calibrator transit within {cfg['max_separation_h']} h of {g} at dec {dec_deg:.2f} "
                f"(calibrators within {cfg['dec_tolerance_deg']} deg of it: "
                f"{', '.join(sorted(set(calgroups.values()))) or 'none in this span'})"
            )
    return CalibrationPlan(calgroups, candidates, problems)


def flux_references(plan: CalibrationPlan, group_id: str, max_separation_h: float) -> list[str]:
    """The flux-standard transits of ``plan`` whose solutions the flux bootstrap of ``group_id`` may read.

    When a candidate of ``group_id`` is a secondary calibrator, rule
    apply_calibration bootstraps its flux from the passing flux-standard
    solution nearest in time (:mod:`.bootstrap`), reading its sidecar: those
    solutions of this run within ``max_separation_h`` of a secondary candidate
    (config calibration.bootstrap_max_separation_h) are its inputs, so the job
    waits for them; nearest first, the group's own candidates left out (they are
    inputs already). Solutions of earlier runs are read from the caltables
    folder as they are.
    """
    cands = plan.candidates.get(group_id, [])
    secondaries = [c for c in cands if c in plan.calgroups and not standards.is_standard(plan.calgroups[c])]
    if not secondaries:
        return []
    starts = group_start_jd(plan.calgroups)
    gap = {s: min(abs(starts[s] - starts[c]) * 24 for c in secondaries)
           for s, name in plan.calgroups.items() if standards.is_standard(name) and s not in cands}
    return sorted((s for s, h in gap.items() if h <= max_separation_h), key=lambda s: (gap[s], s))


def pick(group: str, dec_deg: float, candidates: Mapping[str, Mapping], cfg: Mapping) -> Choice:
    """Choose among solved candidates: ``candidates`` maps calgroup -> its sidecar qa.

    Uses :func:`transits.choose_calibration`, so the same rules (nearest that
    passed QA, within the window, same declination, pinned overrides) hold at
    run time as at parse time. Raises ``NoCalibrationError`` naming the group.
    """
    starts = group_start_jd([group, *candidates])
    target = GroupInfo(group, starts[group], dec_deg)
    cals = [
        CalInfo(c, starts[c], float(qa.get("dec_deg", dec_deg)), bool(qa.get("passed", False)))
        for c, qa in candidates.items()
    ]
    choice = choose_calibration(
        [target], cals, max_separation_h=cfg["max_separation_h"],
        warn_beyond_h=cfg["warn_beyond_h"], pinned=cfg.get("pin"),
    )
    return choice[group]
