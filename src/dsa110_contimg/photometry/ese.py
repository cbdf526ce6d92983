"""Extreme-scattering-event candidates: sustained fractional dips in a light curve.

An ESE dims a compact source by tens of per cent for weeks to months, often
with brightening at the dip's edges (Fiedler et al. 1987, Nature 326, 675;
Bannister et al. 2016, Science 351, 354). The detector looks for a window of
``min_duration_days`` over which the source stays well below its baseline:

1. Baseline ``F0``: the median flux of the epochs outside any dip found so far
   (two passes: all epochs, then without the candidate dips). Fluxes become
   fractions ``r = f / F0`` with errors ``k s / F0``, where
   ``k = max(1, 1.4826 MAD(d))`` of the normalised successive differences
   ``d_i = (f_(i+1) - f_i) / sqrt(s_i^2 + s_(i+1)^2)`` (:func:`error_scale`):
   a light curve that scatters from epoch to epoch more than its errors say
   (scintillation, calibration) is not trusted more than it deserves, while
   a slow dip does not inflate it.
2. Every window ``[t_i, t_i + min_duration_days]`` with at least
   ``min_points`` epochs spanning at least 70% of its length is in a dip when

   - its weighted mean ``r_w`` is at most ``1 - depth_min``  (depth),
   - at least 60% of its epochs are below ``1 - depth_min / 2`` (sustained:
     one or two outliers cannot make a dip), and
   - ``(1 - r_w) / sqrt(sigma_w^2 + sigma_F0^2) >= min_significance``
     (significance; ``sigma_w`` the error of ``r_w``, ``sigma_F0`` that of the
     baseline, 1.2533 x median error / sqrt(n): the error of a median).
3. Overlapping windows in a dip merge into one candidate: its start and end
   (first and last epoch below ``1 - depth_min / 2`` in its windows), depth (``1 - min r_w``: the deepest
   level sustained over a whole window), significance (the largest) and the
   number of epochs.

Presets (config ``variability.ese.preset``) trade completeness for purity:

==============  =========  ============  ============  ==========
preset          depth_min  duration (d)  significance  min_points
==============  =========  ============  ============  ==========
conservative    0.4        14            8             7
moderate        0.3        7             5             5
sensitive       0.2        3             4             3
==============  =========  ============  ============  ==========
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..stats import robust_rms


@dataclass(frozen=True)
class EseCriteria:
    """Thresholds of the dip detector."""

    depth_min: float
    """Minimum fractional depth of the window-averaged flux (0.3 = 30% below baseline)."""
    min_duration_days: float
    """Length of the window the dip must be sustained over (days)."""
    min_significance: float
    """Minimum significance of the window's deficit (sigma)."""
    min_points: int
    """Minimum epochs in a window."""
    min_baseline_points: int = 5
    """A light curve needs this many epochs outside the dip to have a baseline."""
    sustained_fraction: float = 0.6
    """Fraction of a window's epochs that must be below 1 - depth_min / 2."""
    min_coverage: float = 0.7
    """A window's epochs must span at least this fraction of its length."""


PRESETS: dict[str, EseCriteria] = {
    "conservative": EseCriteria(depth_min=0.4, min_duration_days=14.0, min_significance=8.0, min_points=7),
    "moderate": EseCriteria(depth_min=0.3, min_duration_days=7.0, min_significance=5.0, min_points=5),
    "sensitive": EseCriteria(depth_min=0.2, min_duration_days=3.0, min_significance=4.0, min_points=3),
}


def criteria_from_config(section: Mapping[str, Any]) -> tuple[str, EseCriteria]:
    """(preset name, criteria) from config ``variability.ese``: a preset, each threshold overridable."""
    preset = section.get("preset", "moderate")
    if preset not in PRESETS:
        raise ValueError(f"variability.ese.preset {preset!r} is not one of {sorted(PRESETS)}")
    overrides = {k: section[k] for k in ("depth_min", "min_duration_days", "min_significance", "min_points")
                 if section.get(k) is not None}
    return preset, replace(PRESETS[preset], **overrides)


@dataclass(frozen=True)
class Dip:
    """One candidate dip of one light curve."""

    start_mjd: float
    end_mjd: float
    depth: float
    significance: float
    n_points: int
    baseline_flux: float
    min_mjd: float  # time of the deepest window's centre


