"""Mosaic QA pictures stay readable with a mismatched pair (a flux ratio of 120, an offset of a beam)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dsa110_contimg.mosaic import qa as mosaic_qa


def matches(n=40, seed=3, mismatch=True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cat_flux = np.geomspace(0.02, 2.0, n)
    ratio = rng.normal(0.98, 0.03, n)
    dra, ddec = rng.normal(0.3, 0.8, n), rng.normal(-0.2, 0.8, n)
    if mismatch:  # a bright detection matched to a faint catalogue source 25" away
        ratio[0], dra[0], ddec[0] = 120.0, 18.0, -17.0
    return pd.DataFrame({"cat_flux_jy": cat_flux, "flux_ratio": ratio, "dra_arcsec": dra, "ddec_arcsec": ddec,
                         "snr": cat_flux * ratio / 1e-3})


def qa_of(m: pd.DataFrame) -> dict:
    return {"flux_ratio": float(np.median(m.flux_ratio)), "median_ra_offset_arcsec": float(np.median(m.dra_arcsec)),
            "median_dec_offset_arcsec": float(np.median(m.ddec_arcsec)), "astrometry_offset_arcsec": 0.4}


def test_flux_ratio_panel_keeps_the_bulk_in_view_and_marks_the_mismatch():
    m = matches()
    ax = Figure().add_subplot()
    mosaic_qa.flux_ratio_panel(ax, m, qa_of(m))
    lo, hi = ax.get_ylim()
    assert 0.6 < lo < 0.9 and 1.1 < hi < 1.4  # 3% scatter: the plot spans about +-0.2, not 0..120
    bulk = m.flux_ratio.iloc[1:]
    assert ((bulk > lo) & (bulk < hi)).all()
    assert "1 off the plot" in ax.get_title()
    clean = matches(mismatch=False)
    ax = Figure().add_subplot()
    mosaic_qa.flux_ratio_panel(ax, clean, qa_of(clean))
    assert "off the plot" not in ax.get_title()


def test_astrometry_panel_keeps_the_bulk_in_view_and_marks_the_mismatch():
    m = matches()
    ax = Figure().add_subplot()
    mosaic_qa.astrometry_panel(ax, m, qa_of(m))
    lo, hi = ax.get_xlim()
    assert -8 < lo < -2 and 2 < hi < 8
    assert "1 off the plot" in ax.get_title()


def test_empty_matches_draw_without_error(tmp_path):
    empty = matches().iloc[:0]
    ax = Figure().add_subplot()
    mosaic_qa.flux_ratio_panel(ax, empty, {"flux_ratio": None})
    mosaic_qa.astrometry_panel(ax, empty, {})
    assert "n/a" in ax.get_title()


def test_robust_limits():
    lo, hi = mosaic_qa.robust_limits([1.0, 1.01, 0.99, 120.0], 1.0, floor=0.2)
    assert (lo, hi) == (0.8, 1.2)
    lo, hi = mosaic_qa.robust_limits(np.r_[np.linspace(0.5, 1.5, 21), 120.0], 1.0, floor=0.2)
    assert lo < 0.5 and hi > 1.5 and hi < 10
