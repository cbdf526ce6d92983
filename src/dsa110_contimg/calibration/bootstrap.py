"""Secondary calibrators' flux scale, bootstrapped from a flux standard, at any declination.

A secondary calibrator's model flux is the VLA list's approximate one (or that
fitted against its field on the reference catalogue's scale), so its gains
carry the model's error: with ``|g_sol|^2 = |G|^2 S_true / S_model`` every
target it calibrates comes out ``S_model / S_true`` too bright or faint. A
flux-standard solution (Perley-Butler 2017) fixes it, as CASA ``fluxscale``
does: ``r = S_true / S_model = (|g_secondary| / |g_standard|)^2`` (the system
gain ``|G|`` cancels), and the secondary's gains divided by ``sqrt(r)`` carry
the standard's scale.

Across declinations. Where no standard transits near the pointing (dec 60:
none of 3C48, 3C138, 3C147, 3C286 is within 1.5 deg), the reference is the
passing flux-standard solution nearest in time at any declination
(:func:`choose_standard`), since what limits the transfer is the drift of the
system gain between the two transits, not the pointing. The ratio needs no
primary-beam correction: each solution's model already holds its calibrator
(and field) through the beam at its own offset from its own pointing, so both
gains are per Jy on axis. Nor a system-temperature one: DSA-110's
visibilities are correlator units, not normalised by the system power. No
elevation gain curve is applied (none is known for the 4.65 m dishes; the
simulator has none): that is where one would enter.

The transfer (:func:`transfer`) uses every antenna and polarisation as an
independent sample of ``2 ln(|g_sec| / |g_std|)`` (each drifts on its own):
the mean after clipping at 3 robust sigma, its standard error the stated
uncertainty. It is used when that uncertainty is at most the stage's limit
(config ``calibration.bootstrap_max_error``); otherwise the model's own flux
stands, with its uncertainty: the field fit's, or :data:`LIST_FLUX_UNCERTAINTY`
for the VLA list's. A drift common to all antennas (e.g. the electronics'
temperature) does not average out and is not in the uncertainty.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import casa_env, provenance
from .caltables import BANDPASS, GAINS
from .fluxmon import _ratio

LIST_FLUX_UNCERTAINTY = 0.10
"""Fractional uncertainty stated for a VLA-list flux (the list calls its fluxes approximate)."""


def choose_standard(candidates: Mapping[str, Mapping], dec_deg: float, dec_tolerance_deg: float = 0.1,
                    transit_jd: float | None = None, max_separation_h: float | None = None):
    """The flux-standard solution to bootstrap from: (calgroup, qa) or None.

    ``candidates`` maps calgroup -> its sidecar qa, in order of preference.
    Without ``transit_jd``: the first passing standard at ``dec_deg``. With
    it: the passing standard, at any declination, whose transit is nearest to
    ``transit_jd`` and at most ``max_separation_h`` away (None: any).
    """
    passing = {c: qa for c, qa in candidates.items() if qa.get("passed") and qa.get("flux_standard")}
    if transit_jd is None:
        for calgroup, qa in passing.items():
            if abs(float(qa.get("dec_deg", 1e9)) - dec_deg) <= dec_tolerance_deg:
                return calgroup, qa
        return None
    limit = np.inf if max_separation_h is None else max_separation_h / 24
    timed = [(abs(float(qa["transit_jd"]) - transit_jd), c) for c, qa in passing.items() if "transit_jd" in qa]
    timed = [(dt, c) for dt, c in timed if dt <= limit]
    if not timed:
        return None
    _, best = min(timed)
    return best, passing[best]


def _samples(secondary_qa: Mapping, standard_qa: Mapping) -> np.ndarray:
    """``(|g_sec| / |g_std|)^2`` per shared antenna and polarisation (per antenna without per-pol records)."""
    a, b = secondary_qa.get("gain_amplitudes_pol"), standard_qa.get("gain_amplitudes_pol")
    if a and b:
        out = [(x / y) ** 2 for ant in a if ant in b for x, y in zip(a[ant], b[ant], strict=False)
               if x is not None and y is not None and x > 0 and y > 0]
    else:
        a, b = secondary_qa.get("gain_amplitudes", {}), standard_qa.get("gain_amplitudes", {})
        out = [(a[ant] / b[ant]) ** 2 for ant in a if ant in b and a[ant] > 0 and b[ant] > 0]
    return np.asarray(out, float)


def transfer(secondary_qa: Mapping, standard_qa: Mapping, clip_sigma: float = 3.0) -> dict | None:
    """``S_true / S_model`` of the secondary from the two solutions' gain amplitudes, with its
    uncertainty: {ratio, ratio_err, n_samples, scatter} (None: fewer than 3 shared samples)."""
    r = _samples(secondary_qa, standard_qa)
    if r.size < 3:
        return None
    x = np.log(r)
    med = np.median(x)
    sigma = 1.4826 * np.median(np.abs(x - med))
    keep = np.abs(x - med) <= clip_sigma * sigma if sigma > 0 else np.ones(x.size, bool)
    x = x[keep]
    mean = float(np.mean(x))
    scatter = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    ratio = float(np.exp(mean))
    return {"ratio": ratio, "ratio_err": ratio * scatter / np.sqrt(x.size), "n_samples": int(x.size),
            "n_clipped": int((~keep).sum()), "scatter": scatter}


def flux_ratio(secondary_qa: Mapping, standard_qa: Mapping) -> float | None:
    """``S_true / S_model`` of the secondary, from the two solutions' gain amplitudes (None: no common antenna)."""
    return _ratio(secondary_qa.get("gain_amplitudes", {}), standard_qa.get("gain_amplitudes", {}))


def archived_solutions(caltables_dir: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """calgroup -> qa of every caltable sidecar in ``caltables_dir`` (solutions of earlier runs,
    other pointings included); unreadable sidecars are skipped."""
    out = {}
    for path in sorted(Path(caltables_dir).glob("*.json")):
        calgroup = path.name[: -len(".json")]
        if calgroup in exclude or not (path.parent / calgroup).is_dir():
            continue
        try:
            record = provenance.read_sidecar(path)
        except (provenance.SidecarError, OSError, ValueError):
            continue
        if record.get("kind") == "caltable" and isinstance(record.get("qa"), dict):
            out[calgroup] = record["qa"]
    return out


def scaled_caltable(caldir: Path, ratio: float, out_dir: Path) -> Path:
    """A copy of ``caldir``'s tables in ``out_dir`` with the gains divided by ``sqrt(ratio)``."""
    if not np.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"{caldir}: flux ratio {ratio} cannot scale a calibration")
    out_dir.mkdir(parents=True, exist_ok=True)
    for table in (BANDPASS, GAINS):
        shutil.rmtree(out_dir / table, ignore_errors=True)
        shutil.copytree(caldir / table, out_dir / table)
    tb = casa_env.casatools().table()
    tb.open(str(out_dir / GAINS), nomodify=False)
    try:
        tb.putcol("CPARAM", tb.getcol("CPARAM") / np.sqrt(ratio))
    finally:
        tb.close()
    return out_dir
