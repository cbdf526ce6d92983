"""The primary beam of a DSA-110 drift-scan image, and correction for it.

The dishes point at the meridian and the sky drifts through the beam: during
one ~309 s observation a source moves ~1.1 deg in RA through a beam of FWHM
~2.7 deg. Every integration t sees the sky through the Airy pattern of the
4.65 m dish (:func:`dsa110_contimg.beam.airy_power`) centred on that
integration's pointing, hour angle 0 at the pointing declination, and every
channel f through its own pattern. An image made from all integrations and
channels (multi-frequency synthesis, one static-sky model) therefore shows a
source at position p with the apparent flux

    S_app(p) = sum_tf W_tf S_f A(theta_t(p), f) / sum_tf W_tf,

where W_tf is the total imaging weight of the visibilities of integration t
and channel f. The effective primary beam of the image is the same average of
the beam alone,

    B(p) = sum_tf W_tf A(theta_t(p), f) / sum_tf W_tf,

so ``S_app / B`` is the weighted band average of the source's spectrum,
S_f weighted by W_tf A_tf; for DSA-110's 13% bandwidth this differs from the
plain band average by far less than 1%.

The pointing of integration t is the apparent position (RA = apparent LST(t),
Dec = pointing declination), transformed to ICRS at t; the image's pixels are
ICRS too, so theta_t(p) is an ICRS angular distance. The pointing declination
is recovered from the MS itself: its single field is the meridian at the
observation's mid time in ICRS, so its apparent declination at mid time is the
pointing declination.

Pure numpy/astropy: no CASA here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import map_coordinates

from .. import beam, geometry


@dataclass(frozen=True)
class DriftPointing:
    """Where the dish pointed at each integration, and the weight of each (integration, channel)."""

    jd: np.ndarray
    """Integration mid times (JD, UTC), shape (T,)."""
    ra_rad: np.ndarray
    """ICRS RA of each integration's pointing, shape (T,)."""
    dec_rad: np.ndarray
    """ICRS Dec of each integration's pointing, shape (T,)."""
    freq_hz: np.ndarray
    """Channel centres, shape (F,)."""
    weights: np.ndarray
    """Imaging weight of each (integration, channel), shape (T, F); any non-negative scale."""
    dec_app_rad: float
    """The pointing declination (apparent)."""


def pointing_declination(field_ra_rad: float, field_dec_rad: float, mid_jd: float) -> float:
    """Apparent declination of the MS's field (the meridian at mid time, ICRS) at ``mid_jd``."""
    _, dec = geometry.icrs_to_apparent(mid_jd, field_ra_rad, field_dec_rad)
    return float(dec)


