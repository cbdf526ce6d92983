"""Synthetic images as the image rule writes them, for the mosaic tests and benchmark.

Each image is what the imager would give for a drift-scan observation:
point sources seen through the primary beam (an elliptical Gaussian, wider
in RA as the drift averages it), convolved with a Gaussian restoring beam,
plus noise correlated on the beam scale, on a SIN grid; 4 axes (RA, Dec,
FREQ, STOKES) with BMAJ/BMIN/BPA. Beside it: ``{group}.pb.fits`` (2-D, 1 at the
pointing) and the QA sidecar ``{group}.image.fits.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from dsa110_contimg import naming, provenance

FWHM_TO_SIGMA = 1 / np.sqrt(8 * np.log(2))


@dataclass(frozen=True)
class ImageSpec:
    npix: int = 200
    cell_arcsec: float = 60.0
    beam_arcsec: float = 240.0  # restoring beam FWHM (circular)
    pb_fwhm_deg: tuple[float, float] = (2.6, 2.2)  # (along RA, along Dec) on the sky
    rms_jy: float = 1e-3
    freq_hz: float = 1.405e9


def sin_wcs(ra_deg: float, dec_deg: float, spec: ImageSpec) -> WCS:
    w = WCS(naxis=4)
    c = spec.npix / 2 + 1  # FITS pixel of the centre (even size: a pixel corner, like CASA's npix/2+1)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    w.wcs.crval = [ra_deg, dec_deg, spec.freq_hz, 1.0]
    w.wcs.crpix = [c, c, 1.0, 1.0]
    w.wcs.cdelt = [-spec.cell_arcsec / 3600, spec.cell_arcsec / 3600, 1.0e8, 1.0]
    w.wcs.cunit = ["deg", "deg", "Hz", ""]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    return w


def primary_beam(ra_deg: float, dec_deg: float, ra: np.ndarray, dec: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """The beam at (ra, dec) for a pointing at (ra_deg, dec_deg): offsets on the sky."""
    dra = ((ra - ra_deg + 180) % 360 - 180) * np.cos(np.radians(dec))
    ddec = dec - dec_deg
    fra, fdec = spec.pb_fwhm_deg
    return np.exp(-4 * np.log(2) * ((dra / fra) ** 2 + (ddec / fdec) ** 2))


def render(ra_deg: float, dec_deg: float, sources: pd.DataFrame, spec: ImageSpec, seed: int, *,
           flux_scale: float = 1.0, noise: bool = True) -> tuple[np.ndarray, np.ndarray, WCS]:
    """(apparent image, primary beam, 4-D WCS) of one pointing."""
    w = sin_wcs(ra_deg, dec_deg, spec)
    cel = w.celestial
    n = spec.npix
    y, x = np.mgrid[0:n, 0:n]
    ra, dec = cel.wcs_pix2world(x, y, 0)
    pb = primary_beam(ra_deg, dec_deg, ra, dec, spec)
    img = np.zeros((n, n))
    s_pix = spec.beam_arcsec * FWHM_TO_SIGMA / spec.cell_arcsec
    if len(sources):
        sx, sy = cel.wcs_world2pix(sources.ra_deg.to_numpy(), sources.dec_deg.to_numpy(), 0)
        spb = primary_beam(ra_deg, dec_deg, sources.ra_deg.to_numpy(), sources.dec_deg.to_numpy(), spec)
        r = int(np.ceil(6 * s_pix))
        for xs, ys, flux, b in zip(sx, sy, sources.flux_jy.to_numpy(), spb):
            ix, iy = int(round(xs)), int(round(ys))
            if ix < -r or iy < -r or ix > n + r or iy > n + r:
                continue
            y0, y1, x0, x1 = max(0, iy - r), min(n, iy + r + 1), max(0, ix - r), min(n, ix + r + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            img[y0:y1, x0:x1] += flux_scale * flux * b * np.exp(-0.5 * ((xx - xs) ** 2 + (yy - ys) ** 2) / s_pix**2)
    if noise:
        rng = np.random.default_rng(seed)
        white = rng.standard_normal((n, n))
        corr = ndimage.gaussian_filter(white, s_pix / np.sqrt(2), mode="wrap")
        img += spec.rms_jy * corr / corr.std()
    return img, pb, w


def write_image(folder: Path, group: str, ra_deg: float, dec_deg: float, sources: pd.DataFrame,
                spec: ImageSpec = ImageSpec(), seed: int = 0, *, flux_scale: float = 1.0, noise: bool = True,
                rms_jy: float | None = None, grade: str = "good", nan_box: tuple[slice, slice] | None = None,
                all_nan: bool = False) -> dict[str, Path]:
    """Write ``{group}.image.fits``, ``.pb.fits`` and the sidecar into ``folder``; return the paths.

    ``rms_jy`` is what the sidecar says (default: the noise put in); ``nan_box``
    (numpy slices) blanks part of the image, ``all_nan`` all of it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    img, pb, w = render(ra_deg, dec_deg, sources, spec, seed, flux_scale=flux_scale, noise=noise)
    if nan_box is not None:
        img[nan_box] = np.nan
    if all_nan:
        img[:] = np.nan
    image = folder / Path(naming.product_path("", "image", group)).name
    pbfile = folder / Path(naming.product_path("", "pb", group)).name
    header = w.to_header()
    header["BMAJ"] = header["BMIN"] = spec.beam_arcsec / 3600
    header["BPA"] = 0.0
    header["BUNIT"] = "Jy/beam"
    fits.PrimaryHDU(img[None, None].astype(np.float32), header).writeto(image, overwrite=True)
    fits.PrimaryHDU(pb.astype(np.float32), w.celestial.to_header()).writeto(pbfile, overwrite=True)
    qa = {
        "rms_jy": spec.rms_jy if rms_jy is None else rms_jy,
        "peak_jy": float(np.nanmax(img)) if np.isfinite(img).any() else None,
        "beam_major_arcsec": spec.beam_arcsec, "beam_minor_arcsec": spec.beam_arcsec, "beam_pa_deg": 0.0,
        "grade": grade, "freq_hz": spec.freq_hz, "ra_deg": ra_deg, "dec_deg": dec_deg,
    }
    provenance.write_sidecar(image, kind="image", group=group, inputs=[], qa=qa)
    return {"image": image, "pb": pbfile}


def random_sources(rng: np.random.Generator, ra_range, dec_range, n: int, flux=(0.3, 3.0),
                   min_sep_deg: float = 0.25) -> pd.DataFrame:
    """``n`` sources spread over the box, at least ``min_sep_deg`` apart, log-uniform fluxes."""
    rows: list[tuple[float, float]] = []
    while len(rows) < n:
        ra, dec = rng.uniform(*ra_range), rng.uniform(*dec_range)
        if all(np.hypot((ra - r) * np.cos(np.radians(dec)), dec - d) > min_sep_deg for r, d in rows):
            rows.append((ra, dec))
    a = np.array(rows)
    f = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1]), n))
    return pd.DataFrame({"name": [f"S{i:03d}" for i in range(n)], "ra_deg": a[:, 0], "dec_deg": a[:, 1],
                         "flux_jy": f})
