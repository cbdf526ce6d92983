"""Quality of one image: noise, peak, dynamic range, beam, detections, and a grade.

Measured on the 2-D FITS products of :mod:`dsa110_contimg.imaging.imager` (pure
numpy/scipy/astropy):

* ``rms_jy``: robust rms of the residual image, 1.4826 x the median absolute
  deviation, over the pixels where the primary beam is at least the cut-off
  (the area the corrected image covers). Sources and their sidelobes barely
  move a median, so this is the noise.
* ``peak_jy`` / ``min_jy``: extremes of the restored image (not beam-corrected)
  in that area; ``dynamic_range`` = peak / rms.
* ``beam_*``: the restoring beam from the header (arcsec, deg).
* ``n_sources_5sigma``: islands (8-connected) of the restored image above
  5 x rms in that area.
* ``thermal_rms_jy``: the radiometer-equation noise for the data and the
  imaging weights (:func:`dsa110_contimg.imaging.imager.expected_noise`);
  ``rms_over_thermal`` their ratio.

Grade (thresholds in :class:`GradeThresholds`, overridable from the config's
``imaging.grade``):

* **bad** when the noise is more than ``bad_rms_ratio`` (3) times thermal
  (calibration errors, RFI or a failed deconvolution spread flux over the
  image), or when the deepest negative is both below -``bad_negative_ratio``
  (0.5) x the peak and deeper than 10 sigma (strong negative artefacts);
* **marginal** when the noise exceeds ``marginal_rms_ratio`` (1.5) x thermal,
  the deepest negative is below -``marginal_negative_ratio`` (0.2) x the peak
  and deeper than 10 sigma, or the dynamic range is under ``min_dynamic_range``
  (10: nothing clearly detected, so the image cannot vouch for itself);
* **good** otherwise.

Also here: :func:`fit_point_source`, a fit of the restoring beam to a point
source at a given position (flux and position), used by the tests and
available to photometry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from dsa110_contimg.imaging.imager import beam_inverse_covariance

from ..stats import robust_rms


@dataclass(frozen=True)
class GradeThresholds:
    """Limits of the good / marginal / bad grade (see the module docstring)."""

    marginal_rms_ratio: float = 1.5
    bad_rms_ratio: float = 3.0
    marginal_negative_ratio: float = 0.2
    bad_negative_ratio: float = 0.5
    min_dynamic_range: float = 10.0
    negative_min_sigma: float = 10.0

    @classmethod
    def from_mapping(cls, values: dict | None) -> GradeThresholds:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})


def count_islands(image: np.ndarray, threshold: float, region: np.ndarray | None = None) -> int:
    """Number of 8-connected islands of pixels above ``threshold`` (within ``region``)."""
    above = np.nan_to_num(image, nan=-np.inf) > threshold
    if region is not None:
        above &= region
    _, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    return int(n)


def grade(rms_over_thermal: float, peak: float, minimum: float, rms: float,
          thresholds: GradeThresholds = GradeThresholds()) -> tuple[str, list[str]]:
    """``(grade, reasons)`` for the measured figures (reasons empty when good)."""
    th = thresholds
    if not all(np.isfinite(x) for x in (rms_over_thermal, peak, minimum, rms)) or rms <= 0:
        return "bad", ["image statistics are not finite"]
    bad, marginal = [], []
    if rms_over_thermal > th.bad_rms_ratio:
        bad.append(f"rms is {rms_over_thermal:.2f} x thermal (> {th.bad_rms_ratio})")
    elif rms_over_thermal > th.marginal_rms_ratio:
        marginal.append(f"rms is {rms_over_thermal:.2f} x thermal (> {th.marginal_rms_ratio})")
    neg = -minimum
    if neg > th.negative_min_sigma * rms and peak > 0:
        ratio = neg / peak
        if ratio > th.bad_negative_ratio:
            bad.append(f"deepest negative is {ratio:.2f} of the peak (> {th.bad_negative_ratio})")
        elif ratio > th.marginal_negative_ratio:
            marginal.append(f"deepest negative is {ratio:.2f} of the peak (> {th.marginal_negative_ratio})")
    if peak / rms < th.min_dynamic_range:
        marginal.append(f"dynamic range {peak / rms:.1f} (< {th.min_dynamic_range}): nothing clearly detected")
    if bad:
        return "bad", bad + marginal
    if marginal:
        return "marginal", marginal
    return "good", []


def measure(image: np.ndarray, residual: np.ndarray, pb: np.ndarray, header: dict, pb_cutoff: float,
            thermal_rms: float, thresholds: GradeThresholds = GradeThresholds()) -> dict[str, Any]:
    """The QA figures of one image (see the module docstring)."""
    region = np.isfinite(pb) & (pb >= pb_cutoff) & np.isfinite(image)
    if not region.any():
        raise ValueError(f"no pixel has primary beam >= {pb_cutoff}")
    rms = robust_rms(residual[region])
    vals = image[region]
    peak, minimum = float(vals.max()), float(vals.min())
    ratio = rms / thermal_rms if thermal_rms > 0 else float("nan")
    g, reasons = grade(ratio, peak, minimum, rms, thresholds)
    n5 = count_islands(image, 5 * rms, region) if np.isfinite(rms) and rms > 0 else 0
    return {
        "rms_jy": rms,
        "peak_jy": peak,
        "min_jy": minimum,
        "dynamic_range": peak / rms if rms > 0 else float("nan"),
        "beam_major_arcsec": float(header.get("BMAJ", np.nan)) * 3600,
        "beam_minor_arcsec": float(header.get("BMIN", np.nan)) * 3600,
        "beam_pa_deg": float(header.get("BPA", np.nan)),
        "n_sources_5sigma": n5,
        "thermal_rms_jy": thermal_rms,
        "rms_over_thermal": ratio,
        "grade": g,
        "grade_reasons": reasons,
        "pb_cutoff": pb_cutoff,
        "area_fraction": float(region.mean()),
    }


# ------------------------------------------------------ point-source fitting


@dataclass(frozen=True)
class PointSourceFit:
    flux_jy: float
    """Integrated flux density of the fitted Gaussian (Jy)."""
    peak_jy: float
    """Its peak (Jy/beam)."""
    ra_deg: float
    dec_deg: float
    x: float
    y: float
    offset_arcsec: float
    """Distance of the fitted position from the position asked for."""
    size_ratio: float
    """Fitted area / restoring-beam area (1 for an ideal point source)."""


def fit_point_source(data: np.ndarray, wcs, ra_deg: float, dec_deg: float, beam: tuple[float, float, float],
                     box_beams: float = 1.0, free_shape: bool = True) -> PointSourceFit:
    """Fit an elliptical Gaussian to a point source near (``ra_deg``, ``dec_deg``).

    ``beam`` is (BMAJ, BMIN, BPA) in degrees as in the header. The fit uses the
    pixels within ``box_beams`` major axes of the position, weighted towards the
    core. With ``free_shape`` the Gaussian's size and orientation are free
    (starting at the restoring beam) and the flux is the integrated one,
    peak x fitted area / beam area: CLEAN puts the components of a source that
    lies between pixels on several pixels, which broadens the restored source
    and lowers its peak by a few per cent while the integrated flux stays
    right. Without it the shape is the restoring beam and flux = peak.
    """
    x0, y0 = wcs.all_world2pix([[ra_deg, dec_deg]], 0)[0]
    inv = beam_inverse_covariance(wcs, x0, y0, beam)
    cov_beam = np.linalg.inv(inv)
    half_pix = box_beams * beam[0] / np.sqrt(np.abs(np.linalg.det(wcs.celestial.pixel_scale_matrix)))
    r = max(2, int(np.ceil(half_pix)))
    ix, iy = int(round(x0)), int(round(y0))
    ys, xs = np.mgrid[iy - r: iy + r + 1, ix - r: ix + r + 1]
    inside = (ys >= 0) & (ys < data.shape[0]) & (xs >= 0) & (xs < data.shape[1])
    ys, xs = ys[inside], xs[inside]
    vals = data[ys, xs].astype(float)
    good = np.isfinite(vals)
    if good.sum() < 8:
        raise ValueError(f"no valid pixels around RA {ra_deg:.4f}, Dec {dec_deg:.4f}")
    ys, xs, vals = ys[good], xs[good], vals[good]
    k = np.argmax(vals)  # start from the brightest pixel near the position
    # Shape parameters: the Cholesky factor of the inverse covariance, relative to the beam's.
    chol0 = np.linalg.cholesky(inv)
    dx0, dy0 = xs - xs[k], ys - ys[k]
    core = np.exp(-0.25 * (inv[0, 0] * dx0 * dx0 + 2 * inv[0, 1] * dx0 * dy0 + inv[1, 1] * dy0 * dy0))

    def inverse_cov(p):
        if not free_shape:
            return inv
        c = np.array([[chol0[0, 0] * np.exp(p[3]), 0.0], [chol0[1, 0] + p[5], chol0[1, 1] * np.exp(p[4])]])
        return c @ c.T

    def residual(p):
        m = inverse_cov(p)
        dx, dy = xs - p[1], ys - p[2]
        q = m[0, 0] * dx * dx + 2 * m[0, 1] * dx * dy + m[1, 1] * dy * dy
        return (p[0] * np.exp(-0.5 * q) - vals) * core

    p0 = [vals[k], xs[k], ys[k]] + ([0.0, 0.0, 0.0] if free_shape else [])
    sol = optimize.least_squares(residual, p0, method="lm")
    amp, xf, yf = sol.x[:3]
    ratio = float(np.sqrt(np.linalg.det(np.linalg.inv(inverse_cov(sol.x))) / np.linalg.det(cov_beam)))
    ra_f, dec_f = wcs.all_pix2world([[xf, yf]], 0)[0]
    cosd = np.cos(np.radians(dec_deg))
    off = 3600 * np.hypot(((ra_f - ra_deg + 180) % 360 - 180) * cosd, dec_f - dec_deg)
    return PointSourceFit(float(amp * ratio), float(amp), float(ra_f), float(dec_f), float(xf), float(yf),
                          float(off), ratio)
