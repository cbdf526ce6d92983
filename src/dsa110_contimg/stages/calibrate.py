"""Stages of rules ``solve_calibration``, ``apply_calibration`` and ``calibrator_flux``."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import provenance
from ..calibration import bootstrap, flagging, fluxmon, skymodel, subtract
from ..calibration import caltables as calibration
from ..calibration import plan as calplan
from ..calibration.calibrators import load_calibrators
from ..calibration.selfcal import SelfcalOptions, selfcal
from ..calibration.skymodel import SkyModelOptions, catalogue_sources
from ..calibration.transits import NoCalibrationError
from ..config import options
from ..photometry.catalogue import CatalogueOptions, load_catalogue
from .common import stage_run


def _solve_options(config: Mapping[str, Any]) -> calibration.SolveOptions:
    cfg = config["calibration"]
    return options(calibration.SolveOptions, cfg, skymodel=SkyModelOptions.from_config(cfg),
                   sefd_jy=config["imaging"]["sefd_jy"])


def _reference_catalogue(config: Mapping[str, Any], logger):
    """The reference catalogue (config section catalogue) for the sky model, or None without a path."""
    opts = CatalogueOptions.from_config(config)
    if not opts.path:
        logger.warning("no reference catalogue (catalogue.path): the sky model is the calibrator alone, "
                       "so its field biases the gains")
        return None
    return load_catalogue(opts)


def solve_calibration(ms: str, caltable: str, calgroup: str, config: Mapping[str, Any], log: str | None = None) -> dict:
    """Rule ``solve_calibration``: the calibrator group's MS -> bandpass and gain tables.

    The model is the calibrator (Perley-Butler 2017 for the flux standards) plus
    the reference catalogue's sources in the beam. A solution that fails QA is
    still written, with ``passed: false`` and the reason in its sidecar, so
    observations fall back to another calibration and the failure stays on
    record; it is never used unless pinned.
    """
    cfg = config["calibration"]
    with stage_run("solve_calibration", config, {"calgroup": calgroup}, log) as run:
        with run.output(caltable) as tmp:
            tmp.mkdir()
            qa = calibration.solve(ms, tmp, _solve_options(config), cfg["dec_tolerance_deg"], log=run.logger,
                                   catalogue=_reference_catalogue(config, run.logger),
                                   calibrators=load_calibrators(cfg))
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
        inputs = [ms] + ([config["catalogue"]["path"]] if config["catalogue"]["path"] else [])
        run.publish(caltable, kind="caltable", inputs=inputs, qa=qa, status="ok" if qa["passed"] else "failed_qa")
    return qa


def apply_calibration(
    ms: str,
    caltables: Sequence[str],
    calibrated: str,
    group: str,
    config: Mapping[str, Any],
    problem: str | None = None,
    log: str | None = None,
    flux_references: Sequence[str] = (),
) -> dict:
    """Rule ``apply_calibration``: MS + the nearest passing calibration (flux scale
    bootstrapped from a standard when its calibrator is a secondary) -> calibrated
    MS, then self-calibrated against the field's sky model (config calibration.selfcal), then its
    bright sources subtracted (config calibration.subtract).

    ``caltables`` are the candidate calibrations in order of preference (from
    the parse-time plan); ``problem`` is the plan's reason when there are none;
    ``flux_references`` the flux-standard solutions of the run a secondary's flux
    bootstrap may use (the plan's, so the job waits for them).
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
        plan = _averaging_plan(ms, config)
        run.logger.info("averaging %d channels x %d integrations: %.2f%% more peak loss at %.2f deg, %.2f%% in all "
                        "(%s); error %.2f%% (budget %.2g%%; the data's own channels and integrations lose %.2f%% "
                        "there)", plan.channels, plan.integrations, 100 * plan.extra_loss, plan.radius_deg,
                        100 * plan.total_loss,
                        f"the image corrects the {plan.correction} loss" if plan.correction != "none" else "not corrected",
                        100 * plan.residual, 100 * plan.budget, 100 * plan.native_loss)
        scaled = Path(f"{calibrated}.fluxscaled")
        try:
            references = {Path(p).name: provenance.read_sidecar(provenance.sidecar_path(p))["qa"]
                          for p in flux_references}
            use, flux_record = _bootstrapped(caldir, candidates, choice.calgroup, dec, scaled, cfg, run.logger,
                                             references)
            with run.output(calibrated) as tmp:
                qa = calibration.apply(ms, use, str(tmp), width=plan.channels, timebin=plan.integrations,
                                       log=run.logger)
                # RFI flags of the target itself (on this job's own output), before self-calibration.
                qa.update(_flag_rfi(str(tmp), config, run.logger))
                qa["selfcal"] = _selfcal(str(tmp), config, run.logger)
                qa["subtract"] = _subtract(str(tmp), config, run.logger, plan)
        finally:
            shutil.rmtree(scaled, ignore_errors=True)
        qa.update(caltable=choice.calgroup, separation_h=choice.separation_h, warning=choice.warning,
                  flux_bootstrap=flux_record, averaging=plan.record())
        run.publish(calibrated, kind="calibrated", inputs=[ms, str(caldir)], qa=qa)
    return qa


def _flag_rfi(ms: str, config: Mapping[str, Any], logger) -> dict:
    """Flag RFI in this job's own calibrated MS (config calibration.target_rfi), on the residual of the
    field's sky model (the one self-calibration uses) when ``residual`` is set and a catalogue is configured."""
    cfg = config["calibration"]
    opts = flagging.FlagOptions(**cfg["target_rfi"])
    if not opts.residual or opts.method == "none":
        return flagging.flag_rfi(ms, opts, log=logger)
    field = _field(ms, config, "RFI flagged on the data, not the residual: no reference catalogue (catalogue.path) "
                   "for the field's sky model, so bright sources may be flagged with the RFI", logger)
    if field is None:
        return flagging.flag_rfi(ms, opts, log=logger)
    catalogue, info = field
    model = catalogue_sources(catalogue, info.times_jd, info.pointing_dec_app, SkyModelOptions.from_config(cfg))
    return flagging.flag_rfi(ms, opts, log=logger, model=model, pointing_dec_app=info.pointing_dec_app)


def _selfcal(ms: str, config: Mapping[str, Any], logger) -> dict:
    """Self-calibrate this job's own calibrated MS against its field's sky model (config calibration.selfcal)."""
    cfg = config["calibration"]
    if not cfg["selfcal"]["enabled"]:
        return {"status": "off"}
    field = _field(ms, config, "selfcal skipped: no reference catalogue (catalogue.path) for the field's sky model",
                   logger)
    if field is None:
        return {"status": "skipped", "reason": "no catalogue.path"}
    catalogue, info = field
    model = catalogue_sources(catalogue, info.times_jd, info.pointing_dec_app, SkyModelOptions.from_config(cfg))
    return selfcal(ms, model, info.pointing_dec_app, SelfcalOptions.from_config(cfg), log=logger)


def _subtract(ms: str, config: Mapping[str, Any], logger, plan) -> dict:
    """Subtract the bright sources of the field from this job's own MS (config calibration.subtract),
    predicted with the smearing of the averaging ``plan`` (continuous boxes when the image corrects the
    total smearing, as real correlator data need; averaged point samples otherwise, as the simulator's)."""
    opts = subtract.SubtractOptions.from_config(config)
    if not opts.enabled:
        return {"status": "off"}
    field = _field(ms, config, "bright-source subtraction skipped: no reference catalogue (catalogue.path)", logger)
    if field is None:
        return {"status": "skipped", "reason": "no catalogue.path"}
    catalogue, info = field
    sources = subtract.choose(catalogue, info.times_jd, info.pointing_dec_app, opts)
    averaging = skymodel.averaging_of(ms, plan.channels, plan.integrations,
                                      continuous=config["imaging"]["smearing_correction"] == "total")
    return subtract.subtract(ms, sources, info.pointing_dec_app, opts, log=logger, averaging=averaging)


def _field(ms: str, config: Mapping[str, Any], skipped: str, logger):
    """(reference catalogue, MS info) for a step that models the field, or None (``skipped`` logged)
    when no catalogue is configured."""
    catalogue = CatalogueOptions.from_config(config)
    if not catalogue.path:
        logger.warning(skipped)
        return None
    return load_catalogue(catalogue), calibration.read_ms_info(ms)


def _bootstrapped(caldir: Path, candidates: dict, chosen: str, dec: float, scaled: Path, cfg: Mapping[str, Any],
                  logger, references: Mapping[str, Mapping] | None = None):
    """The tables to apply and the flux-scale record (:mod:`..calibration.bootstrap`).

    A secondary's gains are rescaled to a passing flux-standard solution: the
    first at this declination among the candidates, else the one whose transit
    is nearest in time, at any declination, among the run's flux-standard
    solutions (``references``, declared inputs) and every solution in the
    caltables folder (earlier runs and pointings included), at most
    ``calibration.bootstrap_max_separation_h`` away; used when the transfer's
    uncertainty is at most ``bootstrap_max_error``. Otherwise the model's own
    flux stands (fitted against the field, or the VLA list's), with its
    uncertainty in the record.
    """
    qa = candidates[chosen]
    if qa.get("flux_standard", True):
        return caldir, {"calibrator": qa.get("calibrator"), "source": "Perley-Butler 2017"}
    found = bootstrap.choose_standard(candidates, dec)
    if found is None and "transit_jd" in qa:
        archive = bootstrap.archived_solutions(caldir.parent) | dict(references or {}) | candidates
        found = bootstrap.choose_standard(archive, dec, transit_jd=float(qa["transit_jd"]),
                                          max_separation_h=cfg["bootstrap_max_separation_h"])
    moved = bootstrap.transfer(qa, found[1]) if found else None
    if moved is None or moved["ratio_err"] > cfg["bootstrap_max_error"]:
        fit = qa.get("flux_fit") or {}
        own = ({"source": "reference catalogue (flux fitted against the field)", "flux_uncertainty": fit["ratio_err"]}
               if fit.get("used") else
               {"source": "VLA list (not bootstrapped)", "flux_uncertainty": bootstrap.LIST_FLUX_UNCERTAINTY})
        if found is None:
            why = f"no passing flux-standard solution within {cfg['bootstrap_max_separation_h']} h"
        elif moved is None:
            why = f"no antenna shared with {found[0]}"
        else:
            why = (f"the transfer from {found[0]} ({found[1].get('calibrator')}) is uncertain to "
                   f"{100 * moved['ratio_err']:.1f}% (limit {100 * cfg['bootstrap_max_error']:.1f}%)")
        logger.warning("%s: secondary calibrator %s not bootstrapped (%s): its flux scale is the %s's, +- %.0f%%",
                       chosen, qa.get("calibrator"), why, own["source"], 100 * own["flux_uncertainty"])
        return caldir, {"calibrator": qa.get("calibrator"), **own, "reason": why}
    std = found[1]
    separation_h = abs(float(std.get("transit_jd", qa.get("transit_jd", 0.0))) - float(qa.get("transit_jd", 0.0))) * 24
    logger.info("%s: %s bootstrapped from %s (%s, dec %.2f, %.1f h away): flux %.3f +- %.3f x the model's",
                chosen, qa.get("calibrator"), found[0], std.get("calibrator"), float(std.get("dec_deg", np.nan)),
                separation_h, moved["ratio"], moved["ratio_err"])
    use = bootstrap.scaled_caltable(caldir, moved["ratio"], scaled)
    return use, {"calibrator": qa.get("calibrator"), "source": "bootstrapped", "standard": std.get("calibrator"),
                 "standard_calgroup": found[0], "standard_dec_deg": std.get("dec_deg"),
                 "separation_h": separation_h, "flux_ratio": moved["ratio"], "flux_uncertainty": moved["ratio_err"],
                 "n_samples": moved["n_samples"],
                 "flux_jy": float(qa.get("flux_expected_jy", np.nan)) * moved["ratio"]}


def _averaging_plan(ms: str, config: Mapping[str, Any]):
    """Channels and integrations to average (the config's, or the most within the smearing budget)."""
    from ..imaging import averaging

    cfg = config["calibration"]
    meta = calibration.averaging_inputs(ms)
    return averaging.plan_for_observation(**meta, imaging=dict(config["imaging"]), budget=cfg["smearing_budget"],
                                          channels=cfg["average_channels"], integrations=cfg["average_integrations"],
                                          model_error=cfg["smearing_model_error"])


def calibrator_flux(caltables: Sequence[str], table: str, config: Mapping[str, Any], log: str | None = None,
                    left_out: Mapping[str, str] | None = None):
    """Rule ``calibrator_flux``: every solution's calibrator flux against its catalogue flux.

    ``left_out`` maps calibrator transits the workflow did not wait for (a
    failed solve held back) to why: logged and listed in the sidecar.
    """
    with stage_run("calibrator_flux", config, {}, log, left_out=left_out) as run:
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
            "alerts": [f"{r.calibrator} ({r.calgroup}): {r.note}" for r in alerts.itertuples()],
            "n_left_out": len(run.left_out)})
    return result