def drift_pointings(jd: np.ndarray, dec_app_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (RA, Dec) of hour angle 0 at apparent declination ``dec_app_rad`` at each ``jd``."""
    jd = np.atleast_1d(np.asarray(jd, dtype=float))
    lst = geometry.lst(jd)
    ra, dec = geometry.apparent_to_icrs(jd, lst, np.full(jd.shape, dec_app_rad))
    return np.asarray(ra, float), np.asarray(dec, float)


def make_pointing(jd, freq_hz, weights, dec_app_rad: float) -> DriftPointing:
    """A :class:`DriftPointing` from integration times, channels and their (T, F) weights."""
    jd = np.atleast_1d(np.asarray(jd, float))
    freq_hz = np.atleast_1d(np.asarray(freq_hz, float))
    weights = np.asarray(weights, float).reshape(jd.size, freq_hz.size)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("primary-beam weights must be finite, non-negative and not all zero")
    ra, dec = drift_pointings(jd, dec_app_rad)
    return DriftPointing(jd, ra, dec, freq_hz, weights, float(dec_app_rad))


def band_averaged_profile(theta_rad: np.ndarray, freq_hz: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_f w_f A(theta, f) / sum_f w_f for every theta (1-D arrays)."""
    w = np.asarray(weights, float)
    keep = w > 0
    a = beam.airy_power(np.asarray(theta_rad)[:, None], np.asarray(freq_hz)[None, keep])
    return a @ w[keep] / w[keep].sum()


def _unit(ra, dec):
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def effective_beam(ra_rad, dec_rad, pointing: DriftPointing, n_theta: int = 1024) -> np.ndarray:
    """Drift- and band-averaged power beam B at ICRS positions (any shape, radians).

    For each integration the band-averaged Airy profile is tabulated on a fine
    grid of angle and interpolated (cubic, 1024 points out to the farthest
    position: errors < 1e-5 of the peak); integrations are then averaged with
    their total weights.
    """
    ra_rad, dec_rad = np.broadcast_arrays(np.asarray(ra_rad, float), np.asarray(dec_rad, float))
    pos = _unit(ra_rad.ravel(), dec_rad.ravel())  # (N, 3)
    ptg = _unit(pointing.ra_rad, pointing.dec_rad)  # (T, 3)
    w_t = pointing.weights.sum(axis=1)
    cos_theta = np.clip(pos @ ptg.T, -1.0, 1.0)  # (N, T)
    theta = np.arccos(cos_theta)
    grid = np.linspace(0.0, max(float(theta.max()), 1e-6) * (1 + 1e-9), n_theta)
    out = np.zeros(pos.shape[0])
    for t in np.flatnonzero(w_t > 0):
        prof = band_averaged_profile(grid, pointing.freq_hz, pointing.weights[t])
        out += w_t[t] * CubicSpline(grid, prof)(theta[:, t])
    out /= w_t.sum()
    out[~np.isfinite(ra_rad.ravel()) | ~np.isfinite(dec_rad.ravel())] = np.nan
    return out.reshape(ra_rad.shape)


def coarse_grid(shape: tuple[int, int], max_coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a coarse grid of at most ``max_coarse`` points a side, edges included."""
    ny, nx = shape
    cy = np.unique(np.round(np.linspace(0, ny - 1, min(ny, max_coarse))).astype(int))
    cx = np.unique(np.round(np.linspace(0, nx - 1, min(nx, max_coarse))).astype(int))
    return cy, cx


def interpolate_coarse(coarse: np.ndarray, cy: np.ndarray, cx: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Values on the coarse grid (rows ``cy``, columns ``cx``) interpolated with cubic splines onto every pixel."""
    ny, nx = shape
    if cy.size == ny and cx.size == nx:
        return np.asarray(coarse, float)
    # Fractional coarse-grid coordinates of every pixel (grid points are not evenly spaced after rounding).
    fy = np.interp(np.arange(ny), cy, np.arange(cy.size))
    fx = np.interp(np.arange(nx), cx, np.arange(cx.size))
    out = np.empty((ny, nx))
    for r0 in range(0, ny, 512):
        rows = np.arange(r0, min(r0 + 512, ny))
        yy, xx = np.meshgrid(fy[rows], fx, indexing="ij")
        out[rows] = map_coordinates(coarse, [yy, xx], order=3, mode="nearest")
    return out


def beam_image(wcs, shape: tuple[int, int], pointing: DriftPointing, max_coarse: int = 257) -> np.ndarray:
    """The effective beam on the pixels of a 2-D celestial WCS (ICRS), shape ``shape`` (ny, nx).

    The beam varies on degree scales, so it is computed exactly on a coarse
    grid of at most ``max_coarse`` points a side (always including the image
    edges) and interpolated with cubic splines onto every pixel.
    """
    cy, cx = coarse_grid(shape, max_coarse)
    gx, gy = np.meshgrid(cx, cy)
    ra, dec = wcs.all_pix2world(gx, gy, 0)
    coarse = effective_beam(np.radians(ra), np.radians(dec), pointing)
    return np.clip(interpolate_coarse(coarse, cy, cx, shape), 0.0, 1.0)


def correct(image: np.ndarray, pb: np.ndarray, cutoff: float) -> np.ndarray:
    """``image / pb`` where ``pb >= cutoff``; NaN elsewhere (and where either is NaN)."""
    if not 0 < cutoff <= 1:
        raise ValueError(f"primary-beam cut-off must be in (0, 1], got {cutoff}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(pb >= cutoff, image / pb, np.nan)
    return out.astype(image.dtype, copy=False)
