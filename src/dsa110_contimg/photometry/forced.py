"""Forced photometry at catalogue positions, and blind detections not in the catalogue.

The flux of a compact source at a known position is the amplitude of the
restoring beam fitted there, with the position held fixed (a linear least-
squares fit, so it cannot wander onto a neighbour or a noise peak):

    A = sum_p K_p D_p / sum_p K_p^2

over the pixels ``p`` of a box around the position, ``K`` the restoring beam
(peak 1) centred on the exact sub-pixel position and ``D`` the primary-beam-
corrected image (Jy/beam, so A is the flux density in Jy of an unresolved
source). Catalogue sources whose fit boxes overlap (closer than
``2 fit_radius_beams + 0.5`` beams) are fitted jointly, one amplitude each in
the same linear model, so a bright neighbour's wings do not leak into a
faint source; those closer than ``blend_radius_beams`` are flagged BLENDED.

Error. Image noise is correlated over a beam, so the pixels are not
independent: with ``w = K / sum K^2`` and noise covariance ``sigma^2 R``,

    var(A) = sigma^2 w^T R w                        (Condon 1997, PASP 109, 166)

``sigma`` is the local rms, a robust (median absolute deviation) estimate in
an annulus around the source on the residual image, divided by the primary
beam at the source (the residual is not beam-corrected). ``R`` is the noise
correlation between pixels: measured once per image as the normalised
autocorrelation of the residual (``noise_correlation: measured``), or taken to
be the restoring beam (``beam``, the usual assumption). For noise correlated
like the beam, ``w^T R w`` tends to 4/3 in the continuum limit: the beam fit
has a 15% larger error than the rms.

That is the statistical error (``flux_err_stat_jy``). Above ~20 sigma the
scatter of measured fluxes about the truth is dominated by what the noise
does not show: the flux-scale error of the image's calibration, primary-beam
model errors, deconvolution errors. ``flux_err_jy`` adds a fraction
``systematic_fraction`` of the flux in quadrature,

    err^2 = err_stat^2 + (systematic_fraction x flux)^2,

so the pulls (flux - truth) / err of bright sources keep unit width. With
``systematic_fraction: auto`` (the default) each image estimates its own
fraction from the scatter of its bright reference sources' flux ratios to
the catalogue (:mod:`dsa110_contimg.photometry.systematic`); the value, its
error and the number of references are in the table's ``attrs`` and the
photometry sidecar.

Flags (bits, :class:`Flag`): EDGE (the fit box leaves the image), LOW_PB
(primary beam below ``min_pb``), BLENDED, NAN_PIXELS (blanked pixels in the
box; fitted on the rest), NO_DATA (the pixel at the position is blank, or
most of the beam is: flux NaN), NO_RMS (no usable annulus: error NaN),
MARGINAL_IMAGE / BAD_IMAGE (the image's QA grade, set by the photometry stage
from the image sidecar and carried into the light curves).

Blind detection: islands of the signal-to-noise map (image / background rms
map) above ``new_source_sigma`` within the primary-beam cut-off; each peak
is measured like a catalogue source and kept when no catalogue source
(without the flux cut) lies within ``match_radius_arcsec``, it is significant
against the local sidelobe level of bright sources nearby and it is away from
the edges (see :mod:`dsa110_contimg.photometry.new_sources`).
"""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..config import default, options
from ..constants import MAD_TO_SIGMA
from ..stats import robust_rms

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


class Flag(enum.IntFlag):
    """Quality flags of one measurement (bits of the ``flags`` column)."""

    EDGE = 1
    LOW_PB = 2
    BLENDED = 4
    NAN_PIXELS = 8
    NO_DATA = 16
    NO_RMS = 32
    MARGINAL_IMAGE = 64
    BAD_IMAGE = 128


#: Image QA grade -> the flag every measurement on such an image carries.
GRADE_FLAGS = {"good": 0, "marginal": int(Flag.MARGINAL_IMAGE), "bad": int(Flag.BAD_IMAGE)}


def grade_flag(grade: str | None) -> int:
    """The flag bit of an image QA grade (0 for good or unknown: a missing grade is not a defect of the data)."""
    return GRADE_FLAGS.get(str(grade), 0) if grade is not None else 0


FLAG_NAMES = {f.name.lower(): int(f) for f in Flag}


def flag_mask(names) -> int:
    """OR of the flags named (``["edge", "no_data"]``); unknown names raise ValueError."""
    mask = 0
    for name in names:
        try:
            mask |= FLAG_NAMES[name.lower()]
        except KeyError:
            raise ValueError(f"unknown photometry flag {name!r}; known: {sorted(FLAG_NAMES)}") from None
    return mask


def describe_flags(value: int) -> str:
    """``"edge|blended"`` for a flags value (``""`` for 0)."""
    return "|".join(f.name.lower() for f in Flag if value & f)


class PhotometryError(ValueError):
    """An image that cannot be measured; the message names the file and the problem."""


