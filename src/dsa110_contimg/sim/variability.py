"""Simulated variable skies: extreme scattering events, flares and steady sources over many days.

DSA-110 drifts over the same strip of sky every sidereal day, so a light
curve is one (or a few overlapping) observations a day. This module makes:

- a *population* of sources (:func:`draw_population`), each steady, with an
  ESE-like dip, a flare, or mild refractive scintillation;
- its flux at any time (:func:`fluxes`), as the per-epoch ``sky`` tables that
  :func:`dsa110_contimg.sim.observation.simulate_span` takes (:func:`epoch_sky`), and
  raw data for many days of one strip (:func:`simulate_days`: each day only the
  observations that cover the strip);
- synthetic photometry tables in the photometry stage's format
  (:func:`synthetic_photometry`), for injection-recovery studies of the
  light-curve fan-in without imaging;
- synthetic images (:func:`synthetic_image`): point sources convolved with a
  Gaussian restoring beam, seen through a primary beam, with noise correlated
  like the beam, on a SIN projection, for testing forced photometry.

ESE profile: a one-dimensional Gaussian plasma lens (Clegg, Fey & Lazio 1998,
ApJ 496, 253) moving across a compact source. A ray through the lens at
``u`` (in lens widths) reaches the observer at ``u' = u (1 + alpha exp(-u^2))``
(an over-dense, diverging lens); the magnification is the ray density,
``G(u') = sum 1 / |du'/du|`` over the rays reaching ``u'``, smoothed by the
source's size. The centre dims to ``1 / (1 + alpha)`` for a point source; the
rays pushed out of the centre pile up on either side, the brightening at the
dip's edges (caustics for ``alpha > 2.24``). ``duration_days`` is the dip's
full width at half its depth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import MJD_UNIX_EPOCH

SIDEREAL_DAY_S = 86164.0905
KINDS = ("steady", "ese", "flare", "scintillating")

# ------------------------------------------------------------- profiles


@lru_cache(maxsize=4096)
def _lens_profile(alpha: float, source_size: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(u', G, width) of the Gaussian lens on a grid of u' in [-6, 6] (cached by rounded parameters).

    ``width`` is the full width (in u') of the region where G is below
    1 - depth / 2, depth = 1 - min G.
    """
    from scipy.ndimage import gaussian_filter1d

    dv = 0.005
    grid = np.arange(-6.0, 6.0 + dv / 2, dv)
    u = np.arange(-9.0, 9.0, dv / 10)
    uo = u * (1.0 + alpha * np.exp(-u * u))
    p = (uo - grid[0]) / dv
    i = np.floor(p).astype(np.int64)
    f = p - i
    weight = 0.1  # (dv / 10) / dv: each ray carries its share of the uniform density
    n = grid.size
    ok = (i >= 0) & (i < n - 1)
    g = np.bincount(i[ok], weights=(1 - f[ok]) * weight, minlength=n + 1)[:n]
    g += np.bincount(i[ok] + 1, weights=f[ok] * weight, minlength=n + 1)[:n]
    if source_size > 0:
        g = gaussian_filter1d(g, source_size / dv, mode="nearest")
    below = np.flatnonzero(g < 1.0 - (1.0 - g.min()) / 2)
    width = float(grid[below[-1]] - grid[below[0]]) if below.size else 2.0
    return grid, g, width


def ese_profile(t, t0: float, duration_days: float, alpha: float, source_size: float = 0.1) -> np.ndarray:
    """Fractional flux (1 = quiescent) of a source crossed by a Gaussian plasma lens at times ``t``.

    Centred on ``t0`` (days); ``duration_days`` the full width of the dip at
    half its depth; ``alpha`` the lens strength (point-source depth
    alpha / (1 + alpha)); ``source_size`` the source's Gaussian width in lens
    widths (both rounded to 0.01, so profiles can be cached). The edge
    brightening lies just outside the half-depth width. See the module docstring.
    """
    grid, g, width = _lens_profile(round(float(alpha), 2), round(float(source_size), 2))
    uo = (np.asarray(t, float) - t0) / duration_days * width
    return np.interp(uo, grid, g, left=1.0, right=1.0)


