"""What the telescope sees now: LST, the calibrator in the beam, the next transits.

``contimg transits`` with no time range. "In the beam now" means within half
the time the sky takes to drift through the primary beam's FWHM at the top of
the band (about 6 min at dec +30): the window in which an observation holds
the calibrator near the beam centre.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from .. import beam
from ..calibration import transits

SIDEREAL_S = 86164.0905
TOP_OF_BAND_HZ = 1.4986e9


def beam_crossing_s(dec_deg: float) -> float:
    """Seconds the sky takes to drift through the primary beam's FWHM (top of the band) at ``dec_deg``."""
    fwhm_deg = math.degrees(beam.fwhm_rad(TOP_OF_BAND_HZ))
    return fwhm_deg / (360.0 * math.cos(math.radians(dec_deg))) * SIDEREAL_S


def now_view(now: dt.datetime, dec_deg: float, tolerance_deg: float, n_next: int = 5, **choice: Any) -> dict[str, Any]:
    """LST at ``now`` (UTC), the calibrators in the beam, and the next ``n_next`` transits (within 3 days).

    ``choice``: ``catalogue`` and ``min_apparent_jy`` of
    :func:`..calibration.transits.calibrator_transits` (the configured calibrators).
    """
    now = now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)
    jd = now.timestamp() / 86400.0 + 2440587.5
    lst_h = float(np.degrees(transits._planning_lst(np.array([jd]))[0]) / 15.0)
    half = beam_crossing_s(dec_deg) / 2
    table = transits.calibrator_transits(now - dt.timedelta(seconds=half), now + dt.timedelta(days=3), dec_deg,
                                         tolerance_deg, **choice)
    rows = []
    for r in table.itertuples():
        offset_s = (r.transit_jd - jd) * 86400.0
        rows.append({"name": r.name, "transit_utc": r.transit_utc[:19], "in_minutes": round(offset_s / 60, 1),
                     "dec_deg": r.dec_deg, "separation_deg": round(r.separation_deg, 3), "flux_jy": r.flux_jy})
    in_beam = [r for r in rows if abs(r["in_minutes"]) * 60 <= half]
    upcoming = [r for r in rows if r["in_minutes"] > 0][:n_next]
    return {"now_utc": now.strftime("%Y-%m-%dT%H:%M:%S"), "lst_hours": lst_h, "dec_deg": dec_deg,
            "tolerance_deg": tolerance_deg, "in_beam_window_minutes": round(half / 60, 1),
            "in_beam": in_beam, "next": upcoming}


def render(view: dict[str, Any]) -> str:
    lst = view["lst_hours"]
    h, m = int(lst), (lst - int(lst)) * 60
    lines = [f"now {view['now_utc']} UTC, LST {h:02d}h{m:04.1f}m ({lst:.4f} h); pointing dec {view['dec_deg']:+.2f} "
             f"(calibrators within {view['tolerance_deg']:g} deg)"]
    if view["in_beam"]:
        for r in view["in_beam"]:
            when = "transits in" if r["in_minutes"] >= 0 else "transited"
            lines.append(f"in the beam now: {r['name']} ({r['flux_jy']:g} Jy), {when} {abs(r['in_minutes']):.1f} min "
                         f"at {r['transit_utc']}")
    else:
        lines.append(f"in the beam now: no calibrator (within +-{view['in_beam_window_minutes']} min of transit)")
    if view["next"]:
        lines.append("next transits:")
        lines += [f"  {r['transit_utc']}  in {r['in_minutes'] / 60:5.2f} h  {r['name']:<12} {r['flux_jy']:6.2f} Jy  "
                  f"dec {r['dec_deg']:+.3f} ({r['separation_deg']:.2f} deg off)" for r in view["next"]]
    else:
        lines.append("next transits: none within 3 days at this declination")
    return "\n".join(lines)
