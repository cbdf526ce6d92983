"""A PNG preview of an image: asinh stretch, RA/Dec axes, colour bar, primary-beam contours.

The stretch runs from -5 sigma to the peak: linear through the noise (so the
noise is visible as grey texture and artefacts stand out) and logarithmic-like
above it (so a 1 Jy source and a 5 mJy one are both visible), via astropy's
asinh stretch with its knee at ~5 sigma. Contours mark where the primary beam
falls to 50% and to the correction cut-off. Large images are block-averaged
to at most ``max_pixels`` a side first.

Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch),
so it is safe in any process and needs no display.
"""

from __future__ import annotations

import os

import numpy as np


def _flux(value: float) -> str:
    return f"{value:.3g} Jy/beam" if abs(value) >= 1 else f"{value * 1e3:.3g} mJy/beam"


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return data
    ny, nx = (s // factor * factor for s in data.shape)
    d = data[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    with np.errstate(invalid="ignore"):
        return np.nanmean(d, axis=(1, 3)) if np.isnan(d).any() else d.mean(axis=(1, 3))


def render(
    image_fits: str | os.PathLike,
    png: str | os.PathLike,
    *,
    rms: float | None = None,
    pb_fits: str | os.PathLike | None = None,
    pb_cutoff: float | None = None,
    title: str | None = None,
    max_pixels: int = 1024,
    dpi: int = 100,
) -> None:
    """Write a PNG preview of the 2-D FITS image ``image_fits`` to ``png``."""
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, ImageNormalize
    from astropy.wcs import WCS
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    from dsa110_contimg.fitsimage import image_hdu
    from dsa110_contimg.stats import robust_rms

    with fits.open(image_fits) as hdul:
        header = image_hdu(hdul).header
        data = np.asarray(image_hdu(hdul).data, float)
    wcs = WCS(header).celestial
    factor = int(np.ceil(max(data.shape) / max_pixels))
    shown = _block_mean(data, factor)
    if factor > 1:
        wcs = wcs.slice((slice(None, None, factor), slice(None, None, factor)))
    if rms is None or not np.isfinite(rms) or rms <= 0:
        rms = robust_rms(data)
    finite = shown[np.isfinite(shown)]
    # The title quotes the image's peak; the block means shown are lower for a point source.
    peak = float(np.nanmax(data)) if np.isfinite(data).any() else float("nan")
    vmin = -5 * rms
    vmax = max(float(finite.max()) if finite.size else 1.0, 20 * rms, vmin + 1e-12)
    knee = np.clip(5 * rms / (vmax - vmin), 1e-4, 1.0)
    norm = ImageNormalize(vmin=vmin * 1e3, vmax=vmax * 1e3, stretch=AsinhStretch(a=float(knee)), clip=True)

    fig = Figure(figsize=(8, 7.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection=wcs)
    im = ax.imshow(shown * 1e3, origin="lower", cmap="inferno", norm=norm, interpolation="nearest")
    ax.coords[0].set_axislabel("RA (ICRS)")
    ax.coords[1].set_axislabel("Dec (ICRS)")
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = [vmin, 0.0] + [5 * rms * 5**k for k in range(12) if 5 * rms * 5**k < 0.8 * vmax] + [vmax]
    cb.set_ticks([float(f"{t * 1e3:.2g}") for t in ticks])
    unit = str(header.get("BUNIT", "Jy/beam")).strip()
    cb.set_label("m" + unit.replace("JY", "Jy").replace("BEAM", "beam") if unit.upper().startswith("JY") else f"{unit} x 1e-3")

    if pb_fits is not None:
        with fits.open(pb_fits) as hdul:
            pb = _block_mean(np.asarray(image_hdu(hdul).data, float), factor)
        levels = sorted({0.5, pb_cutoff} - {None})
        if np.nanmax(pb) > min(levels):
            cs = ax.contour(np.nan_to_num(pb), levels=levels, colors="cyan", linewidths=0.8,
                            linestyles=["--", "-"][: len(levels)])
            ax.clabel(cs, fmt=lambda v: f"PB {v:g}", fontsize=7)
    if "BMAJ" in header and "BMIN" in header:
        pix = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))
        w, h = header["BMIN"] / pix, header["BMAJ"] / pix
        ny, nx = shown.shape
        ax.add_patch(Ellipse((0.06 * nx, 0.06 * ny), max(w, 1.5), max(h, 1.5), angle=float(header.get("BPA", 0)),
                             edgecolor="white", facecolor="none", linewidth=1.0))
    label = title or os.path.basename(os.fspath(image_fits))
    ax.set_title(f"{label}\nrms {_flux(rms)}, peak {_flux(peak)}", fontsize=10)
    fig.savefig(os.fspath(png), dpi=dpi, format="png")