def _windows(t: np.ndarray, r: np.ndarray, w: np.ndarray, low: np.ndarray, c: EseCriteria):
    """Per window start i: end index j (exclusive), mean, its error, fraction low, usable mask."""
    n = t.size
    end = np.searchsorted(t, t + c.min_duration_days, side="right")
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cwr = np.concatenate([[0.0], np.cumsum(w * r)])
    cl = np.concatenate([[0], np.cumsum(low)])
    idx = np.arange(n)
    count = end - idx
    sw = cw[end] - cw[idx]
    mean = (cwr[end] - cwr[idx]) / sw
    err = 1.0 / np.sqrt(sw)
    frac = (cl[end] - cl[idx]) / count
    span = t[end - 1] - t
    usable = (count >= c.min_points) & (span >= c.min_coverage * c.min_duration_days)
    return end, mean, err, frac, usable


def error_scale(f, s) -> float:
    """k = max(1, 1.4826 MAD(d)), d_i = (f_(i+1) - f_i) / sqrt(s_i^2 + s_(i+1)^2): excess short-term scatter.

    Successive differences cancel anything slower than the sampling (a dip of
    weeks), so k measures only how much the errors understate the
    epoch-to-epoch scatter. Points in time order.
    """
    f, s = np.asarray(f, float), np.asarray(s, float)
    if f.size < 3:
        return 1.0
    d = np.diff(f) / np.sqrt(s[1:] ** 2 + s[:-1] ** 2)
    return max(1.0, robust_rms(d))


def find_dips(mjd, flux, err, criteria: EseCriteria) -> list[Dip]:
    """Candidate dips of one light curve (any order; non-finite points ignored). See the module docstring."""
    t = np.asarray(mjd, float)
    f = np.asarray(flux, float)
    s = np.asarray(err, float)
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(s) & (s > 0)
    t, f, s = t[good], f[good], s[good]
    if t.size < criteria.min_points + criteria.min_baseline_points:
        return []
    order = np.argsort(t, kind="stable")
    t, f, s = t[order], f[order], s[order]
    in_dip = np.zeros(t.size, bool)
    dips: list[Dip] = []
    k = error_scale(f, s)
    for _ in range(2):
        base = ~in_dip
        if base.sum() < criteria.min_baseline_points:
            return dips
        f0 = float(np.median(f[base]))
        if not f0 > 0:
            return []
        r = f / f0
        sr = s / f0 * k
        sig_f0 = 1.2533 * float(np.median(sr[base])) / np.sqrt(base.sum())
        low = r <= 1.0 - criteria.depth_min / 2
        if low.sum() < criteria.sustained_fraction * criteria.min_points:
            return []
        end, mean, merr, frac, usable = _windows(t, r, 1.0 / sr**2, low, criteria)
        signif = (1.0 - mean) / np.sqrt(merr**2 + sig_f0**2)
        hit = usable & (mean <= 1.0 - criteria.depth_min) & (frac >= criteria.sustained_fraction) & (
            signif >= criteria.min_significance)
        dips = []
        new_in = np.zeros(t.size, bool)
        i_hits = np.flatnonzero(hit)
        if i_hits.size:
            # merge windows [i, end_i) that overlap
            groups: list[list[int]] = [[int(i_hits[0])]]
            reach = end[i_hits[0]]
            for i in i_hits[1:]:
                if i < reach:
                    groups[-1].append(int(i))
                    reach = max(reach, end[i])
                else:
                    groups.append([int(i)])
                    reach = end[i]
            for g in groups:
                g = np.asarray(g)
                a, b = g[0], int(end[g].max())
                inside = np.flatnonzero(low[a:b])  # trim windows' edges that are not in the dip
                a, b = a + int(inside[0]), a + int(inside[-1]) + 1
                deepest = g[np.argmin(mean[g])]
                new_in[a:b] = True
                dips.append(Dip(
                    start_mjd=float(t[a]), end_mjd=float(t[b - 1]), depth=float(1.0 - mean[g].min()),
                    significance=float(signif[g].max()), n_points=int(b - a), baseline_flux=f0,
                    min_mjd=float(0.5 * (t[deepest] + t[end[deepest] - 1])),
                ))
        if np.array_equal(new_in, in_dip):
            break
        in_dip = new_in
    return dips


__all__ = ["Dip", "EseCriteria", "PRESETS", "criteria_from_config", "error_scale", "find_dips"]
