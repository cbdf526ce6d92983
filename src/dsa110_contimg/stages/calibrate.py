"""Stages of rules ``solve_calibration`` and ``apply_calibration``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsa110_contimg.calibration import caltables as calibration
from dsa110_contimg.calibration import fluxmon
from dsa110_contimg.calibration import plan as calplan
from dsa110_contimg.calibration.transits import NoCalibrationError

from .. import provenance
from ..db import Database
from .common import logged


def _solve_options(cfg: Mapping[str, Any]) -> calibration.SolveOptions:
    return calibration.SolveOptions(
        refant=tuple(cfg["refant"]),
        flag_rfi=cfg["flag_rfi"],
        qa_min_snr=cfg["qa_min_snr"],
        qa_max_flagged=cfg["qa_max_flagged"],
    )


def solve_calibration(ms: str, caltable: str, calgroup: str, config: Mapping[str, Any], log: str | None = None) -> dict:
    """Rule ``solve_calibration``: the calibrator group's MS -> bandpass and gain tables.

    A solution that fails QA is still written, with ``passed: false`` and the
    reason in its sidecar, so observations fall back to another calibration
    and the failure stays on record; it is never used unless pinned.
    """
    cfg = config["calibration"]
    with logged(log, "solve_calibration", calgroup, config, {"calgroup": calgroup}) as logger:
        t0 = time.perf_counter()
        with provenance.atomic_output(caltable) as tmp:
            tmp.mkdir()
            qa = calibration.solve(ms, tmp, _solve_options(cfg), cfg["dec_tolerance_deg"], log=logger)
        window_d = cfg["max_separation_h"] / 24
        from astropy.time import Time

        qa["valid_start"] = Time(qa["transit_jd"] - window_d, format="jd").isot
        qa["valid_end"] = Time(qa["transit_jd"] + window_d, format="jd").isot
        wall = time.perf_counter() - t0
        if qa["passed"]:
            logger.info("%s on %s: QA passed (median SNR %.0f, %.1f%% flagged)", caltable, qa["calibrator"],
                        qa["snr_median"], 100 * qa["flagged_fraction"])
        else:
            logger.warning("%s on %s FAILED QA: %s; observations will use another calibration",
                           caltable, qa["calibrator"], qa["reason"])
        provenance.write_sidecar(caltable, kind="caltable", group=calgroup, inputs=[ms], config=dict(config),
                                 qa=qa, timings={"wall_s": wall}, status="ok" if qa["passed"] else "failed_qa")
        with Database.from_config(config) as db:
            db.register_product(caltable)
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
    with logged(log, "apply_calibration", group, config) as logger:
        if not caltables:
            raise NoCalibrationError(problem or f"{group}: no calibration candidates")
        ms_qa = provenance.read_sidecar(provenance.sidecar_path(ms))["qa"]
        dec = float(ms_qa["pointing_dec_deg"])
        candidates = {}
        for path in caltables:
            record = provenance.read_sidecar(provenance.sidecar_path(path))
            candidates[Path(path).name] = record["qa"]
            logger.info("candidate %s: %s", Path(path).name, record["qa"].get("reason"))
        choice = calplan.pick(group, dec, candidates, cfg)
        if choice.warning:
            logger.warning(choice.warning)
        caldir = next(Path(p) for p in caltables if Path(p).name == choice.calgroup)
        logger.info("applying %s (%.2f h away)", caldir, choice.separation_h)
        t0 = time.perf_counter()
        with provenance.atomic_output(calibrated) as tmp:
            qa = calibration.apply(ms, caldir, str(tmp), width=cfg["average_channels"], log=logger)
        qa.update(caltable=choice.calgroup, separation_h=choice.separation_h, warning=choice.warning)
        provenance.write_sidecar(calibrated, kind="calibrated", group=group, inputs=[ms, str(caldir)],
                                 config=dict(config), qa=qa, timings={"wall_s": time.perf_counter() - t0})
        with Database.from_config(config) as db:
            db.register_product(calibrated)
    return qa


def calibrator_flux(caltables: Sequence[str], table: str, config: Mapping[str, Any], log: str | None = None,
                    left_out: Mapping[str, str] | None = None):
    """Rule ``calibrator_flux``: every solution's calibrator flux against its catalogue flux.

    ``left_out`` maps calibrator groups the workflow did not wait for (a failed
    solve held back) to why: logged and listed in the sidecar's ``left_out``.
    """
    left_out = dict(sorted((left_out or {}).items()))
    with logged(log, "calibrator_flux", "all", config, {}) as logger:
        for group, why in left_out.items():
            logger.warning("left out %s: %s", group, why)
        records = [provenance.read_sidecar(provenance.sidecar_path(c)) for c in caltables]
        result = fluxmon.monitor(records, config["calibration"]["flux_alert_fraction"])
        for row in result.itertuples():
            level = logger.warning if row.alert else logger.info
            level("%s %s: %s", row.calgroup, row.calibrator, row.note)
        with provenance.atomic_output(table) as tmp:
            result.to_csv(tmp, index=False)
        alerts = result[result.alert]
        provenance.write_sidecar(
            table, kind="calflux", inputs=list(caltables), config=dict(config),
            qa={"n_solutions": len(result), "n_measured": int(result.flux_ratio.notna().sum()),
                "n_alerts": len(alerts),
                "alerts": [f"{r.calibrator} ({r.calgroup}): {r.note}" for r in alerts.itertuples()],
                "n_left_out": len(left_out)},
            extra={"left_out": [{"group": g, "reason": w} for g, w in left_out.items()]},
        )
        with Database.from_config(config) as db:
            db.register_product(table)
    return result