@dataclass(frozen=True)
class PhotometryOptions:
    """How forced photometry and blind detection are done (config section ``photometry``)."""

    fit_radius_beams: float = default("photometry.fit_radius_beams")
    """Half-width of the fit box, in restoring-beam major-axis FWHMs."""
    annulus_beams: tuple[float, float] = default("photometry.annulus_beams")
    """Inner and outer radius of the local-rms annulus, in major-axis FWHMs."""
    blend_radius_beams: float = default("photometry.blend_radius_beams")
    """Sources closer than this (major-axis FWHMs) are flagged blended (any whose boxes overlap are fitted jointly)."""
    min_pb: float = default("photometry.min_pb")
    """Measurements where the primary beam is below this are flagged low_pb."""
    pb_cutoff: float = 0.1
    """Footprint: only positions where the primary beam is at least this are measured."""
    noise_correlation: str = default("photometry.noise_correlation")
    """``measured`` (autocorrelation of the residual image) or ``beam`` (the restoring beam)."""
    min_annulus_pixels: int = 30
    """Fewer finite annulus pixels than this: no local rms (flag no_rms)."""
    new_source_sigma: float = default("photometry.new_source_sigma")
    """Blind detections: islands whose peak is at least this many local sigma."""
    match_radius_arcsec: float | None = default("photometry.match_radius_arcsec")
    """A blind detection with a catalogue source this close is not new (None: one beam major axis)."""
    max_new_sources: int = default("photometry.max_new_sources")
    """At most this many new-source candidates per image (the brightest)."""
    background_box_beams: float = 25.0
    """Tile size of the background rms map for blind detection, in major-axis FWHMs."""
    chunk: int = 2048
    """Sources measured per vectorised batch (bounds the memory)."""
    systematic_fraction: float | str = default("photometry.systematic_fraction")
    """Fraction of the flux added in quadrature to the statistical error, or ``auto``: estimated per image
    from its bright reference sources (photometry.systematic)."""
    systematic_min_snr: float = default("photometry.systematic.min_snr")
    """auto: unflagged sources at least this many (noise) sigma are the references."""
    systematic_min_sources: int = default("photometry.systematic.min_sources")
    """auto: with fewer references the fallback fraction is used (and the sidecar says so)."""
    systematic_floor: float = default("photometry.systematic.floor")
    """auto: the estimate is at least this."""
    systematic_cap: float = default("photometry.systematic.cap")
    """auto: the estimate is at most this."""
    systematic_fallback_fraction: float = default("photometry.systematic.fallback_fraction")
    """auto: the fraction used when an image has too few references."""
    sidelobe_fraction: float = default("photometry.sidelobe_fraction")
    """New sources: sidelobe level as a fraction of the brightest apparent flux nearby (see photometry.new_sources)."""
    sidelobe_radius_arcmin: float = default("photometry.sidelobe_radius_arcmin")
    """New sources: bright sources this close set the local sidelobe level."""
    sidelobe_psf_fraction: float = default("photometry.sidelobe_psf_fraction")
    """New sources: the far sidelobe level as a fraction of apparent flux x the PSF's sidelobe envelope."""
    sidelobe_psf_radius_arcmin: float = default("photometry.sidelobe_psf_radius_arcmin")
    """New sources: bright sources this close set the far sidelobe level."""
    edge_margin_beams: float = default("photometry.edge_margin_beams")
    """New sources: candidates closer than this (beams) to the image edge or the primary-beam cut-off are rejected."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PhotometryOptions:
        """From a validated pipeline config: section ``photometry`` plus ``imaging.pb_cutoff``."""
        section = dict(config["photometry"])
        auto = section.pop("systematic", {})
        extra = {f"systematic_{k}": v for k, v in auto.items()}
        return options(cls, section, pb_cutoff=config["imaging"]["pb_cutoff"], **extra)


@dataclass(frozen=True)
class Beam:
    """A restoring beam: FWHMs and position angle (north through east), degrees, as in FITS."""

    major_deg: float
    minor_deg: float
    pa_deg: float

    @classmethod
    def from_header(cls, header) -> Beam:
        try:
            beam = cls(float(header["BMAJ"]), float(header["BMIN"]), float(header.get("BPA", 0.0)))
        except KeyError:
            raise PhotometryError("the image header has no restoring beam (BMAJ/BMIN)") from None
        if not (beam.major_deg > 0 and beam.minor_deg > 0):
            raise PhotometryError(f"the image header has a bad restoring beam {beam}")
        return beam


# --------------------------------------------------------------- geometry


def pixel_scale_deg(wcs) -> float:
    """Geometric-mean pixel size (degrees) at the reference pixel."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))))


def beam_inverse_covariance(wcs, beam: Beam, x0: float | None = None, y0: float | None = None) -> np.ndarray:
    """Inverse covariance (pixels^-2, 2x2 over (x, y)) of the Gaussian beam at one pixel.

    The beam's axes (major at PA from north through east) are mapped to pixel
    axes through the WCS Jacobian there, so any orientation and handedness
    works. By default at the reference pixel: the beam's pixel shape varies by
    less than 0.1% over a DSA-110 field, so one matrix serves the image.
    """
    if x0 is None:
        x0, y0 = (float(v) for v in wcs.wcs.crpix - 1)
    ra0, dec0 = wcs.all_pix2world([[x0, y0]], 0)[0]
    eps = 1e-4
    cosd = np.cos(np.radians(dec0))
    jac = np.empty((2, 2))  # pixels per degree of (east, north)
    for k, (dra, ddec) in enumerate(((eps / cosd, 0.0), (0.0, eps))):
        px = wcs.all_world2pix([[ra0 + dra, dec0 + ddec]], 0)[0]
        jac[:, k] = (px - (x0, y0)) / eps
    pa = np.radians(beam.pa_deg)
    axes = np.array([[np.sin(pa), np.cos(pa)], [np.cos(pa), -np.sin(pa)]]).T  # columns: major, minor (E, N)
    sig = np.array([beam.major_deg, beam.minor_deg]) * FWHM_TO_SIGMA
    cov_sky = axes @ np.diag(sig**2) @ axes.T
    cov_pix = jac @ cov_sky @ jac.T
    return np.linalg.inv(cov_pix)


