"""Calibrator flux monitoring from the gain solutions.

Each solution scales the calibrator to its catalogue flux, so its gain
amplitudes absorb any error in that flux: with a stable system,
``S_true = S_catalogue x (|g_C| / |g_ref|)^2`` for a reference solution
``ref`` whose flux is right (what CASA's ``fluxscale`` does). References are
other passing solutions at the same declination (the gains depend on
pointing), flux standards (Perley-Butler 2017) preferred; a flux standard
itself is compared with other standards only. With no reference the flux is
not measured, and the table says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from dsa110_contimg.calibration.calibrators import load_calibrators

COLUMNS = [
    "calgroup", "calibrator", "transit_time", "dec_deg", "passed", "flux_expected_jy",
    "flux_measured_jy", "flux_ratio", "n_references", "alert", "note",
]


def _ratio(gains: Mapping[str, float], ref: Mapping[str, float]) -> float | None:
    """Median over shared antennas of (|g| / |g_ref|)^2."""
    common = [a for a in gains if a in ref and ref[a] > 0]
    if not common:
        return None
    return float(np.median([(gains[a] / ref[a]) ** 2 for a in common]))


def monitor(solutions: Iterable[Mapping], alert_fraction: float = 0.1, dec_tolerance_deg: float = 0.1) -> pd.DataFrame:
    """One row per solution: measured over catalogue flux and an alert flag.

    ``solutions`` are caltable sidecar records (``group`` and ``qa`` with
    calibrator, transit_time, dec_deg, passed, flux_expected_jy and
    gain_amplitudes).
    """
    standards = set(load_calibrators().query("flux_standard != ''")["name"])
    sols = [s for s in solutions if s.get("qa")]
    rows = []
    for s in sols:
        qa = s["qa"]
        row = dict(calgroup=s["group"], calibrator=qa["calibrator"], transit_time=qa.get("transit_time"),
                   dec_deg=qa.get("dec_deg"), passed=bool(qa.get("passed")),
                   flux_expected_jy=qa.get("flux_expected_jy"), flux_measured_jy=None, flux_ratio=None,
                   n_references=0, alert=False, note="")
        if not row["passed"]:
            row["note"] = f"failed QA: {qa.get('reason')}"
            rows.append(row)
            continue
        others = [o for o in sols if o is not s and o["qa"].get("passed")
                  and abs(o["qa"]["dec_deg"] - qa["dec_deg"]) <= dec_tolerance_deg]
        std_refs = [o for o in others if o["qa"]["calibrator"] in standards]
        refs = std_refs if (std_refs or qa["calibrator"] in standards) else others
        ratios = [r for r in (_ratio(qa["gain_amplitudes"], o["qa"]["gain_amplitudes"]) for o in refs) if r]
        if not ratios:
            row["note"] = ("flux standard: no other standard at this declination to compare"
                           if qa["calibrator"] in standards else "no other passing calibration at this declination")
            rows.append(row)
            continue
        ratio = float(np.median(ratios))
        row.update(flux_ratio=ratio, flux_measured_jy=ratio * qa["flux_expected_jy"], n_references=len(ratios),
                   alert=abs(ratio - 1) > alert_fraction,
                   note=f"{100 * (ratio - 1):+.1f}% against {len(ratios)} reference(s)")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
