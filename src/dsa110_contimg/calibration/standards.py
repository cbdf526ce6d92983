"""Flux-density scale: the Perley-Butler 2017 spectra of the VLA flux standards.

``log10(S / Jy) = sum_k a_k (log10(nu / GHz))^k`` with the coefficients CASA's
``setjy(standard='Perley-Butler 2017')`` uses (``data/flux_standards.csv``, the
2017.0 epoch of casadata's ``PerleyButler2017Coeffs`` table). Tabulated so the
simulator and the parse-time planning need no CASA; ``tests/test_standards.py``
checks every standard against ``setjy`` itself across the band.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

REFERENCE_FREQ_HZ = 1.4e9


@cache
def _table() -> pd.DataFrame:
    with resources.files("dsa110_contimg.data").joinpath("flux_standards.csv").open() as f:
        return pd.read_csv(f, comment="#").set_index("name")


def standard_names() -> list[str]:
    """Names of the flux standards (3C48, 3C138, 3C147, 3C286)."""
    return list(_table().index)


def vla_names() -> dict[str, str]:
    """VLA calibrator-list (J2000) name of each standard -> its 3C name."""
    return {row.vla_name: name for name, row in _table().iterrows()}


def is_standard(name: str) -> bool:
    """True when ``name`` (3C or VLA J name) is a Perley-Butler 2017 flux standard."""
    return name in _table().index or name in vla_names()


def flux_density(name: str, freq_hz) -> np.ndarray:
    """Stokes I flux density (Jy) of standard ``name`` at ``freq_hz`` (Perley-Butler 2017).

    Raises KeyError naming the source when it is not a standard.
    """
    name = vla_names().get(name, name)
    try:
        row = _table().loc[name]
    except KeyError:
        raise KeyError(f"{name} is not a Perley-Butler 2017 flux standard ({', '.join(standard_names())})") from None
    coeffs = row[[c for c in row.index if c.startswith("a")]].to_numpy(float)
    x = np.log10(np.asarray(freq_hz, float) / 1e9)
    return 10 ** np.polynomial.polynomial.polyval(x, coeffs)


def spectral_index(name: str, freq_hz: float = 1.4e9) -> float:
    """Local spectral index d ln S / d ln nu of standard ``name`` at ``freq_hz``."""
    f = np.array([freq_hz / 1.01, freq_hz * 1.01])
    s = flux_density(name, f)
    return float(np.log(s[1] / s[0]) / np.log(f[1] / f[0]))


def spectra(sky: pd.DataFrame, freq_hz: np.ndarray) -> np.ndarray:
    """Flux density (Jy) of every source of ``sky`` at ``freq_hz``, (Nsrc, Nfreq).

    ``sky`` has flux_jy (at 1.4 GHz), spectral_index and optionally
    flux_standard. A power law, except for flux standards (flux_standard set),
    whose spectrum is Perley-Butler 2017 scaled to their flux_jy at 1.4 GHz.
    """
    freq_hz = np.asarray(freq_hz, float)
    out = sky.flux_jy.to_numpy(float)[:, None] * (
        freq_hz[None, :] / REFERENCE_FREQ_HZ) ** sky.spectral_index.to_numpy(float)[:, None]
    if "flux_standard" in sky:
        std = sky["flux_standard"].fillna("").astype(str).to_numpy()
        for i in np.flatnonzero(std != ""):
            name = sky.name.iloc[i]
            out[i] = sky.flux_jy.iloc[i] * flux_density(name, freq_hz) / flux_density(name, REFERENCE_FREQ_HZ)
    return out
