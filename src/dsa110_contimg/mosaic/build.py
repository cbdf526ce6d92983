"""Mosaic build: primary-beam-weighted linear mosaic streamed one image at a time."""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import INTERPOLATION_MARGIN, MosaicError, log
from .plan import (
    ImageEntry,
    Plan,
    _celestial,
    grid_centre,
    grid_extent_deg,
    memory_estimate_mb,
)

# ------------------------------------------------------------------ build


@dataclass
class Sums:
    """The running sums of a mosaic: sum B I / s^2, sum B^2 / s^2, and images per pixel."""

    num: np.ndarray
    den: np.ndarray
    count: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> Sums:
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape, np.uint16))


def read_plane(path: str | os.PathLike) -> tuple[np.ndarray, Any, Any]:
    """The first 2-D plane of a FITS image (float32), its celestial WCS and header."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        hdu = next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)
        if hdu is None:
            raise MosaicError(f"{path}: no image data")
        header = hdu.header.copy()
        data = hdu.data
        while data.ndim > 2:
            data = data[0]
        plane = np.array(data, dtype=np.float32)
        del data, hdu
    return plane, _celestial(header, os.fspath(path)), header


def _same_grid(a, b, shape_a, shape_b) -> bool:
    return (shape_a == shape_b and list(a.wcs.ctype) == list(b.wcs.ctype)
            and np.allclose(a.wcs.crval, b.wcs.crval, rtol=0, atol=1e-9)
            and np.allclose(a.wcs.crpix, b.wcs.crpix, rtol=0, atol=1e-6)
            and np.allclose(a.pixel_scale_matrix, b.pixel_scale_matrix, rtol=1e-9, atol=0))


def _output_box(in_wcs, in_box: tuple[int, int, int, int], out_wcs, out_shape) -> tuple[slice, slice] | None:
    """The part of the output grid that an input's box (y0, y1, x0, x1) falls on, or None."""
    y0, y1, x0, x1 = in_box
    n = 33
    t = np.linspace(0, 1, n)
    along_x, along_y = x0 - 0.5 + t * (x1 - x0), y0 - 0.5 + t * (y1 - y0)
    xs = np.concatenate([along_x, np.full(n, x1 - 0.5), along_x, np.full(n, x0 - 0.5)])
    ys = np.concatenate([np.full(n, y0 - 0.5), along_y, np.full(n, y1 - 0.5), along_y])
    ra, dec = in_wcs.wcs_pix2world(xs, ys, 0)
    ox, oy = out_wcs.wcs_world2pix(ra, dec, 0)
    good = np.isfinite(ox) & np.isfinite(oy)
    if not good.any():
        return None
    ox, oy = ox[good], oy[good]
    ny, nx = out_shape
    c0, c1 = max(0, math.floor(ox.min()) - 1), min(nx, math.ceil(ox.max()) + 2)
    r0, r1 = max(0, math.floor(oy.min()) - 1), min(ny, math.ceil(oy.max()) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def add_image(sums: Sums, out_wcs, entry: ImageEntry, pb_cutoff: float, interpolation: str) -> int:
    """Reproject one image onto the part of the grid it covers and add it to ``sums``.

    Returns the number of output pixels it contributed to (0: none, e.g. all blank).
    """
    from reproject import reproject_interp
    from scipy import ndimage

    img, wcs, _ = read_plane(entry.image)
    pb, pb_wcs, _ = read_plane(entry.pb)
    if not _same_grid(wcs, pb_wcs, img.shape, pb.shape):
        pb = reproject_interp((pb, pb_wcs), wcs, img.shape, order="bilinear", return_footprint=False).astype(np.float32)
        del pb_wcs
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(img) & np.isfinite(pb) & (pb >= pb_cutoff)
    if not valid.any():
        return 0
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = _output_box(wcs, (y0, y1, x0, x1), out_wcs, sums.num.shape)
    if box is None:
        return 0
    sub_in = wcs[y0:y1, x0:x1]
    valid = valid[y0:y1, x0:x1]
    margin = INTERPOLATION_MARGIN[interpolation]
    core = ndimage.binary_erosion(valid, iterations=margin, border_value=0) if margin > 1 else valid
    stack = np.empty((3, y1 - y0, x1 - x0), np.float32)
    p = pb[y0:y1, x0:x1]
    np.multiply(p, img[y0:y1, x0:x1], out=stack[0])
    np.multiply(p, p, out=stack[1])
    stack[0][~valid] = 0.0
    stack[1][~valid] = 0.0
    stack[2] = core
    del img, pb, p, valid, core
    rs, cs = box
    sub_out = out_wcs[rs, cs]
    shape = (rs.stop - rs.start, cs.stop - cs.start)
    out = np.empty((3, *shape), np.float32)
    reproject_interp((stack, sub_in), sub_out, shape_out=(3, *shape), order=interpolation,
                     output_array=out, return_footprint=False, roundtrip_coords=False)
    del stack
    with np.errstate(invalid="ignore"):
        ok = (out[2] > 0.5) & np.isfinite(out[0]) & np.isfinite(out[1]) & (out[1] > 0)
    inv_var = 1.0 / (entry.rms_jy * entry.rms_jy)
    num, den, count = sums.num[rs, cs], sums.den[rs, cs], sums.count[rs, cs]
    num[ok] += out[0][ok] * inv_var
    den[ok] += out[1][ok] * inv_var
    count[ok] += 1
    return int(ok.sum())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB).

    Linux's VmHWM: ru_maxrss also counts the parent's memory this process
    inherited at fork before its exec (a job started by a large snakemake or
    pytest would report the parent's size). Elsewhere, ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(plan: Plan, outputs: Mapping[str, str | os.PathLike], logger: logging.Logger | None = None) -> dict:
    """Make the mosaic, noise and weights maps of ``plan`` (see the module docstring).

    ``outputs`` maps ``mosaic``, ``mosaic_noise`` and ``mosaic_weights`` to the
    paths to write (each replaced atomically, only once all are complete).
    Returns the mosaic's figures (its sidecar's ``qa``). Raises
    :class:`MosaicError` when the plan chose no image, naming the reasons.
    """
    lg = logger or log
    if plan.grid is None or not plan.images:
        reasons = "; ".join(f"{r['group']}: {r['reason']}" for r in plan.rejected[:10])
        more = f" and {len(plan.rejected) - 10} more" if len(plan.rejected) > 10 else ""
        raise MosaicError(
            f"{plan.selection.describe()}: the plan chose no image out of {len(plan.rejected)} candidate(s)"
            + (f" ({reasons}{more})" if reasons else "") + "; no mosaic is made"
        )
    t0 = time.perf_counter()
    grid = plan.grid
    out_wcs = grid.wcs()
    sums = Sums.zeros(grid.shape)
    lg.info("%s: %d images onto a %d x %d %s grid of %g arcsec pixels (about %.0f MB)", plan.selection.describe(),
            len(plan.images), grid.shape[1], grid.shape[0], grid.ctype[0][-3:], plan.options.pixel_arcsec,
            memory_estimate_mb(plan))
    empty: list[str] = []
    report_every = max(1, len(plan.images) // 20)
    for i, entry in enumerate(plan.images, 1):
        n = add_image(sums, out_wcs, entry, plan.options.pb_cutoff, plan.options.interpolation)
        if n == 0:
            empty.append(entry.group)
            lg.warning("%s adds nothing to the mosaic (blank, or off the grid)", entry.image)
        if i % report_every == 0 or i == len(plan.images):
            lg.info("%d/%d images added, %.1f s, peak memory %.0f MB", i, len(plan.images),
                    time.perf_counter() - t0, peak_rss_mb())
    t_sum = time.perf_counter() - t0
    qa = _write_maps(plan, sums, outputs)
    qa.update(
        n_images_blank=len(empty), blank_images=empty, build_s=time.perf_counter() - t0, sum_s=t_sum,
        peak_rss_mb=peak_rss_mb(),
    )
    return qa


def _beam(plan: Plan) -> tuple[float, float, float] | None:
    """Median restoring beam of the images (arcsec, arcsec, deg), if they say."""
    rows = [(e.beam_major_arcsec, e.beam_minor_arcsec, e.beam_pa_deg) for e in plan.images]
    rows = [r for r in rows if None not in r]
    if not rows:
        return None
    return tuple(float(v) for v in np.median(np.array(rows), axis=0))  # type: ignore[return-value]


def _write_maps(plan: Plan, sums: Sums, outputs: Mapping[str, str | os.PathLike]) -> dict:
    from astropy.io import fits

    grid = plan.grid
    assert grid is not None
    header = grid.header()
    beam = _beam(plan)
    freqs = [e.freq_hz for e in plan.images if e.freq_hz]
    groups = sorted(e.group for e in plan.images)
    cards = {
        "BTYPE": "Intensity", "BUNIT": "Jy/beam", "TIER": plan.tier, "MOSAIC": plan.name,
        "NIMAGES": len(plan.images), "PBCUTOFF": plan.options.pb_cutoff, "DATE-BEG": groups[0], "DATE-END": groups[-1],
        "ORIGIN": "dsa110_contimg", "INTERP": plan.options.interpolation,
    }
    if beam is not None:
        cards.update(BMAJ=beam[0] / 3600, BMIN=beam[1] / 3600, BPA=beam[2])
    if freqs:
        cards["RESTFRQ"] = float(np.median(freqs))
    for key, value in cards.items():
        header[key] = value
    header.add_history("Primary-beam-weighted linear mosaic: sum(B I/s^2)/sum(B^2/s^2) of restored images I,")
    header.add_history("beams B and rms s (dsa110_contimg.mosaic).")

    covered = sums.den > 0
    n_covered = int(covered.sum())
    max_count = int(sums.count.max()) if sums.count.size else 0
    paths = {k: Path(outputs[k]) for k in ("mosaic", "mosaic_noise", "mosaic_weights")}
    tmp = {k: p.parent / f".{p.name}.tmp-{os.getpid()}" for k, p in paths.items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Mosaic: num / den in place (num is not needed afterwards).
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(sums.num, sums.den, out=sums.num)
        sums.num[~covered] = np.nan
        finite = sums.num[covered]
        peak = float(np.nanmax(finite)) if finite.size else math.nan
        fits.PrimaryHDU(sums.num.astype(np.float32), header).writeto(tmp["mosaic"], overwrite=True)
        del finite
        sums.num = np.empty(0)
        # Weights (sum B^2/s^2, 1/Jy^2) and images per pixel.
        wh = header.copy()
        wh["BUNIT"], wh["BTYPE"] = "1/(Jy/beam)^2", "Weight"
        ch = header.copy()
        ch["EXTNAME"], ch["BUNIT"], ch["BTYPE"] = "NIMAGES", "", "Images per pixel"
        fits.HDUList([fits.PrimaryHDU(sums.den.astype(np.float32), wh),
                      fits.ImageHDU(sums.count, ch)]).writeto(tmp["mosaic_weights"], overwrite=True)
        # Noise (Jy/beam): 1 / sqrt(den), in place.
        with np.errstate(divide="ignore"):
            np.sqrt(sums.den, out=sums.den)
            np.divide(1.0, sums.den, out=sums.den)
        sums.den[~covered] = np.nan
        noise = sums.den[covered]
        rms_min = float(noise.min()) if noise.size else math.nan
        rms_median = float(np.median(noise)) if noise.size else math.nan
        del noise
        nh = header.copy()
        nh["BTYPE"] = "Noise"
        fits.PrimaryHDU(sums.den.astype(np.float32), nh).writeto(tmp["mosaic_noise"], overwrite=True)
        for k in paths:
            os.replace(tmp[k], paths[k])
    finally:
        for t in tmp.values():
            if t.exists():
                t.unlink()
    ra, dec = grid_centre(grid)
    width, height = grid_extent_deg(grid)
    return {
        "tier": plan.tier, "name": plan.name, "n_images": len(plan.images), "time_start": groups[0],
        "time_end": groups[-1], "ra_deg": ra, "dec_deg": dec, "width_deg": width, "height_deg": height,
        "pixel_arcsec": plan.options.pixel_arcsec, "projection": grid.ctype[0][-3:], "shape": list(grid.shape),
        "covered_fraction": n_covered / max(grid.n_pixels, 1), "max_images_per_pixel": max_count,
        "peak_jy": peak, "noise_min_jy": rms_min, "noise_median_jy": rms_median,
        "beam_major_arcsec": beam[0] if beam else None, "beam_minor_arcsec": beam[1] if beam else None,
        "beam_pa_deg": beam[2] if beam else None, "freq_hz": float(np.median(freqs)) if freqs else None,
    }