def _quad(inv: np.ndarray, dx, dy):
    return inv[0, 0] * dx * dx + 2.0 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy


def gaussian(inv: np.ndarray, dx, dy):
    """The beam (peak 1) at pixel offsets (dx, dy)."""
    return np.exp(-0.5 * _quad(inv, dx, dy))


def beam_fwhm_pixels(wcs, beam: Beam) -> float:
    return beam.major_deg / pixel_scale_deg(wcs)


# ------------------------------------------------------------ local noise


def _offsets_in_annulus(r_in: float, r_out: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(np.ceil(r_out))
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    r = np.hypot(dx, dy)
    keep = (r >= r_in) & (r <= r_out)
    return dx[keep], dy[keep]


def _gather(img: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """img[iy, ix] with NaN where the index is off the image (same shapes as iy, ix)."""
    ny, nx = img.shape
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    vals = img[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)].astype(np.float32)
    vals[~inside] = np.nan
    return vals


def annulus_rms(noise: np.ndarray, x: np.ndarray, y: np.ndarray, r_in: float, r_out: float,
                min_pixels: int = 30, chunk: int = 2048) -> np.ndarray:
    """Robust rms of ``noise`` in an annulus (radii in pixels) around each position; NaN if too few pixels."""
    dx, dy = _offsets_in_annulus(r_in, r_out)
    out = np.full(len(x), np.nan)
    ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    for s in range(0, len(x), chunk):
        vals = _gather(noise, iy[s : s + chunk, None] + dy[None, :], ix[s : s + chunk, None] + dx[None, :])
        count = np.isfinite(vals).sum(1)
        with np.errstate(all="ignore"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
                rms = robust_rms(vals, axis=1)
        out[s : s + chunk] = np.where(count >= min_pixels, rms, np.nan)
    return out


def noise_autocorrelation(noise: np.ndarray, max_lag: int, size: int = 512, clip_sigma: float = 5.0) -> np.ndarray | None:
    """Normalised autocorrelation rho(dy, dx) of the noise, lags up to ``max_lag`` (shape 2L+1 square).

    Measured on a central ``size`` x ``size`` cut-out (finite pixels only;
    pixels beyond ``clip_sigma`` robust sigma, i.e. sources, set to 0) by FFT,
    divided by the autocorrelation of the mask so blanked pixels do not bias
    it. None when the cut-out has too few finite pixels.
    """
    ny, nx = noise.shape
    h = min(size, ny) // 2
    w = min(size, nx) // 2
    cut = np.asarray(noise[ny // 2 - h : ny // 2 + h, nx // 2 - w : nx // 2 + w], dtype=np.float64)
    mask = np.isfinite(cut)
    if mask.sum() < max(1000, 20 * (2 * max_lag + 1) ** 2):
        return None
    sigma = robust_rms(cut[mask])
    if not np.isfinite(sigma) or sigma <= 0:
        return None
    vals = np.where(mask, cut - np.median(cut[mask]), 0.0)
    vals[np.abs(vals) > clip_sigma * sigma] = 0.0
    from scipy import fft

    m = mask.astype(np.float64)
    shape = [fft.next_fast_len(s + max_lag + 1, real=True) for s in cut.shape]
    fv = fft.rfft2(vals, shape)
    fm = fft.rfft2(m, shape)
    acf = fft.irfft2(np.abs(fv) ** 2, shape)
    cnt = fft.irfft2(np.abs(fm) ** 2, shape)
    lags = np.arange(-max_lag, max_lag + 1)
    sub = acf[np.ix_(lags % shape[0], lags % shape[1])]
    num = cnt[np.ix_(lags % shape[0], lags % shape[1])]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = sub / np.maximum(num, 1.0)
    rho = rho / rho[max_lag, max_lag]
    return rho


def beam_correlation(inv: np.ndarray, max_lag: int) -> np.ndarray:
    """The restoring beam as a noise correlation rho(dy, dx), lags up to ``max_lag``."""
    dy, dx = np.mgrid[-max_lag : max_lag + 1, -max_lag : max_lag + 1]
    return gaussian(inv, dx, dy)


# ----------------------------------------------------------- forced fits


@dataclass
class ForcedResult:
    """Per-position arrays of a forced-photometry run."""

    flux: np.ndarray
    err: np.ndarray  # statistical error (see total_error for the one reported)
    rms: np.ndarray  # local rms at the source (Jy/beam, beam-corrected units)
    pb: np.ndarray
    flags: np.ndarray  # int32
    n_blend: np.ndarray  # sources fitted jointly with this one, itself included (1 = isolated)


@dataclass
class Prepared:
    """What every position of one image shares: beam shape, box, noise correlation."""

    inv: np.ndarray
    r: int
    dx: np.ndarray  # box offsets, flattened
    dy: np.ndarray
    rho: np.ndarray  # (4r+1)^2 correlation kernel, lags up to 2r
    R: np.ndarray  # (P, P) correlation between box pixels
    fwhm_px: float
    correlation: str  # what rho is: measured or beam


def prepare(wcs, beam: Beam, opts: PhotometryOptions, noise: np.ndarray | None) -> Prepared:
    inv = beam_inverse_covariance(wcs, beam)
    fwhm_px = beam_fwhm_pixels(wcs, beam)
    r = max(2, int(np.ceil(opts.fit_radius_beams * fwhm_px)))
    dy, dx = (a.ravel() for a in np.mgrid[-r : r + 1, -r : r + 1])
    rho, how = None, "beam"
    if opts.noise_correlation == "measured" and noise is not None:
        rho = noise_autocorrelation(noise, 2 * r)
        how = "measured" if rho is not None else "beam"
    elif opts.noise_correlation not in ("measured", "beam"):
        raise ValueError(f"photometry.noise_correlation must be measured or beam, not {opts.noise_correlation!r}")
    if rho is None:
        rho = beam_correlation(inv, 2 * r)
    R = rho[(dy[:, None] - dy[None, :]) + 2 * r, (dx[:, None] - dx[None, :]) + 2 * r]
    return Prepared(inv, r, dx, dy, rho, R, fwhm_px, how)


def _clusters(x: np.ndarray, y: np.ndarray, radius_px: float) -> np.ndarray:
    """Label of each position's group of neighbours closer than ``radius_px`` (friends of friends)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(x)
    if n == 0 or radius_px <= 0:
        return np.arange(n)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius_px, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _box_flags(data: np.ndarray, ix, iy, prep: Prepared, kern: np.ndarray, vals: np.ndarray) -> tuple:
    """EDGE / NAN_PIXELS / NO_DATA per position from its box, plus the usable-pixel mask."""
    ny, nx = data.shape
    bx, by = ix[:, None] + prep.dx[None, :], iy[:, None] + prep.dy[None, :]
    inside = (bx >= 0) & (bx < nx) & (by >= 0) & (by < ny)
    finite = np.isfinite(vals)
    usable = inside & finite
    flags = np.zeros(len(ix), np.int32)
    flags[~inside.all(1)] |= Flag.EDGE
    flags[(inside & ~finite).any(1)] |= Flag.NAN_PIXELS
    centre = (prep.dx == 0) & (prep.dy == 0)
    k2 = kern**2
    weight = (k2 * usable).sum(1) / k2.sum(1)
    no_data = ~usable[:, centre][:, 0] | (weight < 0.5)
    flags[no_data] |= Flag.NO_DATA
    return flags, usable


def forced_photometry(
    data: np.ndarray,
    wcs,
    beam: Beam,
    x: np.ndarray,
    y: np.ndarray,
    *,
    noise: np.ndarray | None = None,
    pb: np.ndarray | None = None,
    opts: PhotometryOptions = PhotometryOptions(),
    prep: Prepared | None = None,
) -> ForcedResult:
    """Fit the restoring beam at fixed pixel positions (x, y; 0-based) of a beam-corrected image.

    ``data`` is the primary-beam-corrected image (Jy/beam); ``noise`` the
    residual image, not beam-corrected (default: ``data * pb``); ``pb`` the
    primary beam (default 1). See the module docstring for the model, the
    error and the flags.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = len(x)
    prep = prep or prepare(wcs, beam, opts, noise)
    if noise is None:
        noise = data if pb is None else data * pb
    out = ForcedResult(
        np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), np.ones(n), np.zeros(n, np.int32), np.ones(n, np.int32)
    )
    if n == 0:
        return out
    if pb is not None:
        from scipy.ndimage import map_coordinates

        pbf = np.where(np.isfinite(pb), pb, 0.0).astype(np.float32)
        out.pb = map_coordinates(pbf, [y, x], order=1, mode="nearest")
        out.flags[out.pb < opts.min_pb] |= Flag.LOW_PB
    r_in, r_out = (b * prep.fwhm_px for b in opts.annulus_beams)
    rms_noise = annulus_rms(noise, x, y, r_in, r_out, opts.min_annulus_pixels, opts.chunk)
    with np.errstate(invalid="ignore", divide="ignore"):
        out.rms = rms_noise / np.where(out.pb > 0, out.pb, np.nan)
    out.flags[~np.isfinite(out.rms)] |= Flag.NO_RMS

    # Sources whose fit boxes (plus half a beam of wings) overlap are fitted together; those
    # closer than blend_radius_beams are also flagged blended (confused).
    label = _clusters(x, y, (2 * opts.fit_radius_beams + 0.5) * prep.fwhm_px)
    sizes = np.bincount(label)
    out.n_blend = sizes[label].astype(np.int32)
    if n > 1 and opts.blend_radius_beams > 0:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=2)
        out.flags[dist[:, 1] < opts.blend_radius_beams * prep.fwhm_px] |= Flag.BLENDED
    isolated = np.flatnonzero(out.n_blend == 1)
    ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    for s in range(0, len(isolated), opts.chunk):
        idx = isolated[s : s + opts.chunk]
        kern = gaussian(prep.inv, (ix[idx, None] + prep.dx) - x[idx, None], (iy[idx, None] + prep.dy) - y[idx, None])
        vals = _gather(data, iy[idx, None] + prep.dy, ix[idx, None] + prep.dx)
        flags, usable = _box_flags(data, ix[idx], iy[idx], prep, kern, vals)
        k = np.where(usable, kern, 0.0)
        norm = (k * k).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = k / norm[:, None]
            flux = (w * np.where(usable, vals, 0.0)).sum(1)
            factor = ((w @ prep.R) * w).sum(1)
        ok = (flags & Flag.NO_DATA) == 0
        out.flux[idx] = np.where(ok, flux, np.nan)
        out.err[idx] = np.where(ok, out.rms[idx] * np.sqrt(factor), np.nan)
        out.flags[idx] |= flags
    for group in np.flatnonzero(sizes > 1):
        _fit_blend(data, x, y, ix, iy, np.flatnonzero(label == group), prep, out)
    return out


def _fit_blend(data, x, y, ix, iy, members, prep: Prepared, out: ForcedResult) -> None:
    """Joint linear fit of the beam amplitudes of one group of close sources."""
    from scipy.ndimage import convolve

    ny, nx = data.shape
    r = prep.r
    kern = gaussian(prep.inv, (ix[members, None] + prep.dx) - x[members, None], (iy[members, None] + prep.dy) - y[members, None])
    vals = _gather(data, iy[members, None] + prep.dy, ix[members, None] + prep.dx)
    flags, _ = _box_flags(data, ix[members], iy[members], prep, kern, vals)
    out.flags[members] |= flags
    fit = members[(flags & Flag.NO_DATA) == 0]
    if len(fit) == 0:
        return
    x0, x1 = max(ix[fit].min() - r, 0), min(ix[fit].max() + r, nx - 1)
    y0, y1 = max(iy[fit].min() - r, 0), min(iy[fit].max() + r, ny - 1)
    gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    sub = np.asarray(data[y0 : y1 + 1, x0 : x1 + 1], float)
    inbox = np.zeros(sub.shape, bool)
    for k in fit:
        inbox |= (np.abs(gx - ix[k]) <= r) & (np.abs(gy - iy[k]) <= r)
    use = inbox & np.isfinite(sub)
    cols = np.stack([np.where(use, gaussian(prep.inv, gx - x[k], gy - y[k]), 0.0) for k in fit])  # (m, H, W)
    M = cols.reshape(len(fit), -1)[:, use.ravel()].T  # (P, m)
    Dv = sub[use]
    N = M.T @ M
    try:
        Ninv = np.linalg.inv(N)
    except np.linalg.LinAlgError:
        Ninv = np.linalg.pinv(N)
    amp = Ninv @ (M.T @ Dv)
    L = 2 * r  # rho's support: correlation beyond two beams is negligible
    if M.shape[0] <= 3000:  # R between the used pixels, gathered from rho
        py, px = gy[use], gx[use]
        ddy, ddx = py[:, None] - py[None, :], px[:, None] - px[None, :]
        near = (np.abs(ddy) <= L) & (np.abs(ddx) <= L)
        R = np.where(near, prep.rho[np.clip(ddy + L, 0, 2 * L), np.clip(ddx + L, 0, 2 * L)], 0.0)
        RM = R @ M
    else:  # a large group: each masked column correlated with rho (symmetric) instead
        RM = np.stack([convolve(c, prep.rho, mode="constant", cval=0.0)[use] for c in cols], axis=1)  # (P, m)
    G = Ninv @ (M.T @ RM) @ Ninv
    out.flux[fit] = amp
    with np.errstate(invalid="ignore"):
        out.err[fit] = out.rms[fit] * np.sqrt(np.clip(np.diag(G), 0, None))


# -------------------------------------------------------------- images


@dataclass
class ImageSet:
    """The images one photometry job reads, as 2-D arrays on one celestial WCS."""

    flux: np.ndarray
    """Primary-beam-corrected image (Jy/beam)."""
    wcs: Any
    header: Any
    beam: Beam
    pb: np.ndarray | None = None
    noise: np.ndarray | None = None
    """Residual image (not beam-corrected), for the local rms and the noise correlation."""
    paths: dict[str, str] = field(default_factory=dict)


def read_fits_image(path: str | os.PathLike) -> tuple[np.ndarray, Any, Any]:
    """(2-D float32 data, celestial WCS, header) of a FITS image; degenerate axes dropped."""
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise PhotometryError(f"{path}: no image data in the FITS file")
            header = hdu.header.copy()
            data = np.asarray(hdu.data, dtype=np.float32)
    except PhotometryError:
        raise
    except (OSError, ValueError) as exc:
        raise PhotometryError(f"{path}: cannot read the FITS image: {exc}") from exc
    while data.ndim > 2:
        if data.shape[0] != 1:
            raise PhotometryError(f"{path}: expected one frequency and one Stokes plane, data shape {data.shape}")
        data = data[0]
    wcs = WCS(header).celestial
    if wcs.naxis != 2:
        raise PhotometryError(f"{path}: no celestial axes in the header")
    return data, wcs, header


def load_images(pbcor: str | os.PathLike, pb: str | os.PathLike | None = None,
                residual: str | os.PathLike | None = None, beam: Beam | None = None) -> ImageSet:
    """Read the beam-corrected image and, when given, the primary beam and residual images.

    The beam comes from the pbcor header unless given. The other images must
    have the same shape as the pbcor image.
    """
    flux, wcs, header = read_fits_image(pbcor)
    beam = beam or Beam.from_header(header)
    paths = {"pbcor": os.fspath(pbcor)}
    extra = {}
    for name, path in (("pb", pb), ("residual", residual)):
        if path is None:
            continue
        arr, _, _ = read_fits_image(path)
        if arr.shape != flux.shape:
            raise PhotometryError(f"{path}: shape {arr.shape} differs from the image {pbcor} {flux.shape}")
        extra[name] = arr
        paths[name] = os.fspath(path)
    return ImageSet(flux, wcs, header, beam, extra.get("pb"), extra.get("residual"), paths)


def footprint_mask(images: ImageSet, opts: PhotometryOptions) -> np.ndarray:
    """Pixels where sources are measured: primary beam at least the cut-off (all, without a pb image)."""
    if images.pb is None:
        return np.ones(images.flux.shape, bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(images.pb) & (images.pb >= opts.pb_cutoff)


MEASUREMENT_COLUMNS = (
    "source", "ra_deg", "dec_deg", "catalogue_flux_jy", "flux_jy", "flux_err_jy", "flux_err_stat_jy", "local_rms_jy",
    "snr", "pb", "x_pix", "y_pix", "n_blend", "flags", "mjd",
)


def total_error(flux: np.ndarray, err_stat: np.ndarray, systematic_fraction: float) -> np.ndarray:
    """Statistical error and ``systematic_fraction`` of the flux in quadrature (see the module docstring)."""
    return np.hypot(err_stat, systematic_fraction * np.abs(flux))


def empty_measurements() -> pd.DataFrame:
    """A measurements table with no rows and the right column types."""
    types = {"source": object, "n_blend": np.int32, "flags": np.int32}
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, np.float64)) for c in MEASUREMENT_COLUMNS})


