"""Mosaic plans at run time: the images kept (and why others were left out) and the output grid."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs.utils import proj_plane_pixel_scales

from .. import naming, provenance
from ..fitsimage import read_header
from . import (
    BASE_MEMORY_MB,
    BYTES_PER_INPUT_PIXEL,
    BYTES_PER_OUTPUT_PIXEL,
    BYTES_PER_REPROJECTED_PIXEL,
    MAX_RADIUS_DEG,
    PLAN_VERSION,
    MosaicError,
)
from .wiring import Selection, TierOptions

# ------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ImageEntry:
    """One image of a plan: where it is and what its sidecar says about it."""

    group: str
    image: str
    pb: str
    ra_deg: float
    dec_deg: float
    rms_jy: float
    grade: str
    freq_hz: float | None
    beam_major_arcsec: float | None
    beam_minor_arcsec: float | None
    beam_pa_deg: float | None
    shape: tuple[int, int]
    cell_arcsec: float | None = None
    """Pixel size (the larger axis); None in plans written before it was recorded."""


@dataclass(frozen=True)
class Grid:
    """The output grid: a celestial FITS WCS (0-based ``crpix`` is FITS CRPIX - 1) and shape (ny, nx)."""

    ctype: tuple[str, str]
    crval: tuple[float, float]
    cdelt: tuple[float, float]
    crpix: tuple[float, float]
    shape: tuple[int, int]
    radesys: str = "ICRS"
    equinox: float | None = None

    def wcs(self):
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = list(self.ctype)
        w.wcs.crval = list(self.crval)
        w.wcs.cdelt = list(self.cdelt)
        w.wcs.crpix = list(self.crpix)
        w.wcs.cunit = ["deg", "deg"]
        w.wcs.radesys = self.radesys
        if self.equinox is not None:
            w.wcs.equinox = self.equinox
        w.wcs.set()
        w.pixel_shape = (self.shape[1], self.shape[0])
        return w

    def header(self):
        """The WCS cards (the shape is the data's)."""
        return self.wcs().to_header()

    @property
    def n_pixels(self) -> int:
        return int(self.shape[0]) * int(self.shape[1])


@dataclass(frozen=True)
class Plan:
    """Which images a mosaic takes (and why the others were left out), and its grid."""

    selection: Selection
    options: TierOptions
    images: list[ImageEntry]
    rejected: list[dict[str, str]]
    grid: Grid | None
    notes: list[str] = field(default_factory=list)

    @property
    def tier(self) -> str:
        return self.selection.tier

    @property
    def name(self) -> str:
        return self.selection.name

    def summary(self) -> dict[str, Any]:
        """The plan's figures, as its sidecar's ``qa`` (database columns of kind ``mosaic_plan``)."""
        groups = sorted(e.group for e in self.images)
        ra, dec = (None, None)
        if self.grid is not None:
            ra, dec = grid_centre(self.grid)
        return {
            "tier": self.tier,
            "name": self.name,
            "n_images": len(self.images),
            "n_rejected": len(self.rejected),
            "time_start": groups[0] if groups else None,
            "time_end": groups[-1] if groups else None,
            "ra_deg": ra,
            "dec_deg": dec,
            "grid_shape": list(self.grid.shape) if self.grid else None,
            "memory_estimate_mb": memory_estimate_mb(self),
            "selection": self.selection.describe(),
        }

    def to_json(self) -> str:
        """The plan file: deterministic (sorted, no time stamp), so equal plans are equal bytes."""
        record = {
            "plan_version": PLAN_VERSION,
            "selection": self.selection.to_dict(),
            "options": self.options.record(),
            "grid": None if self.grid is None else asdict(self.grid),
            "images": [asdict(e) for e in self.images],
            "rejected": self.rejected,
            "notes": self.notes,
        }
        return json.dumps(provenance.to_json(record), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> Plan:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MosaicError(f"{source}: not a mosaic plan (invalid JSON: {exc})") from None
        if not isinstance(d, dict) or d.get("plan_version") != PLAN_VERSION:
            raise MosaicError(f"{source}: not a mosaic plan of version {PLAN_VERSION}")
        opts = dict(d["options"])
        opts["grades"] = tuple(opts["grades"])
        grid = d.get("grid")
        if grid is not None:
            grid = Grid(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in grid.items()})
        images = [ImageEntry(**{**e, "shape": tuple(e["shape"])}) for e in d["images"]]
        return cls(Selection.from_dict(d["selection"]), TierOptions(**opts), images, d["rejected"], grid,
                   d.get("notes", []))

    @classmethod
    def read(cls, path: str | os.PathLike) -> Plan:
        return cls.from_json(Path(path).read_text(encoding="utf-8"), os.fspath(path))


def read_entry(image: str | os.PathLike, pb: str | os.PathLike) -> ImageEntry:
    """An :class:`ImageEntry` from an image's sidecar and FITS header; ValueError says what is wrong."""
    image, pb = os.fspath(image), os.fspath(pb)
    record = provenance.read_sidecar(provenance.sidecar_path(image))
    qa = record.get("qa") or {}
    group = record.get("group")
    if not isinstance(group, str):
        raise ValueError(f"sidecar of {image} names no group")
    missing = [k for k in ("rms_jy", "grade") if qa.get(k) is None]
    if missing:
        raise ValueError(f"sidecar of {image} lacks qa {', '.join(missing)}")
    if not os.path.exists(pb):
        raise ValueError(f"primary beam {pb} does not exist")
    try:
        header = read_header(image)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the FITS header of {image}: {exc}") from None
    wcs = _celestial(header, image)
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    ra, dec = qa.get("ra_deg"), qa.get("dec_deg")
    if ra is None or dec is None:
        ra, dec = (float(v) for v in wcs.wcs_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0])

    def num(key: str) -> float | None:
        value = qa.get(key)
        return None if value is None else float(value)

    return ImageEntry(
        group=group, image=image, pb=pb, ra_deg=float(ra) % 360.0, dec_deg=float(dec),
        rms_jy=float(qa["rms_jy"]), grade=str(qa["grade"]), freq_hz=num("freq_hz"),
        beam_major_arcsec=num("beam_major_arcsec"), beam_minor_arcsec=num("beam_minor_arcsec"),
        beam_pa_deg=num("beam_pa_deg"), shape=(ny, nx),
        cell_arcsec=float(np.max(proj_plane_pixel_scales(wcs))) * 3600.0,
    )


