"""How big an image must be and how fine its pixels: from the primary beam and the synthesised beam.

Field. The pipeline's corrected image is kept where the drift- and
band-averaged primary beam B (:mod:`dsa110_contimg.imaging.primary_beam`) is
at least ``pb_cutoff``. The image must cover all of that region: its half
width is the largest angular distance from the image centre (the meridian at
mid time) at which B still reaches the cut-off, searched along the two axes
through the centre (RA, where the drift of ~1.1 deg widens the beam, and Dec).
For one integration and one channel this is the Airy radius r_c where
[2 J1(x)/x]^2 = pb_cutoff, x = pi D sin(r_c) / lambda (x = 2.27 for 10%, 1.62
for 50%); the drift adds about half the pointing track in RA.

Cell. The finest fringe of the data is lambda_min / B_max (the top of the
band over the longest unflagged baseline); the restoring beam of a Briggs-0
image is 1.2-1.6 times wider (its minor axis), so a cell of (lambda_min /
B_max) / ``pixels_per_beam`` with the default 3 puts 3.5-5 pixels across the
restoring beam's minor axis, enough to sample it for CLEAN and photometry.

Size. ``imsize = 2 * half_width / cell``, rounded up to an even number whose
prime factors are 2, 3, 5 and 7 only (FFT-friendly for both imagers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import beam

C_M_S = 299792458.0
ARCSEC = np.pi / 180 / 3600


def airy_cutoff_radius_rad(freq_hz: float, pb_cutoff: float, diameter_m: float | None = None) -> float:
    """Angle from the pointing at which one dish's Airy power pattern falls to ``pb_cutoff`` (first lobe)."""
    from scipy.optimize import brentq

    if not 0 < pb_cutoff < 1:
        raise ValueError(f"pb_cutoff must be in (0, 1), got {pb_cutoff}")
    kw = {} if diameter_m is None else {"diameter_m": diameter_m}
    first_null = 1.2197 * C_M_S / freq_hz / (diameter_m or beam.DISH_DIAMETER_M)
    return float(brentq(lambda t: float(beam.airy_power(t, freq_hz, **kw)) - pb_cutoff, 1e-9, first_null))


def smooth_size(n: float) -> int:
    """Smallest even integer >= n whose prime factors are all 2, 3, 5 or 7."""
    m = max(2, int(np.ceil(n)))
    m += m % 2
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def cell_arcsec(freq_max_hz: float, max_baseline_m: float, pixels_per_beam: float) -> float:
    """(lambda at ``freq_max_hz`` / ``max_baseline_m``) / ``pixels_per_beam``, in arcsec, 3 significant figures (down)."""
    if max_baseline_m <= 0:
        raise ValueError("the longest baseline has zero length")
    cell = C_M_S / freq_max_hz / max_baseline_m / ARCSEC / pixels_per_beam
    digits = 2 - int(np.floor(np.log10(cell)))
    return float(np.floor(cell * 10**digits) / 10**digits)


def coarse_pointing(pointing, n_freq: int = 32):
    """The same pointing with its channels binned into at most ``n_freq`` groups (weighted mean frequency,
    summed weights): the beam changes by < 0.5% of its width across a bin of 1/32 of the band."""
    from dataclasses import replace

    f = np.asarray(pointing.freq_hz, float)
    if f.size <= n_freq:
        return pointing
    edges = np.linspace(0, f.size, n_freq + 1).astype(int)
    w = np.add.reduceat(pointing.weights, edges[:-1], axis=1)
    wf = np.add.reduceat(pointing.weights * f[None, :], edges[:-1], axis=1).sum(0)
    fw = np.add.reduceat(np.ones_like(f), edges[:-1])
    freq = np.where(w.sum(0) > 0, wf / np.maximum(w.sum(0), 1e-300), np.add.reduceat(f, edges[:-1]) / fw)
    return replace(pointing, freq_hz=freq, weights=w)


def beam_half_width_rad(pointing, centre_ra_rad: float, centre_dec_rad: float, pb_cutoff: float,
                        n_samples: int = 400) -> float:
    """Largest distance from the centre, along RA and along Dec, where the effective beam is >= ``pb_cutoff``.

    ``pointing`` is a :class:`~dsa110_contimg.imaging.primary_beam.DriftPointing`.
    The beam is sampled out to its first null at the lowest frequency plus the
    pointing track, and the crossing refined by linear interpolation.
    """
    from .primary_beam import effective_beam

    if not 0 < pb_cutoff < 1:
        raise ValueError(f"pb_cutoff must be in (0, 1), got {pb_cutoff}")
    pointing = coarse_pointing(pointing)
    ptg_ra = np.unwrap(np.asarray(pointing.ra_rad, float))
    track = float(np.abs(ptg_ra - centre_ra_rad).max() * np.cos(centre_dec_rad))
    reach = 1.2197 * C_M_S / float(np.min(pointing.freq_hz)) / beam.DISH_DIAMETER_M + track
    r = np.linspace(0.0, reach, n_samples)
    widest = 0.0
    for axis in ("ra", "dec"):
        for sign in (1.0, -1.0):
            if axis == "ra":
                b = effective_beam(centre_ra_rad + sign * r / np.cos(centre_dec_rad), np.full_like(r, centre_dec_rad),
                                   pointing)
            else:
                b = effective_beam(np.full_like(r, centre_ra_rad), centre_dec_rad + sign * r, pointing)
            below = np.flatnonzero(b < pb_cutoff)
            if below.size == 0:
                raise ValueError(f"the beam stays above {pb_cutoff} out to {np.degrees(reach):.2f} deg")
            i = int(below[0])
            if i == 0:
                raise ValueError(f"the beam at the image centre is below the cut-off {pb_cutoff}")
            # linear interpolation between the last sample above and the first below
            f = (b[i - 1] - pb_cutoff) / (b[i - 1] - b[i])
            widest = max(widest, float(r[i - 1] + f * (r[i] - r[i - 1])))
    return widest


@dataclass(frozen=True)
class FieldSize:
    """An image's derived geometry and why."""

    imsize: int
    cell_arcsec: float
    half_width_deg: float
    """Distance from the centre to the farthest point where the beam reaches the cut-off."""
    fringe_arcsec: float
    """lambda_min / B_max, the finest fringe of the data."""

    @property
    def field_deg(self) -> float:
        return self.imsize * self.cell_arcsec / 3600.0


def field_size(half_width_rad: float, freq_max_hz: float, max_baseline_m: float, pixels_per_beam: float,
               cell: float | None = None) -> FieldSize:
    """The image size covering ``half_width_rad`` each side at the derived (or given) cell."""
    fringe = C_M_S / freq_max_hz / max_baseline_m / ARCSEC
    if cell is None:
        cell = cell_arcsec(freq_max_hz, max_baseline_m, pixels_per_beam)
    n = smooth_size(2 * half_width_rad / (cell * ARCSEC))
    return FieldSize(n, float(cell), float(np.degrees(half_width_rad)), float(fringe))