def measure_catalogue(images: ImageSet, cat: pd.DataFrame, mjd: float, opts: PhotometryOptions = PhotometryOptions(),
                      prep: Prepared | None = None) -> pd.DataFrame:
    """Forced photometry of every catalogue source in the image footprint (see :data:`MEASUREMENT_COLUMNS`).

    ``cat`` has the standard catalogue columns (name, ra_deg, dec_deg,
    flux_jy). Sources off the image or outside the primary-beam cut-off are
    not measured; an image with none returns an empty table.
    """
    from dsa110_contimg.photometry.catalogue import in_footprint

    sel, x, y = in_footprint(cat, images.wcs, images.flux.shape, footprint_mask(images, opts))
    if len(sel) == 0:
        return empty_measurements()
    res = forced_photometry(images.flux, images.wcs, images.beam, x, y, noise=images.noise, pb=images.pb,
                            opts=opts, prep=prep)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = res.flux / res.err  # detection significance: against the noise alone
    estimate = systematic_for_image(res.flux, res.err, sel.flux_jy.to_numpy(float), snr, res.flags, opts)
    err = total_error(res.flux, res.err, estimate.fraction)
    table = pd.DataFrame(
        {
            "source": sel.name.astype(str).to_numpy(),
            "ra_deg": sel.ra_deg.to_numpy(float),
            "dec_deg": sel.dec_deg.to_numpy(float),
            "catalogue_flux_jy": sel.flux_jy.to_numpy(float),
            "flux_jy": res.flux,
            "flux_err_jy": err,
            "flux_err_stat_jy": res.err,
            "local_rms_jy": res.rms,
            "snr": snr,
            "pb": res.pb.astype(float),
            "x_pix": x,
            "y_pix": y,
            "n_blend": res.n_blend,
            "flags": res.flags.astype(np.int32),
            "mjd": np.full(len(sel), float(mjd)),
        }
    )
    table.attrs["systematic"] = estimate.record()
    return table