def _celestial(header, source: str):
    from astropy.wcs import WCS

    wcs = WCS(header)
    if not wcs.has_celestial or wcs.wcs.lng != 0 or wcs.wcs.lat != 1:
        raise ValueError(f"{source}: the first two axes must be RA and Dec")
    return wcs.celestial


def make_plan(
    selection: Selection,
    options: TierOptions,
    images: Sequence[tuple[str, str]],
) -> Plan:
    """Choose among candidate ``(image, pb)`` pairs (see the module docstring).

    Never raises for a bad image: it is left out with its reason. A plan that
    keeps no image has ``grid`` None (:func:`build` refuses it with the
    reasons). Raises :class:`MosaicError` when the grid is impossible (too wide
    for the projection, or needing more memory than ``options.mem_mb``).
    """
    rejected: list[dict[str, str]] = []
    entries: list[ImageEntry] = []

    def leave_out(group: str, image: str, reason: str) -> None:
        rejected.append({"group": group, "image": image, "reason": reason})

    for image, pb in images:
        try:
            entry = read_entry(image, pb)
        except (ValueError, OSError) as exc:
            leave_out(_group_of(image), os.fspath(image), f"unreadable: {exc}")
            continue
        start = naming.parse_timestamp(entry.group) if _is_group(entry.group) else None
        if start is not None and not selection.in_time([start])[0]:
            leave_out(entry.group, entry.image, "observation outside the mosaic's time window")
        elif selection.region is not None and not selection.region.contains(entry.ra_deg, entry.dec_deg):
            leave_out(entry.group, entry.image,
                      f"centre RA {entry.ra_deg:.3f}, Dec {entry.dec_deg:.3f} outside {selection.region.name}")
        elif entry.grade not in options.grades:
            leave_out(entry.group, entry.image, f"grade {entry.grade} not accepted ({', '.join(options.grades)})")
        elif not (math.isfinite(entry.rms_jy) and entry.rms_jy > 0):
            leave_out(entry.group, entry.image, f"rms {entry.rms_jy} is not a positive number")
        elif options.max_rms_jy is not None and entry.rms_jy > options.max_rms_jy:
            leave_out(entry.group, entry.image,
                      f"rms {entry.rms_jy * 1e3:.3g} mJy/beam above max_rms_jy {options.max_rms_jy * 1e3:.3g}")
        else:
            entries.append(entry)

    if entries and options.max_rms_ratio is not None:
        median = float(np.median([e.rms_jy for e in entries]))
        kept = []
        for e in entries:
            if e.rms_jy > options.max_rms_ratio * median:
                leave_out(e.group, e.image, f"rms {e.rms_jy * 1e3:.3g} mJy/beam is {e.rms_jy / median:.1f} x the "
                          f"median {median * 1e3:.3g} of the candidates (max_rms_ratio {options.max_rms_ratio:g})")
            else:
                kept.append(e)
        entries = kept

    entries.sort(key=lambda e: e.group)
    if len(entries) > options.max_images:
        chosen = _keep(entries, options.max_images, options.keep)
        for e in entries:
            if e not in chosen:
                leave_out(e.group, e.image, f"over max_images {options.max_images}: kept {options.keep}")
        entries = [e for e in entries if e in chosen]
    rejected.sort(key=lambda r: (r["group"], r["image"]))

    notes = []
    grid = None
    if entries:
        grid = grid_for(entries, options.pixel_arcsec, options.projection, name=selection.describe())
    else:
        notes.append(f"{selection.describe()}: no image passed the selection")
    plan = Plan(selection, options, entries, rejected, grid, notes)
    if grid is not None and options.mem_mb is not None:
        need = memory_estimate_mb(plan)
        if need > options.mem_mb:
            raise MosaicError(
                f"{selection.describe()}: a {grid.shape[1]} x {grid.shape[0]} pixel grid at "
                f"{options.pixel_arcsec:g} arcsec needs about {need:.0f} MB, more than the tier's "
                f"resources.mem_mb {options.mem_mb}: use larger pixels, a smaller region, or more memory"
            )
    return plan


