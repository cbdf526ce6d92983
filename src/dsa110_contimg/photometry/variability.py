"""Variability metrics of light curves, and the per-epoch flux-scale correction.

One light curve is fluxes ``f_i`` with errors ``s_i`` (i = 1..N, in time
order). The metrics, each a short function below with its formula:

- weighted mean      xi = sum(w f) / sum(w),  w = 1 / s^2
- eta                weighted reduced chi-square about xi (Swinbank et al. 2015)
- V                  fractional standard deviation (Swinbank et al. 2015)
- Vs, m              two-epoch t-statistic and modulation index of a pair
                     of epochs (Mooley et al. 2016), for consecutive epochs
- chi2_red           reduced chi-square against the best constant, with a
                     fractional systematic error added to every point

References: Swinbank et al. 2015, Astronomy & Computing 11, 25 (the LOFAR
Transients Pipeline), eqs. 3-4; Rowlinson et al. 2019, A&C 27, 111; Mooley
et al. 2016, ApJ 818, 105, eqs. 2-3; the VAST pipeline's definitions of
``vs_abs_significant_max`` and ``m_abs_significant_max``.

Many light curves at once (:func:`grouped_metrics`): rows sorted by source
then time, ``starts`` the first row of each source; the same formulas with
``np.add.reduceat``, tested against the one-curve functions.

The flux-scale correction (:func:`flux_scale`) divides every epoch by the
median, over an ensemble of bright steady reference sources seen in that
epoch, of flux / the source's median flux.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import MAD_TO_SIGMA

# --------------------------------------------------------- one light curve


def weighted_mean(f, s) -> float:
    """xi = sum(f_i / s_i^2) / sum(1 / s_i^2)."""
    f, w = np.asarray(f, float), 1.0 / np.asarray(s, float) ** 2
    return float((w * f).sum() / w.sum())


def eta(f, s) -> float:
    """eta = 1/(N-1) sum_i (f_i - xi)^2 / s_i^2, xi the weighted mean.

    Swinbank et al. 2015 (A&C 11, 25) eq. 4 writes it
    eta = N/(N-1) [mean(w f^2) - mean(w f)^2 / mean(w)], w = 1/s^2, which is
    the same number. About 1 for a constant source with correct errors.
    """
    f, s = np.asarray(f, float), np.asarray(s, float)
    if f.size < 2:
        return float("nan")
    xi = weighted_mean(f, s)
    return float((((f - xi) / s) ** 2).sum() / (f.size - 1))


def v_index(f) -> float:
    """V = sqrt(sum (f_i - fbar)^2 / (N-1)) / fbar: the sample standard deviation over the mean.

    Swinbank et al. 2015 eq. 3 (the coefficient of variation).
    """
    f = np.asarray(f, float)
    if f.size < 2:
        return float("nan")
    return float(f.std(ddof=1) / f.mean())


def vs_pair(f1, s1, f2, s2):
    """Vs = (f1 - f2) / sqrt(s1^2 + s2^2), the two-epoch t-statistic (Mooley et al. 2016 eq. 2)."""
    return (np.asarray(f1, float) - f2) / np.sqrt(np.asarray(s1, float) ** 2 + np.asarray(s2, float) ** 2)


def m_pair(f1, f2):
    """m = 2 (f1 - f2) / (f1 + f2), the two-epoch modulation index (Mooley et al. 2016 eq. 3)."""
    f1 = np.asarray(f1, float)
    return 2.0 * (f1 - f2) / (f1 + f2)


def consecutive_pairs(f, s, vs_threshold: float = 4.3) -> tuple[float, float]:
    """(vs_max, m_max) over consecutive epoch pairs (i, i+1).

    vs_max = max |Vs|; m_max = max |m| over the pairs with |Vs| >= vs_threshold
    (0 when there is none), as the VAST pipeline's ``*_abs_significant_max``.
    NaN for fewer than two epochs.
    """
    f, s = np.asarray(f, float), np.asarray(s, float)
    if f.size < 2:
        return float("nan"), float("nan")
    vs = np.abs(vs_pair(f[1:], s[1:], f[:-1], s[:-1]))
    m = np.abs(m_pair(f[1:], f[:-1]))
    sig = vs >= vs_threshold
    return float(vs.max()), float(m[sig].max()) if sig.any() else 0.0


def chi2_red(f, s, systematic: float = 0.0) -> float:
    """Reduced chi-square of the best constant: 1/(N-1) sum (f_i - xi')^2 / s_i'^2.

    s_i'^2 = s_i^2 + (systematic x xi)^2 (a fractional flux-scale floor, e.g.
    0.01; xi from the raw errors), xi' the weighted mean with the errors s'.
    With ``systematic`` 0 it equals :func:`eta`.
    """
    f, s = np.asarray(f, float), np.asarray(s, float)
    if f.size < 2:
        return float("nan")
    s2 = np.sqrt(s**2 + (systematic * weighted_mean(f, s)) ** 2)
    return eta(f, s2)


def chi2_probability(chi2_reduced, n_epochs):
    """Probability that a constant source gives a reduced chi-square at least this large (N-1 dof)."""
    from scipy.stats import chi2

    dof = np.asarray(n_epochs, float) - 1
    with np.errstate(invalid="ignore"):
        return chi2.sf(np.asarray(chi2_reduced, float) * dof, np.where(dof > 0, dof, np.nan))


# --------------------------------------------------- many light curves


@dataclass
class Metrics:
    """Per-source arrays of :func:`grouped_metrics` (one entry per light curve)."""

    n_epochs: np.ndarray
    mean_flux: np.ndarray
    weighted_mean_flux: np.ndarray
    eta: np.ndarray
    v: np.ndarray
    vs_max: np.ndarray
    m_max: np.ndarray
    chi2_red: np.ndarray


def grouped_metrics(starts: np.ndarray, f: np.ndarray, s: np.ndarray, *, systematic: float = 0.0,
                    vs_threshold: float = 4.3) -> Metrics:
    """The metrics of many light curves at once.

    Rows are sorted by source, then time; ``starts`` (ascending, first 0) is
    the first row of each source. Every row must have finite f and s > 0.
    """
    f = np.asarray(f, float)
    s = np.asarray(s, float)
    starts = np.asarray(starts, np.int64)
    nrow = f.size
    n = np.diff(np.append(starts, nrow))
    k = len(starts)
    if k == 0:
        e = np.empty(0)
        return Metrics(np.empty(0, np.int64), e, e, e, e, e, e, e)
    group = np.repeat(np.arange(k), n)
    w = 1.0 / s**2
    sw = np.add.reduceat(w, starts)
    swf = np.add.reduceat(w * f, starts)
    xi = swf / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(n > 1, n - 1, np.nan)
        eta_v = np.add.reduceat(w * (f - xi[group]) ** 2, starts) / dof
        mean = np.add.reduceat(f, starts) / n
        var = np.add.reduceat((f - mean[group]) ** 2, starts) / dof
        v = np.sqrt(var) / mean
        s2 = s**2 + (systematic * xi[group]) ** 2
        w2 = 1.0 / s2
        xi2 = np.add.reduceat(w2 * f, starts) / np.add.reduceat(w2, starts)
        chi = np.add.reduceat(w2 * (f - xi2[group]) ** 2, starts) / dof
    # consecutive pairs within a source: rows i and i+1 of the same group
    vs_max = np.full(k, np.nan)
    m_max = np.full(k, np.nan)
    if nrow > 1:
        same = group[1:] == group[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            vs = np.abs(vs_pair(f[1:], s[1:], f[:-1], s[:-1]))
            m = np.abs(m_pair(f[1:], f[:-1]))
        pg = group[1:][same]
        vs, m = vs[same], m[same]
        has = n > 1
        vs_max[has] = 0.0
        m_max[has] = 0.0
        np.fmax.at(vs_max, pg, vs)
        sig = vs >= vs_threshold
        np.fmax.at(m_max, pg[sig], m[sig])
    return Metrics(n, mean, xi, eta_v, v, vs_max, m_max, chi)


# ---------------------------------------------------- flux-scale correction


@dataclass
class FluxScale:
    """Per-epoch flux-scale factors: corrected flux = measured / scale."""

    scale: np.ndarray
    scale_err: np.ndarray
    n_ref: np.ndarray  # reference sources used per epoch
    references: np.ndarray  # ids of the reference sources kept
    rejected: np.ndarray  # ids of candidate references rejected as variable


def _median_by(keys: np.ndarray, values: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, robust sigma, count) of ``values`` grouped by integer ``keys`` (0..n_keys-1)."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    counts = np.bincount(k, minlength=n_keys)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(n_keys, np.nan)
    has = counts > 0
    lo = first + (counts - 1) // 2
    hi = first + counts // 2
    med[has] = 0.5 * (v[lo[has]] + v[hi[has]])
    dev = np.abs(values - med[keys])
    order = np.lexsort((dev, keys))
    d = dev[order]
    mad = np.full(n_keys, np.nan)
    mad[has] = 0.5 * (d[lo[has]] + d[hi[has]])
    return med, MAD_TO_SIGMA * mad, counts


def flux_scale(epoch: np.ndarray, source: np.ndarray, flux: np.ndarray, n_epochs: int, *,
               min_sources: int = 3, max_scatter: float = 0.05, n_iter: int = 4) -> FluxScale:
    """Per-epoch flux scale from measurements of candidate reference sources.

    ``epoch`` (0..n_epochs-1), ``source`` (any integer ids) and ``flux`` are
    parallel rows: bright sources' measurements. Iterates:

        F_r = median_e (f_re / c_e)         each reference's own flux
        c_e = median_r (f_re / F_r)         each epoch's scale, normalised to median_e c_e = 1

    then drops references whose corrected fractional rms,
    std_e(f_re / (c_e F_r)), exceeds ``max_scatter`` (variables: an ESE or a
    flare among them), and repeats. An epoch with fewer than ``min_sources``
    references keeps scale 1 with error NaN. The error of c_e is the
    standard error of a median, 1.2533 x 1.4826 MAD / sqrt(n).
    """
    epoch = np.asarray(epoch, np.int64)
    flux = np.asarray(flux, float)
    ok = np.isfinite(flux) & (flux > 0)
    epoch, source, flux = epoch[ok], np.asarray(source)[ok], flux[ok]
    ids, src = np.unique(source, return_inverse=True)
    n_src = len(ids)
    keep = np.ones(n_src, bool)
    scale = np.ones(n_epochs)
    for _ in range(n_iter):
        use = keep[src]
        if not use.any():
            break
        ref_flux, _, _ = _median_by(src[use], flux[use] / scale[epoch[use]], n_src)
        ratio = flux[use] / ref_flux[src[use]]
        med, _, cnt = _median_by(epoch[use], ratio, n_epochs)
        new = np.where(cnt >= min_sources, med, np.nan)
        norm = np.nanmedian(new) if np.isfinite(new).any() else 1.0
        scale = np.where(np.isfinite(new), new / norm, 1.0)
        resid = flux / (scale[epoch] * ref_flux[src]) - 1.0
        count = np.bincount(src, minlength=n_src)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt(np.bincount(src, weights=resid**2, minlength=n_src) / np.maximum(count - 1, 1))
        new_keep = (rms <= max_scatter) & (count >= 2)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    use = keep[src]
    med, sig, cnt = _median_by(epoch[use], flux[use] / (scale[epoch[use]] * _median_by(
        src[use], flux[use] / scale[epoch[use]], n_src)[0][src[use]]), n_epochs)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(cnt >= min_sources, 1.2533 * sig / np.sqrt(cnt) * scale, np.nan)
    n_ref = np.where(cnt >= min_sources, cnt, 0)
    return FluxScale(scale, err, n_ref, ids[keep], ids[~keep])


__all__ = [
    "FluxScale",
    "Metrics",
    "chi2_probability",
    "chi2_red",
    "consecutive_pairs",
    "eta",
    "flux_scale",
    "grouped_metrics",
    "m_pair",
    "v_index",
    "vs_pair",
    "weighted_mean",
]