def systematic_for_image(flux, err_stat, catalogue_flux, snr, flags, opts: PhotometryOptions):
    """The image's systematic fraction: the configured number, or (``auto``) estimated from its references."""
    from . import systematic as sysmod

    if opts.systematic_fraction != "auto":
        return sysmod.SystematicEstimate(float(opts.systematic_fraction), "configured", 0,
                                         reason="photometry.systematic_fraction is a fixed number")
    ref = sysmod.reference_mask(snr, flags, opts.systematic_min_snr, 0)
    return sysmod.estimate_systematic(np.asarray(flux)[ref], np.asarray(err_stat)[ref],
                                      np.asarray(catalogue_flux)[ref], floor=opts.systematic_floor,
                                      cap=opts.systematic_cap, min_sources=opts.systematic_min_sources,
                                      fallback=opts.systematic_fallback_fraction)


# --------------------------------------------------------- blind detection


def background_rms_map(noise: np.ndarray, box: int) -> np.ndarray:
    """Robust rms in tiles of ``box`` pixels, interpolated (bilinear) to every pixel; NaN where no data."""
    from scipy.ndimage import map_coordinates

    ny, nx = noise.shape
    box = max(8, int(box))
    ty, tx = int(np.ceil(ny / box)), int(np.ceil(nx / box))
    grid = np.full((ty, tx), np.nan)
    # Whole tiles with every pixel finite: vectorised medians, one row of tiles at a time.
    fy, fx = ny // box, nx // box
    full = np.zeros((fy, fx), bool)
    for j in range(fy if fx else 0):
        tiles = noise[j * box : (j + 1) * box, : fx * box].reshape(box, fx, box).swapaxes(0, 1).reshape(fx, box * box)
        full[j] = np.isfinite(tiles).all(axis=1)
        sel = tiles[full[j]]
        if sel.size:
            med = np.median(sel, axis=1, keepdims=True)
            grid[j, :fx][full[j]] = MAD_TO_SIGMA * np.median(np.abs(sel - med), axis=1)
    for j in range(ty):
        for i in range(tx):
            if j < full.shape[0] and i < full.shape[1] and full[j, i]:
                continue
            tile = noise[j * box : (j + 1) * box, i * box : (i + 1) * box]
            vals = tile[np.isfinite(tile)]
            if vals.size >= 0.2 * tile.size and vals.size >= 50:
                grid[j, i] = robust_rms(vals)
    if not np.isfinite(grid).any():
        return np.full(noise.shape, np.nan, np.float32)
    # Fill empty tiles with the nearest filled one, so interpolation near the blanked region works.
    from scipy.ndimage import distance_transform_edt

    holes = ~np.isfinite(grid)
    if holes.any():
        idx = distance_transform_edt(holes, return_distances=False, return_indices=True)
        grid = grid[tuple(idx)]
    yy = (np.arange(ny) + 0.5) / box - 0.5
    xx = (np.arange(nx) + 0.5) / box - 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.empty((ny, nx), np.float32)
        for s in range(0, ny, 512):  # row blocks keep the coordinate arrays small
            cy, cx = np.meshgrid(yy[s : s + 512], xx, indexing="ij")
            out[s : s + 512] = map_coordinates(grid, [cy, cx], order=1, mode="nearest")
    return out