def _is_group(text: str) -> bool:
    try:
        naming.parse_timestamp(text)
    except ValueError:
        return False
    return True


def _group_of(image: str | os.PathLike) -> str:
    return naming.group_of_path(image) or os.path.basename(os.fspath(image))


def _keep(entries: list[ImageEntry], n: int, how: str) -> list[ImageEntry]:
    """``n`` of ``entries`` (sorted by time) by the tier's ``keep`` rule."""
    if how == "newest":
        return entries[-n:]
    if how == "lowest_rms":
        return sorted(entries, key=lambda e: (e.rms_jy, e.group))[:n]
    if how == "spread":
        idx = np.unique(np.round(np.linspace(0, len(entries) - 1, n)).astype(int))
        return [entries[i] for i in idx]
    raise MosaicError(f"unknown keep rule {how!r}: newest, lowest_rms or spread")


def memory_estimate_mb(plan: Plan) -> float | None:
    """Working memory of :func:`build` for this plan (MB): the grid plus the largest input's reprojection.

    One input costs its own pixels and the part of the grid it is reprojected
    onto (its footprint in output pixels, at most the grid).
    """
    if plan.grid is None:
        return None
    out_cell = abs(plan.grid.cdelt[1]) * 3600.0
    need = 0.0
    for e in plan.images:
        n_in = e.shape[0] * e.shape[1]
        scale = 1.0 if e.cell_arcsec is None else min(1.0, (e.cell_arcsec / out_cell) ** 2)
        n_box = min(plan.grid.n_pixels, n_in * scale) if e.cell_arcsec is not None else plan.grid.n_pixels
        need = max(need, n_in * BYTES_PER_INPUT_PIXEL + n_box * BYTES_PER_REPROJECTED_PIXEL[plan.options.interpolation])
    return (plan.grid.n_pixels * BYTES_PER_OUTPUT_PIXEL + need) / 2**20 + BASE_MEMORY_MB