def alpha_for_depth(depth: float) -> float:
    """Lens strength whose point-source central dip has fractional ``depth``: alpha = d / (1 - d)."""
    if not 0 < depth < 1:
        raise ValueError(f"depth must be in (0, 1), got {depth}")
    return depth / (1.0 - depth)


def ese_depth(alpha: float, source_size: float) -> float:
    """Realised depth (1 - minimum) of the smoothed lens profile."""
    _, g, _ = _lens_profile(round(float(alpha), 2), round(float(source_size), 2))
    return float(1.0 - g.min())


def flare_profile(t, t0: float, amplitude: float, rise_days: float, decay_days: float) -> np.ndarray:
    """1 + amplitude x (Gaussian rise of width ``rise_days`` before ``t0``, exponential decay after)."""
    dt = np.asarray(t, float) - t0
    shape = np.where(dt < 0, np.exp(-0.5 * (dt / rise_days) ** 2), np.exp(-np.clip(dt, 0, None) / decay_days))
    return 1.0 + amplitude * shape


def scintillation_profile(t, mod_index: float, timescale_days: float, seed: int) -> np.ndarray:
    """1 + a smooth random process of rms ``mod_index`` and correlation time ``timescale_days``.

    A sum of 64 random sinusoids whose frequencies follow a Gaussian power
    spectrum (a stationary Gaussian process with a Gaussian autocorrelation).
    """
    rng = np.random.default_rng(seed)
    k = 64
    freq = np.abs(rng.normal(0.0, 1.0 / (2 * np.pi * timescale_days), k))
    phase = rng.uniform(0, 2 * np.pi, k)
    t = np.asarray(t, float)
    x = np.sqrt(2.0 / k) * np.cos(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None]).sum(0)
    return 1.0 + mod_index * x


# ----------------------------------------------------------- population


POPULATION_COLUMNS = (
    "name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "kind", "t0_mjd", "duration_days", "alpha",
    "source_size", "depth", "amplitude", "rise_days", "decay_days", "mod_index", "timescale_days", "seed",
)


def draw_population(
    n_steady: int,
    n_ese: int = 0,
    n_flare: int = 0,
    n_scintillating: int = 0,
    *,
    mjd_range: tuple[float, float],
    ra_range: tuple[float, float] = (120.0, 130.0),
    dec_range: tuple[float, float] = (31.0, 35.0),
    flux_range: tuple[float, float] = (0.01, 1.0),
    depth_range: tuple[float, float] = (0.5, 0.8),
    duration_range: tuple[float, float] = (14.0, 90.0),
    source_size_range: tuple[float, float] = (0.02, 0.1),
    flare_amplitude_range: tuple[float, float] = (0.5, 3.0),
    mod_index: float = 0.02,
    seed: int = 0,
    prefix: str = "VAR",
) -> pd.DataFrame:
    """A population of sources with log-uniform fluxes; columns :data:`POPULATION_COLUMNS`.

    ESE dips have point-source depths uniform in ``depth_range``, full widths
    at half depth uniform in ``duration_range``, and are centred so the dip
    and its brightened edges lie inside ``mjd_range``;
    the ``depth`` column holds the realised depth after smoothing by the
    source size. Unused parameters of a kind are NaN.
    """
    rng = np.random.default_rng(seed)
    counts = {"steady": n_steady, "ese": n_ese, "flare": n_flare, "scintillating": n_scintillating}
    n = sum(counts.values())
    kind = np.concatenate([[k] * c for k, c in counts.items()]).astype(object) if n else np.array([], object)
    lo, hi = mjd_range
    nan = np.full(n, np.nan)
    pop = pd.DataFrame(
        {
            "name": [f"{prefix}{i:06d}" for i in range(n)],
            "ra_deg": rng.uniform(*ra_range, n),
            "dec_deg": rng.uniform(*dec_range, n),
            "flux_jy": np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n)),
            "spectral_index": rng.normal(-0.7, 0.2, n),
            "kind": kind,
            "t0_mjd": nan.copy(), "duration_days": nan.copy(), "alpha": nan.copy(), "source_size": nan.copy(),
            "depth": nan.copy(), "amplitude": nan.copy(), "rise_days": nan.copy(), "decay_days": nan.copy(),
            "mod_index": nan.copy(), "timescale_days": nan.copy(),
            "seed": rng.integers(0, 2**31 - 1, n),
        }
    )
    ese = np.flatnonzero(kind == "ese")
    if len(ese):
        dur = rng.uniform(*duration_range, len(ese))
        dur = np.minimum(dur, 0.6 * (hi - lo))
        pop.loc[ese, "duration_days"] = dur
        pop.loc[ese, "t0_mjd"] = rng.uniform(lo + 0.8 * dur, hi - 0.8 * dur)
        pop.loc[ese, "alpha"] = [alpha_for_depth(d) for d in rng.uniform(*depth_range, len(ese))]
        pop.loc[ese, "source_size"] = rng.uniform(*source_size_range, len(ese))
        pop.loc[ese, "depth"] = [ese_depth(a, s) for a, s in zip(pop.alpha[ese], pop.source_size[ese])]
    fl = np.flatnonzero(kind == "flare")
    if len(fl):
        margin = min(5.0, 0.1 * (hi - lo))
        pop.loc[fl, "t0_mjd"] = rng.uniform(lo + margin, hi - margin, len(fl))
        pop.loc[fl, "amplitude"] = rng.uniform(*flare_amplitude_range, len(fl))
        pop.loc[fl, "rise_days"] = rng.uniform(0.5, 3, len(fl))
        pop.loc[fl, "decay_days"] = rng.uniform(3, 20, len(fl))
    sc = np.flatnonzero(kind == "scintillating")
    if len(sc):
        pop.loc[sc, "mod_index"] = mod_index
        pop.loc[sc, "timescale_days"] = rng.uniform(2, 10, len(sc))
    return pop