NEW_SOURCE_COLUMNS = ("ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "snr", "peak_sigma", "pb", "x_pix", "y_pix", "mjd",
                      "sidelobe_jy", "significance", "edge_distance_beams")


def find_new_sources(images: ImageSet, cat: pd.DataFrame, mjd: float, opts: PhotometryOptions = PhotometryOptions(),
                     prep: Prepared | None = None, envelope: dict | None = None) -> tuple[pd.DataFrame, int]:
    """Blind detections above ``new_source_sigma`` with no catalogue source within the match radius.

    ``cat`` is the whole catalogue (no flux cut): a faint known source that
    brightens is a variable, not a new source. Returns (candidates, number of
    islands found in all, matched or not); ``candidates.attrs["rejected"]``
    counts the unmatched islands rejected as sidelobes or at edges.
    ``envelope``: the image's PSF sidelobe envelope (:func:`.new_sources.psf_envelope`; None: 1 everywhere).
    """
    from scipy import ndimage

    prep = prep or prepare(images.wcs, images.beam, opts, images.noise)
    pb = images.pb if images.pb is not None else np.ones_like(images.flux)
    plain = images.flux * pb  # not beam-corrected: uniform noise
    noise = images.noise if images.noise is not None else plain
    rms = background_rms_map(noise, int(opts.background_box_beams * prep.fwhm_px))
    region = footprint_mask(images, opts)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = plain / rms
        snr[~(region & np.isfinite(snr))] = 0.0
    del rms
    above = snr >= opts.new_source_sigma
    labels, n_islands = ndimage.label(above, structure=np.ones((3, 3)))
    empty = pd.DataFrame({c: pd.Series([], dtype=float) for c in NEW_SOURCE_COLUMNS})
    empty.attrs["rejected"] = {"sidelobe": 0, "edge": 0}
    if n_islands == 0:
        return empty, 0
    # Peak of each island: sort the (few) pixels above threshold by island, brightest first.
    pix = np.flatnonzero(above)
    lab = labels.ravel()[pix]
    val = snr.ravel()[pix]
    order = np.lexsort((-val, lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    peak_sigma = val[first].astype(float)
    py, px = np.unravel_index(pix[first], snr.shape)
    peak_jy = plain[py, px].astype(float)  # apparent (beam-attenuated) peak of each island
    del labels, above, pix, lab, val, plain
    # Sub-pixel peak: parabola through the 3 pixels along each axis.
    ny, nx = snr.shape
    def vertex(a, b, c):
        den = a - 2 * b + c
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den < 0, 0.5 * (a - c) / den, 0.0).clip(-0.5, 0.5)
    cx = px + vertex(snr[py, np.clip(px - 1, 0, nx - 1)], snr[py, px], snr[py, np.clip(px + 1, 0, nx - 1)])
    cy = py + vertex(snr[np.clip(py - 1, 0, ny - 1), px], snr[py, px], snr[np.clip(py + 1, 0, ny - 1), px])
    ra, dec = images.wcs.all_pix2world(cx, cy, 0)
    radius = opts.match_radius_arcsec if opts.match_radius_arcsec is not None else images.beam.major_deg * 3600
    new = np.ones(len(ra), bool)
    if len(cat):
        from scipy.spatial import cKDTree

        def unit(r, d):
            r, d = np.radians(r), np.radians(d)
            return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])

        tree = cKDTree(unit(cat.ra_deg.to_numpy(float), cat.dec_deg.to_numpy(float)))
        chord = 2 * np.sin(np.radians(radius / 3600) / 2)
        dist, _ = tree.query(unit(ra, dec), k=1, distance_upper_bound=chord)
        new = ~np.isfinite(dist)
    vet = _vet(images, cat, opts, prep, region, np.asarray(ra), np.asarray(dec), cx, cy, peak_jy, peak_sigma,
               envelope)
    sidelobe = new & ~vet["significant"]
    edge = new & vet["significant"] & ~vet["inside"]
    keep = np.flatnonzero(new & vet["significant"] & vet["inside"])
    keep = keep[np.argsort(-peak_sigma[keep])][: opts.max_new_sources]
    empty.attrs["rejected"] = {"sidelobe": int(sidelobe.sum()), "edge": int(edge.sum())}
    if len(keep) == 0:
        return empty, n_islands
    res = forced_photometry(images.flux, images.wcs, images.beam, cx[keep], cy[keep], noise=images.noise,
                            pb=images.pb, opts=replace(opts, blend_radius_beams=0.0), prep=prep)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = res.flux / res.err
    table = pd.DataFrame(
        {
            "ra_deg": np.asarray(ra)[keep] % 360, "dec_deg": np.asarray(dec)[keep], "flux_jy": res.flux,
            "flux_err_jy": res.err, "snr": s, "peak_sigma": peak_sigma[keep], "pb": res.pb,
            "x_pix": cx[keep], "y_pix": cy[keep], "mjd": np.full(len(keep), float(mjd)),
            "sidelobe_jy": vet["sidelobe_jy"][keep], "significance": vet["significance"][keep],
            "edge_distance_beams": vet["edge_beams"][keep],
        }
    )
    table = table[np.isfinite(table.flux_jy) & np.isfinite(table.snr)].reset_index(drop=True)
    table.attrs["rejected"] = empty.attrs["rejected"]
    return table, n_islands


