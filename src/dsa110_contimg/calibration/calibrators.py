"""The calibrator catalogue shipped with the package.

The simulator draws its calibrators from the same table, so simulated
calibrators transit where real ones do.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "flux_standard")


def load_calibrators() -> pd.DataFrame:
    """The catalogue as a DataFrame with the columns in :data:`COLUMNS`."""
    with resources.files("dsa110_contimg.data").joinpath("calibrators.csv").open() as f:
        table = pd.read_csv(f, comment="#", keep_default_na=False)
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"calibrators.csv lacks columns {sorted(missing)}")
    return table


def near_declination(dec_deg: float, tolerance_deg: float) -> pd.DataFrame:
    """Calibrators whose declination is within ``tolerance_deg`` of ``dec_deg``."""
    table = load_calibrators()
    return table[(table.dec_deg - dec_deg).abs() <= tolerance_deg].reset_index(drop=True)
