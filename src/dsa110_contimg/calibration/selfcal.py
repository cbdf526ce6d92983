"""Self-calibration of a target observation against the sky model of its field.

The transferred calibration is hours old and the gains have drifted (a few
per cent and degrees per hour). Starting from the calibrated data, each round
predicts the field (:func:`.skymodel.catalogue_sources`: the reference
catalogue through the drifting beam) into MODEL_DATA, solves gains against it
(phase-only by default, amplitude and phase optionally, over ``solint``;
amplitudes normalised to a mean of 1, so selfcal corrects antennas relative to
each other and never moves the flux scale the standards set),
applies them, and keeps the result only if it is better:

* the residual rms (data - model, cross-correlations, unflagged) must fall by
  at least ``min_improvement`` (a fraction), and
* the model's flux scale, the least-squares factor ``s`` fitting the model to
  the data, must stay within ``max_flux_change_sigma`` (its error from the
  residual rms) or ``max_flux_change`` (a fraction: removing phase errors
  restores the coherence they cost, which raises ``s`` slightly) of its value
  before the round, whichever is larger, so selfcal never trades the flux
  scale for a lower rms.

A rejected round stops the loop and leaves the data as they were; every round
is recorded (rms before and after, flux scale, decision and reason).
:func:`residual_stats` and :func:`decide` are pure functions of arrays and
numbers; :func:`selfcal` is the CASA driver, editing only the MS it is given
(the calling job's own output).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import casa_env
from . import skymodel


@dataclass(frozen=True)
class SelfcalOptions:
    """How to self-calibrate (config calibration.selfcal)."""

    mode: str
    """"p" (phase only) or "ap" (amplitude and phase)."""
    solint: str
    """CASA solution interval: "inf" (the whole observation), "int", or e.g. "60s"."""
    max_rounds: int
    """At most this many rounds."""
    min_improvement: float
    """Accept a round only if the residual rms falls by at least this fraction."""
    max_flux_change_sigma: float
    """Reject a round that moves the model's flux scale by more than this many sigma ..."""
    max_flux_change: float
    """... and more than this fraction (phase errors decorrelate: correcting them raises it a little)."""
    min_snr: float
    """CASA gaincal minsnr."""
    refant: tuple[str, ...] = ()
    """Reference antennas in order of preference (the one with most data if none)."""

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SelfcalOptions:
        """From config["calibration"]."""
        sc = cfg["selfcal"]
        return cls(sc["mode"], sc["solint"], sc["max_rounds"], sc["min_improvement"], sc["max_flux_change_sigma"],
                   sc["max_flux_change"], sc["min_snr"], tuple(cfg["refant"]))


@dataclass(frozen=True)
class Stats:
    """Residual rms (Jy, per real/imaginary part) and the model's fitted flux scale with its error."""

    rms: float
    scale: float
    scale_err: float


def residual_stats(data: np.ndarray, model: np.ndarray, flags: np.ndarray) -> Stats:
    """Statistics of ``data - model`` over unflagged samples (any matching shapes).

    rms = sqrt(mean |D - M|^2 / 2); scale = Re(sum D conj(M)) / sum |M|^2, the
    least-squares factor of the model; scale_err = rms / sqrt(sum |M|^2).
    """
    ok = ~flags
    d, m = data[ok], model[ok]
    if d.size == 0:
        raise ValueError("every visibility is flagged")
    power = float(np.sum(np.abs(m) ** 2))
    rms = float(np.sqrt(np.mean(np.abs(d - m) ** 2) / 2))
    scale = float(np.real(np.sum(d * np.conj(m))) / power) if power > 0 else float("nan")
    return Stats(rms, scale, rms / np.sqrt(power) if power > 0 else float("inf"))


def decide(before: Stats, after: Stats, opts: SelfcalOptions) -> tuple[bool, str]:
    """Accept a round (True, reason) only when the rms fell enough and the flux scale held."""
    if not np.isfinite(after.rms) or after.rms > before.rms * (1 - opts.min_improvement):
        return False, f"rms {after.rms:.4g} not below {1 - opts.min_improvement:g} x {before.rms:.4g}"
    allowed = max(opts.max_flux_change_sigma * np.hypot(before.scale_err, after.scale_err),
                  opts.max_flux_change * abs(before.scale))
    if not np.isfinite(after.scale) or abs(after.scale - before.scale) > allowed:
        return False, (f"model flux scale moved {before.scale:.4f} -> {after.scale:.4f} (more than "
                       f"{opts.max_flux_change_sigma:g} sigma and {100 * opts.max_flux_change:g}%: {allowed:.4f})")
    return True, f"rms {before.rms:.4g} -> {after.rms:.4g}, flux scale {after.scale:.4f} +- {after.scale_err:.4f}"