def _vet(images: ImageSet, cat: pd.DataFrame, opts: PhotometryOptions, prep: Prepared, region: np.ndarray,
         ra, dec, cx, cy, peak_jy, peak_sigma, envelope: dict | None = None) -> dict[str, np.ndarray]:
    """Sidelobe significance and edge distance of every island peak (see photometry.new_sources)."""
    from dsa110_contimg.photometry import new_sources as ns

    # Bright sources: the image's islands and the catalogue's sources (apparent flux), also just off the image.
    b_ra, b_dec, b_flux = [np.asarray(ra) % 360], [np.asarray(dec)], [peak_jy]
    if len(cat) and (opts.sidelobe_fraction > 0 or opts.sidelobe_psf_fraction > 0):
        ny, nx = images.flux.shape
        with np.errstate(invalid="ignore"):
            x, y = images.wcs.all_world2pix(cat.ra_deg.to_numpy(float), cat.dec_deg.to_numpy(float), 0)
        margin = max(opts.sidelobe_radius_arcmin, opts.sidelobe_psf_radius_arcmin) / 60 / pixel_scale_deg(images.wcs)
        near = np.isfinite(x) & np.isfinite(y) & (x > -margin) & (x < nx + margin) & (y > -margin) & (y < ny + margin)
        if near.any():
            ix = np.clip(np.round(x[near]).astype(int), 0, nx - 1)
            iy = np.clip(np.round(y[near]).astype(int), 0, ny - 1)
            pb = images.pb[iy, ix] if images.pb is not None else np.ones(int(near.sum()))
            pb = np.where(np.isfinite(pb) & (pb > 0), pb, opts.pb_cutoff)
            b_ra.append(cat.ra_deg.to_numpy(float)[near])
            b_dec.append(cat.dec_deg.to_numpy(float)[near])
            b_flux.append(cat.flux_jy.to_numpy(float)[near] * pb)
    level = ns.sidelobe_level(np.asarray(ra) % 360, dec, np.concatenate(b_ra), np.concatenate(b_dec),
                              np.concatenate(b_flux), opts.sidelobe_fraction, opts.sidelobe_radius_arcmin / 60,
                              images.beam.major_deg, envelope, opts.sidelobe_psf_fraction,
                              opts.sidelobe_psf_radius_arcmin / 60)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = peak_jy / peak_sigma
        significance = peak_jy / np.hypot(rms, level)
    if opts.edge_margin_beams > 0:
        dist = ns.edge_distance(region)
        ny, nx = region.shape
        edge_px = dist[np.clip(np.round(cy).astype(int), 0, ny - 1), np.clip(np.round(cx).astype(int), 0, nx - 1)]
    else:
        edge_px = np.full(len(cx), np.inf)
    edge_beams = edge_px / prep.fwhm_px
    return {"sidelobe_jy": level, "significance": significance, "significant": significance >= opts.new_source_sigma,
            "edge_beams": edge_beams, "inside": edge_beams >= opts.edge_margin_beams}


__all__ = [
    "Beam",
    "FLAG_NAMES",
    "GRADE_FLAGS",
    "Flag",
    "ForcedResult",
    "ImageSet",
    "MEASUREMENT_COLUMNS",
    "NEW_SOURCE_COLUMNS",
    "PhotometryError",
    "PhotometryOptions",
    "annulus_rms",
    "background_rms_map",
    "beam_inverse_covariance",
    "describe_flags",
    "empty_measurements",
    "find_new_sources",
    "flag_mask",
    "forced_photometry",
    "grade_flag",
    "load_images",
    "measure_catalogue",
    "noise_autocorrelation",
    "prepare",
    "read_fits_image",
    "systematic_for_image",
    "total_error",
]
