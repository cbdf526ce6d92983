"""The smearing response of an image, the factor that makes the primary beam an effective beam.

Visibilities averaged over a channel of width W and an integration of length
tau lose a point source's peak at (l, m) by the factor R(l, m) of
:mod:`dsa110_contimg.imaging.smearing` (the imaging-weighted mean of the
bandwidth and time sincs). Bandwidth smearing is a smear along the radius
(time smearing along an arc), so it moves flux out of the peak: an unresolved
source's peak in the image is R S. A fit of the restoring beam (photometry)
picks up part of the smeared flux and loses less, ~0.73 of the peak's loss in
the full-size benchmark, so the corrected fits come out high by the rest;
``calibration.smearing_model_error`` budgets for it. The image stage multiplies R into the drift-scan primary beam B
(:mod:`dsa110_contimg.imaging.primary_beam`); the beam it writes (the ``pb``
product) is B R, and the corrected image, forced photometry (its flux and
noise) and the mosaics' weights (B R / sigma^2: the response to a point
source, so also the best signal-to-noise weight) all use it. Averaged data
then give the peak fluxes of unaveraged data.

Which smearing (``imaging.smearing_correction``). ``averaging`` (the default):
only what averaging added, R(W, tau) / R(W / m, tau / k) for an MS averaged
over m channels and k integrations (apply_calibration's record in the MS's
sidecar; an MS without one, as convert writes it, is unaveraged, m = k = 1).
Averaged data then give the fluxes of the unaveraged data, which is what the
simulated truth includes: the simulator (``sim/observation.py``) samples each
channel at its centre and each integration at its mid time, so its own
channels and integrations carry no smearing at all, and averaging m such point
samples loses the Dirichlet kernel sin(pi m x) / (m sin(pi x)), equal to the
ratio of box sincs to fourth order in x. ``total``: R(W, tau) of the data as
imaged, for correlator data, whose channels and integrations are boxes and so
carry their own loss too: 3.6% at the PB-10% edge (2.37 deg) of a full-size
observation (244 kHz, 12.9 s; mostly time smearing), which against the
simulator's truth would be an overcorrection of as much. ``none``: the plain
primary beam.

R is computed from the actual uv coverage (every unflagged cross row) and the
imaging weights of a few channels across the band
(:func:`dsa110_contimg.imaging.imager.expected_noise` keeps them), exactly on a
coarse grid of directions (9 x 9: 1.2 CPU-s for a full-size observation), and
interpolated with bicubic splines (R - 1 is a quadratic form in (l, m) to first
order; the splines follow R within 1e-4 of the loss).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RectBivariateSpline

from . import smearing
from .primary_beam import coarse_grid


def direction_cosines(ra_rad, dec_rad, ra0_rad: float, dec0_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(l, m) of ICRS positions relative to the phase centre (ra0, dec0)."""
    dra = np.asarray(ra_rad, float) - ra0_rad
    dec = np.asarray(dec_rad, float)
    l = np.cos(dec) * np.sin(dra)  # noqa: E741
    m = np.sin(dec) * np.cos(dec0_rad) - np.cos(dec) * np.sin(dec0_rad) * np.cos(dra)
    return l, m


def samples(info, noise) -> dict:
    """The imaging-weighted samples of an MS whose smearing the image carries (keyword arguments of
    :func:`dsa110_contimg.imaging.smearing.response` but the directions)."""
    ch = noise.sample_channels
    if ch.size == 0:
        raise ValueError(f"{info.path}: the noise estimate kept no channel weights; the smearing needs them")
    n_rows = info.uvw.shape[0]
    return {
        "uvw_m": np.repeat(info.uvw, ch.size, axis=0),
        "weights": np.asarray(noise.sample_weights, float).ravel(),
        "freq_hz": np.tile(info.freq_hz[ch], n_rows),
        "dec_rad": info.field_dec_rad,
        "chan_width_hz": np.tile(info.chan_width_hz[ch], n_rows),
        "tau_s": np.repeat(info.exposure_s, ch.size),
    }


def response_image(wcs, shape: tuple[int, int], info, noise, averaged: tuple[int, int] | None = None,
                   n_coarse: int = 9) -> np.ndarray:
    """R on the pixels of a 2-D celestial WCS (ICRS), computed on ``n_coarse`` x ``n_coarse`` points.

    ``averaged`` = (channels, integrations) averaged into the MS: R is then
    divided by the response of the channels and integrations before averaging
    (what averaging added; 1 for an unaveraged MS); None: the total R of the
    data as imaged.
    """
    cy, cx = coarse_grid(shape, n_coarse)
    gx, gy = np.meshgrid(cx, cy)
    ra, dec = wcs.all_pix2world(gx, gy, 0)
    if averaged is not None and tuple(averaged) == (1, 1):
        return np.ones(shape)
    l, m = direction_cosines(np.radians(ra), np.radians(dec), info.field_ra_rad, info.field_dec_rad)  # noqa: E741
    coarse = smearing.response(**samples(info, noise), l=l, m=m, native=averaged)
    # Not-a-knot bicubic splines (map_coordinates' boundary handling costs ~3% of the loss near the edges).
    spline = RectBivariateSpline(cy, cx, coarse, kx=3, ky=3, s=0)
    out = np.empty(shape)
    for r0 in range(0, shape[0], 512):
        out[r0:r0 + 512] = spline(np.arange(r0, min(r0 + 512, shape[0])), np.arange(shape[1]))
    return out


def averaging_factors(ms: str) -> tuple[int, int]:
    """(channels, integrations) averaged into ``ms`` by apply_calibration, from its sidecar; (1, 1) for an MS
    without a sidecar (as convert writes it). A sidecar without the record is an error."""
    from .. import provenance

    path = provenance.sidecar_path(ms)
    if not path.exists():
        return 1, 1
    qa = provenance.read_sidecar(path).get("qa") or {}
    try:
        return int(qa["average_channels"]), int(qa["average_integrations"])
    except KeyError as exc:
        raise ValueError(f"{path}: no {exc.args[0]} in its qa; cannot tell how {ms} was averaged") from None


def record(response: np.ndarray, pb: np.ndarray, cutoff: float, corrected: str) -> dict:
    """What the QA sidecar says about smearing: the peak lost where the beam reaches ``cutoff`` (the field's
    edge, worst pixel) and in the image's centre, and whether the beam written includes it."""
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(pb) & (pb >= cutoff)
    cy, cx = (n // 2 for n in response.shape)
    return {
        "smearing_edge_loss": float(1.0 - np.min(response[inside])) if inside.any() else float("nan"),
        "smearing_centre_loss": float(1.0 - response[cy, cx]),
        "smearing_corrected": corrected,
    }
