"""The systematic flux error of one image, estimated from its bright reference-catalogue sources.

Above ~20 sigma the scatter of forced-photometry fluxes about the truth is
dominated by what the image noise does not show (flux-scale, primary-beam and
deconvolution errors). Rather than a fixed fraction, each image measures it
from the sources it has: the ratios ``r_i = flux_i / catalogue_i`` of its
bright, unflagged reference sources scatter by their statistical errors
``e_i = err_stat_i / catalogue_i`` plus the systematic fraction ``s``:

    r_i = mu (1 + delta_i),  var(delta_i) = (e_i / r_i)^2 + s_scatter^2

``s_scatter`` is the value that makes the normalised residuals
``(r_i / mu - 1) / sqrt((e_i / r_i)^2 + s_scatter^2)`` have unit robust width
(1.4826 x median absolute deviation, so a few outliers -- a variable source,
a blend the flags missed -- do not inflate it); ``mu`` is the median ratio.
The width falls monotonically with ``s_scatter``, so a bisection finds it.
The image's flux-scale offset ``mu - 1`` is an error shared by every source
in the image, so it is added in quadrature, less its own noise:

    s^2 = s_scatter^2 + max(0, (mu - 1)^2 - var(mu))

and ``s`` is clipped to ``[floor, cap]``. Its uncertainty is the standard
deviation over bootstrap resamples of the reference sources (fixed seed: the
same data give the same answer). With fewer than ``min_sources`` references
the configured fallback fraction is used and the record says so.

The reference catalogue's own errors (survey calibration, spectral index,
variability) count into ``s``: against a catalogue less accurate than the
image the estimate is conservative, never optimistic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..constants import MAD_TO_SIGMA


@dataclass(frozen=True)
class SystematicEstimate:
    """The systematic fraction one image uses and where it came from (written to the photometry sidecar)."""

    fraction: float
    """Fraction of the flux added in quadrature to the statistical error."""
    method: str
    """``estimated`` (from the reference sources), ``configured`` (a fixed number in the config) or
    ``fallback`` (``auto`` with too few reference sources: the configured fallback fraction)."""
    n_sources: int
    """Reference sources used (0 for configured)."""
    fraction_err: float | None = None
    """Bootstrap standard deviation of ``fraction`` (estimated only)."""
    scatter: float | None = None
    """The per-source part: excess scatter of the flux ratios about their median."""
    scale_ratio: float | None = None
    """Median flux / catalogue flux of the references: the image's flux scale against the catalogue."""
    clipped: str | None = None
    """``floor`` or ``cap`` when the raw estimate fell outside them."""
    reason: str = ""
    """Why this method and value, in words."""

    def record(self) -> dict:
        return asdict(self)


def _width(ratio: np.ndarray, rel_err: np.ndarray, mu: float, s: float) -> float:
    z = (ratio / mu - 1.0) / np.sqrt(rel_err**2 + s**2)
    return float(MAD_TO_SIGMA * np.median(np.abs(z - np.median(z))))


def excess_scatter(ratio: np.ndarray, rel_err: np.ndarray, cap: float = 1.0) -> tuple[float, float]:
    """(s_scatter, mu): the fraction that gives the ratios' normalised residuals unit robust width, and their median.

    ``rel_err`` is the statistical error of each ratio as a fraction of the
    ratio. 0 when the statistical errors already explain the scatter; ``cap``
    when even that much does not.
    """
    ratio, rel_err = np.asarray(ratio, float), np.asarray(rel_err, float)
    mu = float(np.median(ratio))
    if _width(ratio, rel_err, mu, 0.0) <= 1.0:
        return 0.0, mu
    if _width(ratio, rel_err, mu, cap) > 1.0:
        return cap, mu
    lo, hi = 0.0, cap
    for _ in range(40):  # cap / 2^40: far below any error of s
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _width(ratio, rel_err, mu, mid) > 1.0 else (lo, mid)
    return 0.5 * (lo + hi), mu


def _combined(ratio: np.ndarray, rel_err: np.ndarray, cap: float) -> tuple[float, float, float]:
    scatter, mu = excess_scatter(ratio, rel_err, cap)
    # Noise of the median: 1.253 x the standard error of the mean for normal data.
    var_mu = (1.2533 * mu) ** 2 * float(np.mean(rel_err**2 + scatter**2)) / len(ratio)
    scale2 = max(0.0, (mu - 1.0) ** 2 - var_mu)
    return float(np.sqrt(scatter**2 + scale2)), scatter, mu


def estimate_systematic(flux: np.ndarray, err_stat: np.ndarray, catalogue_flux: np.ndarray, *, floor: float,
                        cap: float, min_sources: int, fallback: float, n_boot: int = 200,
                        seed: int = 0) -> SystematicEstimate:
    """The systematic fraction of one image from its reference sources (see the module docstring).

    ``flux``, ``err_stat`` and ``catalogue_flux`` are the already-selected
    references (bright, unflagged, finite). Fewer than ``min_sources``:
    the ``fallback`` fraction, method ``fallback``.
    """
    flux, err_stat, cat = (np.asarray(a, float) for a in (flux, err_stat, catalogue_flux))
    ok = np.isfinite(flux) & np.isfinite(err_stat) & (err_stat > 0) & np.isfinite(cat) & (cat > 0) & (flux > 0)
    flux, err_stat, cat = flux[ok], err_stat[ok], cat[ok]
    n = len(flux)
    if n < min_sources:
        return SystematicEstimate(float(fallback), "fallback", n,
                                  reason=f"{n} reference source(s), fewer than {min_sources}: "
                                         f"the configured fallback fraction {fallback:g}")
    ratio = flux / cat
    rel_err = err_stat / flux
    raw, scatter, mu = _combined(ratio, rel_err, cap)
    rng = np.random.default_rng(seed)
    boot = np.array([_combined(ratio[i], rel_err[i], cap)[0] for i in rng.integers(0, n, size=(n_boot, n))])
    value = float(np.clip(raw, floor, cap))
    clipped = "floor" if raw < floor else ("cap" if raw >= cap else None)
    why = f"excess scatter of {n} reference flux ratios about their median {mu:.4f} and the scale offset"
    if clipped:
        why += f"; the raw estimate {raw:.4f} clipped to the {clipped} {value:g}"
    return SystematicEstimate(value, "estimated", n, float(np.std(boot)), float(scatter), float(mu), clipped, why)


def reference_mask(snr: np.ndarray, flags: np.ndarray, min_snr: float, ignore_flags: int) -> np.ndarray:
    """Which measurements are references: at least ``min_snr`` and no flag other than ``ignore_flags``."""
    snr = np.asarray(snr, float)
    flags = np.asarray(flags, np.int64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(snr) & (snr >= min_snr) & ((flags & ~np.int64(ignore_flags)) == 0)


__all__ = ["SystematicEstimate", "estimate_systematic", "excess_scatter", "reference_mask"]