def _column_stats(ms: str, column: str) -> Stats:
    """:func:`residual_stats` of ``column`` against MODEL_DATA, cross-correlations only, in row chunks."""
    tb = casa_env.casatools().table()
    tb.open(ms)
    try:
        rows = tb.nrows()
        n_chan = tb.getcell("FLAG", 0).shape[1]
        chunk = max(1, int(2e7 // (2 * n_chan)))
        sums = np.zeros(4)  # sum |D-M|^2, n, Re sum D M*, sum |M|^2
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cross = tb.getcol("ANTENNA1", start, n) != tb.getcol("ANTENNA2", start, n)
            d = tb.getcol(column, start, n)[..., cross]
            m = tb.getcol("MODEL_DATA", start, n)[..., cross]
            ok = ~tb.getcol("FLAG", start, n)[..., cross]
            d, m = d[ok], m[ok]
            sums += [np.sum(np.abs(d - m) ** 2), d.size, np.real(np.sum(d * np.conj(m))), np.sum(np.abs(m) ** 2)]
    finally:
        tb.close()
    if sums[1] == 0:
        raise ValueError(f"{ms}: every cross-correlation is flagged")
    rms = float(np.sqrt(sums[0] / sums[1] / 2))
    return Stats(rms, float(sums[2] / sums[3]) if sums[3] > 0 else float("nan"),
                 rms / np.sqrt(sums[3]) if sums[3] > 0 else float("inf"))


def _copy_column(ms: str, src: str, dst: str) -> None:
    tb = casa_env.casatools().table()
    tb.open(ms, nomodify=False)
    try:
        rows = tb.nrows()
        chunk = max(1, int(2e7 // (2 * tb.getcell("FLAG", 0).shape[1])))
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            tb.putcol(dst, tb.getcol(src, start, n), start, n)
    finally:
        tb.close()


def selfcal(ms: str, model: pd.DataFrame, pointing_dec_app: float, opts: SelfcalOptions, log=None) -> dict:
    """Self-calibrate ``ms`` (its DATA: the transferred calibration applied) in place against ``model``.

    Returns the record for the sidecar: rounds (rms before/after, flux
    scale, accepted, reason), the final rms and the model's size. DATA holds
    the last accepted round's corrected data; MODEL_DATA and CORRECTED_DATA
    are removed again.
    """
    say = log.info if log else print
    record: dict[str, Any] = {"options": asdict(opts), "n_components": len(model), "rounds": []}
    if model.empty:
        record.update(status="skipped", reason="no catalogue source in the beam above the sky-model cut")
        say(f"selfcal skipped: {record['reason']}")
        return record
    from .caltables import antenna_data, choose_refant

    cta = casa_env.casatasks()
    cta.clearcal(vis=ms, addmodel=True)  # CORRECTED_DATA = DATA (and MODEL_DATA = 1: overwritten next)
    skymodel.write_model(ms, model, pointing_dec_app)
    before = _column_stats(ms, "DATA")
    record["rms_start"] = before.rms
    names, counts = antenna_data(ms)
    refant = choose_refant(names, counts, opts.refant)
    table = Path(f"{ms.rstrip('/')}.selfcal.G")
    try:
        for k in range(1, opts.max_rounds + 1):
            shutil.rmtree(table, ignore_errors=True)
            cta.gaincal(vis=ms, caltable=str(table), solint=opts.solint, calmode=opts.mode, refant=refant,
                        minsnr=opts.min_snr, gaintype="G", solnorm=opts.mode == "ap")
            if not table.exists():
                record["rounds"].append({"round": k, "accepted": False, "reason": "gaincal produced no solutions"})
                break
            cta.applycal(vis=ms, gaintable=[str(table)], calwt=False, flagbackup=False, applymode="calonly")
            after = _column_stats(ms, "CORRECTED_DATA")
            ok, reason = decide(before, after, opts)
            record["rounds"].append({"round": k, "rms_before": before.rms, "rms_after": after.rms,
                                     "flux_scale_before": before.scale, "flux_scale_after": after.scale,
                                     "flux_scale_err": after.scale_err, "accepted": ok, "reason": reason})
            say(f"selfcal round {k}: {'accepted' if ok else 'rejected'}: {reason}")
            if not ok:
                break
            _copy_column(ms, "CORRECTED_DATA", "DATA")
            before = after
    finally:
        shutil.rmtree(table, ignore_errors=True)
        tb = casa_env.casatools().table()
        tb.open(ms, nomodify=False)
        drop = [c for c in ("MODEL_DATA", "CORRECTED_DATA") if c in tb.colnames()]
        if drop:
            tb.removecols(drop)
        tb.close()
    accepted = sum(r["accepted"] for r in record["rounds"])
    record.update(status="ok", rounds_accepted=accepted, rms_end=before.rms,
                  rms_ratio=before.rms / record["rms_start"])
    return record
