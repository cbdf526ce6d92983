"""Secondary calibrators' flux scale, bootstrapped from a flux standard.

A secondary calibrator's model flux is the VLA list's approximate one, so its
gains carry the list's error: with ``|g_sol|^2 = |G|^2 S_true / S_model``
every target it calibrates comes out ``S_model / S_true`` too bright or faint.
A flux-standard solution at the same declination (Perley-Butler 2017) fixes
it, as CASA ``fluxscale`` does: ``r = S_true / S_model`` is the median over
antennas of ``(|g_secondary| / |g_standard|)^2`` (:func:`.fluxmon._ratio`),
and the secondary's gains divided by ``sqrt(r)`` carry the standard's scale.
This holds while the system gain is stable between the two transits (the
random walk of each antenna averages out in the median over antennas).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import casa_env
from .caltables import BANDPASS, GAINS
from .fluxmon import _ratio


def choose_standard(candidates: Mapping[str, Mapping], dec_deg: float, dec_tolerance_deg: float = 0.1):
    """The first (most preferred) passing flux-standard solution at ``dec_deg``: (calgroup, qa) or None.

    ``candidates`` maps calgroup -> its sidecar qa, in order of preference.
    """
    for calgroup, qa in candidates.items():
        if qa.get("passed") and qa.get("flux_standard") and abs(float(qa.get("dec_deg", 1e9)) - dec_deg) <= dec_tolerance_deg:
            return calgroup, qa
    return None


def flux_ratio(secondary_qa: Mapping, standard_qa: Mapping) -> float | None:
    """``S_true / S_model`` of the secondary, from the two solutions' gain amplitudes (None: no common antenna)."""
    return _ratio(secondary_qa.get("gain_amplitudes", {}), standard_qa.get("gain_amplitudes", {}))


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