def factors(pop: pd.DataFrame, mjd) -> np.ndarray:
    """Fractional flux (sources x epochs) of a population at times ``mjd``."""
    mjd = np.atleast_1d(np.asarray(mjd, float))
    out = np.ones((len(pop), mjd.size))
    for i, row in enumerate(pop.itertuples(index=False)):
        if row.kind == "ese":
            out[i] = ese_profile(mjd, row.t0_mjd, row.duration_days, row.alpha, row.source_size)
        elif row.kind == "flare":
            out[i] = flare_profile(mjd, row.t0_mjd, row.amplitude, row.rise_days, row.decay_days)
        elif row.kind == "scintillating":
            out[i] = scintillation_profile(mjd, row.mod_index, row.timescale_days, int(row.seed))
    return out


def fluxes(pop: pd.DataFrame, mjd) -> np.ndarray:
    """True flux density (Jy; sources x epochs) of a population at times ``mjd``."""
    return pop.flux_jy.to_numpy(float)[:, None] * factors(pop, mjd)


def epoch_sky(pop: pd.DataFrame, mjd: float) -> pd.DataFrame:
    """The sky at one time, as :func:`dsa110_contimg.sim.observation.simulate_span` takes it."""
    sky = pop[["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "kind"]].copy()
    sky["flux_jy"] = fluxes(pop, mjd)[:, 0]
    return sky.reset_index(drop=True)


def catalogue_of(pop: pd.DataFrame) -> pd.DataFrame:
    """The reference catalogue a survey would have: names, positions, quiescent fluxes."""
    return pop[["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "kind"]].reset_index(drop=True)


# --------------------------------------------------------------- times


def mjd_of(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp() / 86400.0 + MJD_UNIX_EPOCH


def datetime_of(mjd: float) -> datetime:
    return datetime.fromtimestamp((mjd - MJD_UNIX_EPOCH) * 86400.0, tz=UTC)


def strip_starts(first: datetime, n_days: int, every_days: int = 1) -> list[datetime]:
    """Start of the observation(s) covering the same strip on each of ``n_days`` (sidereal days apart)."""
    return [first + timedelta(seconds=k * every_days * SIDEREAL_DAY_S) for k in range(n_days)]


def epoch_mjds(first_mjd: float, n_days: int, per_day: int = 1, spacing_s: float = 309.2,
               every_days: int = 1) -> np.ndarray:
    """Times (MJD) of ``per_day`` consecutive observations on each of ``n_days`` sidereal days."""
    day = first_mjd + np.arange(n_days) * every_days * SIDEREAL_DAY_S / 86400.0
    return (day[:, None] + np.arange(per_day)[None, :] * spacing_s / 86400.0).ravel()


def simulate_days(out_dir: str | os.PathLike, opts, pop: pd.DataFrame, n_days: int, truth_dir=None,
                  every_days: int = 1) -> list[Path]:
    """Raw data of the same strip on ``n_days`` days: each day ``opts.n_obs`` observations from
    ``opts.start`` plus whole sidereal days, with the population's fluxes of that day.

    With ``opts.calibrators``, the catalogue calibrators that pass through the
    beam are added to every day's sky (steady), as the simulator does for its
    own random sky. Each day's truth goes to ``truth/days/<date>/``;
    ``truth/sky.csv`` is the reference catalogue (quiescent fluxes, with the
    calibrators) and ``truth/population.csv`` the injected variability.
    Returns the raw files written.
    """
    from dsa110_contimg.sim.observation import make_sky, simulate_span

    out_dir = Path(out_dir)
    truth = Path(truth_dir) if truth_dir else out_dir.parent / "truth"
    written: list[Path] = []
    cals = pd.DataFrame(columns=["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "kind"])
    if opts.calibrators:
        cals = make_sky(replace(opts, n_sources=0), np.random.default_rng(0))
    for start in strip_starts(opts.start, n_days, every_days):
        mid = mjd_of(start) + opts.n_obs * opts.n_int * 12.884901888 / 2 / 86400
        day_opts = replace(opts, start=start, seed=opts.seed + int(mid) % 100000)
        sky = pd.concat([epoch_sky(pop, mid), cals], ignore_index=True) if len(cals) else epoch_sky(pop, mid)
        written += simulate_span(out_dir, day_opts, truth / "days" / start.strftime("%Y-%m-%d"), sky=sky)
    truth.mkdir(parents=True, exist_ok=True)
    catalogue = catalogue_of(pop)
    if len(cals):
        catalogue = pd.concat([catalogue, cals[list(catalogue.columns)]], ignore_index=True)
    catalogue.to_csv(truth / "sky.csv", index=False)
    pop.to_csv(truth / "population.csv", index=False)
    return written


# ---------------------------------------------------- synthetic photometry


def synthetic_photometry(
    results_dir: str | os.PathLike,
    pop: pd.DataFrame,
    mjds,
    *,
    noise_jy: float | np.ndarray = 1e-3,
    scale_rms: float = 0.02,
    detect_fraction: float = 1.0,
    bad_fraction: float = 0.0,
    seed: int = 0,
    sidecars: bool = True,
) -> tuple[list[Path], np.ndarray]:
    """Per-epoch photometry tables, as the photometry stage writes them, from a population.

    Each source is measured at every epoch (or a random ``detect_fraction``
    of them: it falls off the image) with Gaussian noise of ``noise_jy``
    (per source, or one value), after a per-epoch flux-scale error
    ``1 + N(0, scale_rms)`` common to all sources of the epoch (what the
    ensemble correction must remove). ``bad_fraction`` of the rows get flux
    NaN and flag no_data, as NaN pixels at the position would give. Writes
    ``results/photometry/{group}.parquet`` (+ sidecar), the group named after
    the epoch time. Returns (paths, per-epoch scale errors).
    """
    from dsa110_contimg.photometry.forced import Flag

    from .. import naming
    from ..provenance import atomic_output, write_sidecar

    rng = np.random.default_rng(seed)
    mjds = np.asarray(mjds, float)
    true = fluxes(pop, mjds)
    sigma = np.broadcast_to(np.asarray(noise_jy, float), (len(pop),))
    scale = 1.0 + rng.normal(0.0, scale_rms, mjds.size)
    paths = []
    names = pop.name.astype(str).to_numpy()
    for e, mjd in enumerate(mjds):
        group = naming.format_timestamp(datetime_of(mjd))
        keep = rng.random(len(pop)) < detect_fraction
        n = int(keep.sum())
        flux = true[keep, e] * scale[e] + rng.normal(0, 1, n) * sigma[keep]
        flags = np.zeros(n, np.int32)
        bad = rng.random(n) < bad_fraction
        flux[bad] = np.nan
        flags[bad] |= Flag.NO_DATA
        err = sigma[keep].copy()
        err[bad] = np.nan
        pb = rng.uniform(0.3, 1.0, n)
        table = pd.DataFrame(
            {
                "source": names[keep], "ra_deg": pop.ra_deg.to_numpy()[keep], "dec_deg": pop.dec_deg.to_numpy()[keep],
                "catalogue_flux_jy": pop.flux_jy.to_numpy()[keep], "flux_jy": flux, "flux_err_jy": err,
                "local_rms_jy": err, "snr": flux / err, "pb": pb, "x_pix": np.zeros(n), "y_pix": np.zeros(n),
                "n_blend": np.ones(n, np.int32), "flags": flags, "mjd": np.full(n, mjd),
            }
        )
        path = Path(naming.product_path(results_dir, "photometry", group))
        with atomic_output(path) as tmp:
            table.to_parquet(tmp, index=False)
        if sidecars:
            write_sidecar(path, kind="photometry", group=group, inputs=[], qa={
                "mjd": float(mjd), "n_sources": n, "n_flagged": int(bad.sum()), "image_grade": "good",
                "synthetic": True})
        paths.append(path)
    return paths, scale


# -------------------------------------------------------- synthetic images


@dataclass
class SyntheticImage:
    """A synthetic image set: what the imaging stage writes for one observation."""

    image: np.ndarray  # restored, not beam-corrected (Jy/beam)
    residual: np.ndarray
    pb: np.ndarray
    pbcor: np.ndarray
    header: object  # 2-D celestial header with BMAJ/BMIN/BPA (deg), BUNIT, FREQ
    wcs: object
    sources: pd.DataFrame  # name, ra_deg, dec_deg, flux_jy (true, intrinsic), x_pix, y_pix, pb
    noise_jy: float


def sin_wcs(shape: tuple[int, int], cell_arcsec: float, ra0: float, dec0: float):
    """A SIN-projection celestial WCS centred on (ra0, dec0), RA increasing to the left."""
    from astropy.wcs import WCS

    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [nx / 2 + 1, ny / 2 + 1]
    w.wcs.cdelt = [-cell_arcsec / 3600, cell_arcsec / 3600]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    return w


def correlated_noise(shape: tuple[int, int], inv_beam: np.ndarray, sigma: float, rng) -> np.ndarray:
    """Gaussian noise of rms ``sigma`` whose autocorrelation is the beam (inverse covariance ``inv_beam``, pixels).

    White noise convolved (FFT) with a Gaussian of half the beam's
    covariance: the autocorrelation of the result has the beam's covariance.
    """
    ny, nx = shape
    cov = np.linalg.inv(inv_beam) / 2.0
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    # Fourier transform of exp(-0.5 r^T K r): exp(-2 pi^2 f^T cov f)
    transfer = np.exp(-2 * np.pi**2 * (cov[0, 0] * fx * fx + 2 * cov[0, 1] * fx * fy + cov[1, 1] * fy * fy))
    white = rng.standard_normal(shape, dtype=np.float32)
    out = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=shape)
    return (out * (sigma / out.std())).astype(np.float32)


def synthetic_image(
    sources: pd.DataFrame | None = None,
    *,
    shape: tuple[int, int] = (512, 512),
    cell_arcsec: float = 4.0,
    beam_arcsec: tuple[float, float, float] = (18.0, 14.0, 30.0),
    ra0: float = 150.0,
    dec0: float = 33.0,
    noise_jy: float = 1e-3,
    pb_fwhm_deg: float | None = 2.7,
    pb_cutoff: float = 0.1,
    freq_hz: float = 1.405e9,
    seed: int = 0,
) -> SyntheticImage:
    """Point sources (intrinsic fluxes, Jy) x primary beam, convolved with the restoring beam, plus
    beam-correlated noise; the beam-corrected image is blanked (NaN) below ``pb_cutoff``.

    ``sources`` has name, ra_deg, dec_deg, flux_jy (None: no sources). The
    primary beam is a circular Airy pattern of FWHM ``pb_fwhm_deg`` at the
    centre (None: 1 everywhere).
    """
    from dsa110_contimg.photometry.forced import (
        Beam,
        beam_inverse_covariance,
        gaussian,
    )

    rng = np.random.default_rng(seed)
    ny, nx = shape
    wcs = sin_wcs(shape, cell_arcsec, ra0, dec0)
    beam = Beam(beam_arcsec[0] / 3600, beam_arcsec[1] / 3600, beam_arcsec[2])
    inv = beam_inverse_covariance(wcs, beam)
    yy, xx = np.mgrid[0:ny, 0:nx]
    if pb_fwhm_deg is not None:
        from scipy.special import j1

        cx, cy = wcs.wcs.crpix - 1
        theta = np.radians(np.hypot(xx - cx, yy - cy) * cell_arcsec / 3600)
        x = np.pi * 1.02899 * np.sin(theta) / np.radians(pb_fwhm_deg)
        x = np.where(x < 1e-8, 1e-8, x)
        pb = ((2 * j1(x) / x) ** 2).astype(np.float32)
    else:
        pb = np.ones(shape, np.float32)
    noise = correlated_noise(shape, inv, noise_jy, rng)
    sky = np.zeros(shape, np.float32)
    table = pd.DataFrame(columns=["name", "ra_deg", "dec_deg", "flux_jy"]) if sources is None else sources.copy()
    if len(table):
        sx, sy = wcs.all_world2pix(table.ra_deg.to_numpy(float), table.dec_deg.to_numpy(float), 0)
        from scipy.ndimage import map_coordinates

        spb = map_coordinates(pb.astype(float), [sy, sx], order=1, mode="nearest")
        half = int(np.ceil(5 * beam.major_deg * 3600 / cell_arcsec))
        for xs, ys, s, p in zip(sx, sy, table.flux_jy.to_numpy(float), spb):
            ix, iy = int(round(xs)), int(round(ys))
            x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
            if x0 >= x1 or y0 >= y1:
                continue
            gy, gx = np.mgrid[y0:y1, x0:x1]
            sky[y0:y1, x0:x1] += s * p * gaussian(inv, gx - xs, gy - ys)
        table["x_pix"], table["y_pix"], table["pb"] = sx, sy, spb
    image = sky + noise
    with np.errstate(invalid="ignore", divide="ignore"):
        pbcor = np.where(pb >= pb_cutoff, image / pb, np.nan).astype(np.float32)
    header = wcs.to_header()
    header["BMAJ"], header["BMIN"], header["BPA"] = beam.major_deg, beam.minor_deg, beam.pa_deg
    header["BUNIT"] = "Jy/beam"
    header["FREQ"] = freq_hz
    return SyntheticImage(image, noise, pb, pbcor, header, wcs, table, noise_jy)


def write_synthetic_fits(img: SyntheticImage, prefix: str | os.PathLike, four_d: bool = True) -> dict[str, Path]:
    """Write ``{prefix}.image.fits``, ``.residual.fits``, ``.pb.fits``, ``.pbcor.fits``.

    ``four_d``: as CASA/WSClean write them (RA, Dec, FREQ, STOKES axes).
    """
    from astropy.io import fits

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, data in (("image", img.image), ("residual", img.residual), ("pb", img.pb), ("pbcor", img.pbcor)):
        hdr = img.header.copy()
        arr = np.asarray(data, np.float32)
        if four_d:
            hdr["NAXIS"] = 4
            hdr["CTYPE3"], hdr["CRVAL3"], hdr["CDELT3"], hdr["CRPIX3"], hdr["CUNIT3"] = "FREQ", hdr["FREQ"], 1.87e8, 1.0, "Hz"
            hdr["CTYPE4"], hdr["CRVAL4"], hdr["CDELT4"], hdr["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
            arr = arr[None, None]
        if kind == "pb":
            hdr["BUNIT"] = ""
        path = Path(f"{prefix}.{kind}.fits")
        fits.PrimaryHDU(data=arr, header=hdr).writeto(path, overwrite=True)
        out[kind] = path
    return out


__all__ = [
    "KINDS",
    "POPULATION_COLUMNS",
    "SyntheticImage",
    "alpha_for_depth",
    "catalogue_of",
    "correlated_noise",
    "draw_population",
    "epoch_mjds",
    "epoch_sky",
    "ese_depth",
    "ese_profile",
    "factors",
    "flare_profile",
    "fluxes",
    "scintillation_profile",
    "simulate_days",
    "strip_starts",
    "synthetic_image",
    "synthetic_photometry",
    "write_synthetic_fits",
]