def _unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _outline(entry: ImageEntry, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec of points along an image's edges (from its FITS header)."""
    wcs = _celestial(read_header(entry.image), entry.image)
    ny, nx = entry.shape
    t = np.linspace(0, 1, n)
    x = np.concatenate([t * (nx - 1), np.full(n, nx - 1.0), t * (nx - 1), np.zeros(n)])
    y = np.concatenate([np.zeros(n), t * (ny - 1), np.full(n, ny - 1.0), t * (ny - 1)])
    x = np.clip(x + np.sign(x - (nx - 1) / 2) * 0.5, -0.5, nx - 0.5)
    y = np.clip(y + np.sign(y - (ny - 1) / 2) * 0.5, -0.5, ny - 0.5)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    return ra, dec


def grid_for(entries: Sequence[ImageEntry], pixel_arcsec: float, projection: str, name: str = "mosaic") -> Grid:
    """The smallest grid of the projection, centred on the images, that covers all of them.

    The centre is the mean direction of the images' outlines; the frame
    (RADESYS/EQUINOX) is that of the first image, so reprojection needs no frame
    conversion. CAR grids have CRVAL on the equator (RA lines straight, a
    strip at constant Dec a band of rows) and pixels square on the sky at the
    centre's declination.
    """
    if projection not in ("TAN", "SIN", "CAR"):
        raise MosaicError(f"projection {projection!r}: TAN, SIN or CAR")
    ras, decs = [], []
    for e in entries:
        ra, dec = _outline(e)
        ras.append(ra)
        decs.append(dec)
    ra, dec = np.concatenate(ras), np.concatenate(decs)
    mean = _unit(ra, dec).mean(axis=0)
    mean /= np.linalg.norm(mean)
    ra_c = float(np.degrees(np.arctan2(mean[1], mean[0])) % 360.0)
    dec_c = float(np.degrees(np.arcsin(np.clip(mean[2], -1, 1))))
    ra_c, dec_c = round(ra_c, 6), round(dec_c, 6)
    radius = float(np.degrees(np.arccos(np.clip(_unit(ra, dec) @ _unit(np.array(ra_c), np.array(dec_c)), -1, 1))).max())
    if projection in MAX_RADIUS_DEG and radius > MAX_RADIUS_DEG[projection]:
        raise MosaicError(
            f"{name}: the images reach {radius:.0f} deg from their centre, too wide for a {projection} grid "
            f"(at most {MAX_RADIUS_DEG[projection]:g} deg): use projection CAR, a region or a shorter time span"
        )
    header = read_header(entries[0].image)
    radesys = str(header.get("RADESYS", "ICRS")).strip() or "ICRS"
    equinox = float(header["EQUINOX"]) if radesys in ("FK5", "FK4") and "EQUINOX" in header else None
    pix = pixel_arcsec / 3600.0
    if projection == "CAR":
        crval = (ra_c, 0.0)
        cdelt = (-pix / max(math.cos(math.radians(dec_c)), 1e-3), pix)
    else:
        crval = (ra_c, dec_c)
        cdelt = (-pix, pix)
    ctype = (f"RA---{projection}", f"DEC--{projection}")
    probe = Grid(ctype, crval, cdelt, (1.0, 1.0), (1, 1), radesys, equinox).wcs()
    x, y = probe.wcs_world2pix(ra, dec, 0)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise MosaicError(f"{name}: some image corners cannot be projected on a {projection} grid")
    pad = 2
    x0, y0 = math.floor(x.min()) - pad, math.floor(y.min()) - pad
    nx, ny = math.ceil(x.max()) + pad - x0 + 1, math.ceil(y.max()) + pad - y0 + 1
    return Grid(ctype, crval, cdelt, (1.0 - x0, 1.0 - y0), (int(ny), int(nx)), radesys, equinox)


def grid_centre(grid: Grid) -> tuple[float, float]:
    """RA, Dec (deg) of the grid's central pixel."""
    ra, dec = grid.wcs().wcs_pix2world([[(grid.shape[1] - 1) / 2, (grid.shape[0] - 1) / 2]], 0)[0]
    return float(ra) % 360.0, float(dec)


def grid_extent_deg(grid: Grid) -> tuple[float, float]:
    """On-sky width (along the central row) and height (along the central column) in degrees."""
    ny, nx = grid.shape
    w = grid.wcs()
    ra, dec = w.wcs_pix2world([0, nx - 1, (nx - 1) / 2, (nx - 1) / 2], [(ny - 1) / 2, (ny - 1) / 2, 0, ny - 1], 0)
    u = _unit(np.asarray(ra), np.asarray(dec))
    width = math.degrees(math.acos(float(np.clip(u[0] @ u[1], -1, 1))))
    height = math.degrees(math.acos(float(np.clip(u[2] @ u[3], -1, 1))))
    if grid.ctype[0].endswith("CAR"):  # a strip may reach round the sky: add up along the row
        width = abs(grid.cdelt[0]) * (nx - 1) * math.cos(math.radians(grid_centre(grid)[1]))
    return width, height
