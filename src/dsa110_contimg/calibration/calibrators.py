"""The calibrator catalogue shipped with the package: the VLA calibrator list.

``data/vla_calibrators_20cm.csv`` is the L-band (20 cm) part of the public VLA
calibrator list (1,034 sources: J2000 position, approximate 20 cm flux, the
A/B/C/D configuration quality codes P/S/W/X, uv limits), shipped verbatim.
:func:`vla_list` reads all of it (the simulator puts every source in the sky);
:func:`load_calibrators` keeps the ones usable at DSA-110's baselines (up to
~2.6 km in the core, between the VLA's C and D configurations): bright enough
and coded P (<3% amplitude closure errors) or S (3-10%) in the configurations
``calibration.calibrator_configurations``. The four flux standards are always
kept and carry their Perley-Butler 2017 flux (:mod:`.standards`); every other
flux is the list's approximate one, which calibration never trusts for the
flux scale (it is bootstrapped from a standard, :mod:`.fluxmon`).

The simulator draws its calibrators from the same list, so simulated
calibrators transit where real ones do.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from . import standards

COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "flux_standard")
"""Columns every consumer may rely on; spectral_index is NaN where unknown (not a standard)."""

VLA_LIST = "vla_calibrators_20cm.csv"


@cache
def _vla_list() -> pd.DataFrame:
    with resources.files("dsa110_contimg.data").joinpath(VLA_LIST).open() as f:
        raw = pd.read_csv(f, keep_default_na=False, dtype=str)
    needed = {"name", "alt_name", "ra_deg", "dec_deg", "flux_jy_20cm", "quality_C", "quality_D"}
    missing = needed - set(raw.columns)
    if missing:
        raise ValueError(f"{VLA_LIST} lacks columns {sorted(missing)}")
    flux = pd.to_numeric(raw["flux_jy_20cm"], errors="coerce")
    alt = raw["alt_name"].str.strip()
    name = np.where(alt.str.match(r"^3C\d"), alt, raw["name"])
    std_by_vla = standards.vla_names()
    std = raw["name"].map(std_by_vla).fillna("")
    flux_std = [float(standards.flux_density(s, 1.4e9)) if s else np.nan for s in std]
    alpha_std = [standards.spectral_index(s) if s else np.nan for s in std]
    table = pd.DataFrame(
        {
            "name": np.where(std != "", std, name),
            "ra_deg": raw["ra_deg"].astype(float),
            "dec_deg": raw["dec_deg"].astype(float),
            "flux_jy": np.where(std != "", flux_std, flux),
            "spectral_index": alpha_std,
            "flux_standard": np.where(std != "", "Perley-Butler 2017", ""),
            "vla_name": raw["name"],
            "flux_list_jy": flux,
        }
    )
    for cfg in "ABCD":
        table[f"quality_{cfg}"] = raw[f"quality_{cfg}"]
    table = table[table.flux_jy.notna()].reset_index(drop=True)
    if table["name"].duplicated().any():
        raise ValueError(f"{VLA_LIST}: duplicate names {sorted(table.name[table.name.duplicated()])}")
    return table


def vla_list() -> pd.DataFrame:
    """Every source of the VLA list with a 20 cm flux (a copy), columns :data:`COLUMNS` and more."""
    return _vla_list().copy()


def select(table: pd.DataFrame, min_flux_jy: float, quality_codes, configurations) -> pd.DataFrame:
    """Rows usable as calibrators: flux standards, and sources of at least ``min_flux_jy``
    whose quality code is one of ``quality_codes`` in every one of ``configurations``."""
    ok = table["flux_jy"] >= min_flux_jy
    for cfg in configurations:
        ok &= table[f"quality_{cfg}"].isin(list(quality_codes))
    ok |= table["flux_standard"] != ""
    return table[ok].reset_index(drop=True)


def load_calibrators(cfg: Mapping | None = None) -> pd.DataFrame:
    """The usable calibrators under ``cfg`` = config["calibration"] (None: the schema's defaults)."""
    if cfg is None:
        from .. import config

        cfg = config.validate_config({})["calibration"]
    return select(vla_list(), cfg["calibrator_min_flux_jy"], cfg["calibrator_quality_codes"],
                  cfg["calibrator_configurations"])


def near_declination(dec_deg: float, tolerance_deg: float, cfg: Mapping | None = None) -> pd.DataFrame:
    """Calibrators whose declination is within ``tolerance_deg`` of ``dec_deg``."""
    table = load_calibrators(cfg)
    return table[(table.dec_deg - dec_deg).abs() <= tolerance_deg].reset_index(drop=True)


def uncalibratable_declinations(cfg: Mapping | None = None, step_deg: float = 0.1,
                                dec_range=(-30.0, 90.0)) -> list[tuple[float, float]]:
    """Declination intervals (deg) with no usable calibrator within calibration.dec_tolerance_deg."""
    if cfg is None:
        from .. import config

        cfg = config.validate_config({})["calibration"]
    decs = np.round(np.arange(dec_range[0], dec_range[1] + step_deg / 2, step_deg), 6)
    cal_dec = load_calibrators(cfg)["dec_deg"].to_numpy()
    covered = (np.abs(decs[:, None] - cal_dec[None, :]) <= cfg["dec_tolerance_deg"]).any(axis=1)
    gaps, start = [], None
    for d, c in zip(decs, covered, strict=True):
        if not c and start is None:
            start = d
        if c and start is not None:
            gaps.append((float(start), float(d - step_deg)))
            start = None
    if start is not None:
        gaps.append((float(start), float(decs[-1])))
    return gaps
