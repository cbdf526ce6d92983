"""Stages of rules ``solve_calibration``, ``apply_calibration`` and ``calibrator_flux``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import provenance
from ..calibration import fluxmon
from ..calibration import plan as calplan
from ..calibration.caltables import SolveOptions, apply, solve
from ..calibration.transits import NoCalibrationError
from ..config import options
from .common import stage_run


def solve_calibration(ms: str, caltable: str, calgroup: str, config: Mapping[str, Any], log: str | None = None) -> dict:
    """Rule ``solve_calibration``: the calibrator group's MS -> bandpass and gain tables.

    A solution that fails QA is still written, with ``passed: false`` and the
    reason in its sidecar, so observations fall back to another calibration
    and the failure stays on record; it is never used unless pinned.
    """
    cfg = config["calibration"]
    with stage_run("solve_calibration", config, {"calgroup": calgroup}, log) as run:
        with run.output(caltable) as tmp:
            tmp.mkdir()
            qa = solve(ms, tmp, options(SolveOptions, cfg), cfg["dec_tolerance_deg"],
                      log=run.logger)
        from astropy.time import Time

        window_d = cfg["max_separation_h"] / 24
        qa["valid_start"] = Time(qa["transit_jd"] - window_d, format="jd").isot
        qa["valid_end"] = Time(qa["transit_jd"] + window_d, format="jd").isot
        if qa["passed"]:
            run.logger.info("%s on %s: QA passed (median SNR %.0f, %.1f%% flagged)", caltable, qa["calibrator"],
                            qa["snr_median"], 100 * qa["flagged_fraction"])
        else:
            run.logger.warning("%s on %s FAILED QA: %s; observations will use another calibration",
                               caltable, qa["calibrator"], qa["reason"])
        run.publish(caltable, kind="caltable", inputs=[ms], qa=qa, status="ok" if qa["passed"] else "failed_qa")
    return qa


def apply_calibration(
    ms: str,
    caltables: Sequence[str],
    calibrated: str,
    group: str,
    config: Mapping[str, Any],
    problem: str | None = None,
    log: str | None = None,
) -> dict:
    """Rule ``apply_calibration``: MS + the nearest passing calibration -> calibrated MS.

    ``caltables`` are the candidate calibrations in order of preference (from
    the parse-time plan); ``problem`` is the plan's reason when there are none.
    """
    cfg = config["calibration"]
    with stage_run("apply_calibration", config, {"group": group}, log) as run:
        if not caltables:
            raise NoCalibrationError(problem or f"{group}: no calibration candidates")
        dec = float(provenance.read_sidecar(provenance.sidecar_path(ms))["qa"]["pointing_dec_deg"])
        candidates = {}
        for path in caltables:
            record = provenance.read_sidecar(provenance.sidecar_path(path))
            candidates[Path(path).name] = record["qa"]
            run.logger.info("candidate %s: %s", Path(path).name, record["qa"].get("reason"))
        choice = calplan.pick(group, dec, candidates, cfg)
        if choice.warning:
            run.logger.warning(choice.warning)
        caldir = next(Path(p) for p in caltables if Path(p).name == choice.calgroup)
        run.logger.info("applying %s (%.2f h away)", caldir, choice.separation_h)
        with run.output(calibrated) as tmp:
            qa = apply(ms, caldir, str(tmp), width=cfg["average_channels"], log=run.logger)
        qa.update(caltable=choice.calgroup, separation_h=choice.separation_h, warning=choice.warning)
        run.publish(calibrated, kind="calibrated", inputs=[ms, str(caldir)], qa=qa)
    return qa


def calibrator_flux(caltables: Sequence[str], table: str, config: Mapping[str, Any], log: str | None = None):
    """Rule ``calibrator_flux``: every solution's calibrator flux against its catalogue flux."""
    with stage_run("calibrator_flux", config, {}, log) as run:
        records = [provenance.read_sidecar(provenance.sidecar_path(c)) for c in caltables]
        result = fluxmon.monitor(records, config["calibration"]["flux_alert_fraction"])
        for row in result.itertuples():
            (run.logger.warning if row.alert else run.logger.info)("%s %s: %s", row.calgroup, row.calibrator,
                                                                    row.note)
        with run.output(table) as tmp:
            result.to_csv(tmp, index=False)
        alerts = result[result.alert]
        run.publish(table, kind="calflux", inputs=caltables, qa={
            "n_solutions": len(result), "n_measured": int(result.flux_ratio.notna().sum()), "n_alerts": len(alerts),
            "alerts": [f"{r.calibrator} ({r.calgroup}): {r.note}" for r in alerts.itertuples()]})
    return result
