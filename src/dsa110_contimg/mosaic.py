"""Tiered mosaics: choose the images (plan), combine them (build), check the result (QA).

A mosaic is named ``results/mosaics/{tier}/{name}.fits``. The tier (quicklook,
science, deep; config ``mosaic.tiers``) sets how images are chosen, the grid
and the resources; the name says which part of the data it covers:

* ``YYYY-MM-DD``: the observations that started in that UTC day;
* ``YYYY-MM-DDTHH``: those that started in that UTC hour;
* ``latest``: those of the tier's ``window_h`` hours up to the newest observation;
* a region of ``mosaic.regions``: those whose pointing centre lies in its RA/Dec
  box (and within its optional start/end times).

**Plan** (two halves). At parse time, :class:`GroupIndex` and
:func:`selection_for` turn a name into a time window and/or a region, and
:meth:`GroupIndex.candidates` picks the observation groups that may belong to
it from their names alone (time from the group id; sky position from the
meridian at the group's mid time, with a margin). Their images are the plan
rule's inputs, so a new observation of that day or region changes that plan's
inputs, and only that mosaic is rebuilt. At run time, :func:`make_plan` reads
each candidate's QA sidecar and FITS header and keeps an image only if it is
in the window and region (exact ICRS centre), has an accepted grade and a
finite rms under the tier's cuts (absolute, and relative to the median of the
candidates), and then at most ``max_images`` of them (``keep``: newest, lowest
rms, or spread evenly in time). Every image left out is listed with its reason.
The plan also fixes the output grid (:class:`Grid`), so it holds everything the
build needs. Its JSON holds no time stamp: re-planning the same inputs writes
the same bytes, and Snakemake (which checksums small inputs) does not rebuild.

**Build** (:func:`build`): a primary-beam-weighted linear mosaic. For images
i with restored (apparent, not beam-corrected) image I_i, primary beam B_i and
noise sigma_i, each output pixel p is

    M(p) = sum_i B_i(p) I_i(p) / sigma_i^2  /  sum_i B_i(p)^2 / sigma_i^2,

which is the inverse-variance weighted mean of the corrected images I_i / B_i
(whose noise is sigma_i / B_i, hence weights B_i^2 / sigma_i^2). The noise map
is sigma_M(p) = (sum_i B_i^2 / sigma_i^2)^(-1/2) and the weights map is the
denominator. Pixels where an image's beam is below the tier's ``pb_cutoff``,
or where its image or beam is NaN, take no part (near a NaN region, a margin
of the interpolation kernel's width is left out too). Images are reprojected
one at a time with :func:`reproject.reproject_interp` onto the part of the
output grid they cover and added into running sums, so memory is that of the
output grid (18 bytes a pixel) plus one input, whatever the number of inputs.

**QA** (:func:`measure_qa`): noise (median of the noise map, its uniformity,
and the measured noise of the signal-to-noise map, which should be 1), peak
and dynamic range, and, from the sources found above ``detect_sigma`` and
cross-matched with a reference catalogue, the median position offset and the
median flux ratio; a grade; and a PNG preview (:func:`render_preview`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import naming, provenance, telescope

log = logging.getLogger("dsa110_contimg")

PLAN_VERSION = 1
#: Names that are not regions.
RESERVED_NAMES = ("latest", "daily", "hourly", "regions")
#: Interpolation orders of :func:`reproject.reproject_interp`, and how many input
#: pixels from a blank (NaN or below the beam cut-off) each one is unreliable.
INTERPOLATION_MARGIN = {"bilinear": 1, "bicubic": 4}
#: Bytes of working memory per output pixel (two float64 sums, a uint16 count).
BYTES_PER_OUTPUT_PIXEL = 18
#: Bytes of working memory per input pixel while one image is reprojected
#: (planes, masks, the three reprojected planes and the coordinate maps).
BYTES_PER_INPUT_PIXEL = 160
#: Bytes of the Python process before any array (interpreter, numpy, astropy, reproject).
BASE_MEMORY_MB = 200
#: Widest grid (deg from its centre to a corner) each projection is used for.
MAX_RADIUS_DEG = {"TAN": 60.0, "SIN": 80.0}
#: Catalogue fluxes are at this frequency (spectral index scales them).
CATALOGUE_FREQ_HZ = 1.4e9

_DAY = "%Y-%m-%d"
_HOUR = "%Y-%m-%dT%H"


class MosaicError(ValueError):
    """A mosaic that cannot be planned or built; the message says which and why."""


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class TierOptions:
    """How one tier chooses images and grids them (config ``mosaic.tiers.<tier>``)."""

    max_images: int
    """At most this many images; see ``keep``."""
    keep: str = "spread"
    """Which images stay when more pass: ``newest``, ``lowest_rms`` or ``spread`` (evenly in time)."""
    window_h: float = 1.0
    """Hours up to the newest observation that the mosaic named ``latest`` covers."""
    grades: tuple[str, ...] = ("good", "marginal")
    """Image QA grades accepted."""
    max_rms_jy: float | None = None
    """Images noisier than this are left out (None: no absolute cut)."""
    max_rms_ratio: float | None = 3.0
    """Images noisier than this times the median of the candidates are left out."""
    pb_cutoff: float = 0.1
    """Pixels where an image's primary beam is lower take no part."""
    pixel_arcsec: float = 6.0
    """Output pixel size."""
    projection: str = "TAN"
    """Output projection: TAN, SIN or CAR."""
    interpolation: str = "bicubic"
    """Reprojection interpolation: bilinear or bicubic."""
    mem_mb: int | None = None
    """Memory the build job has; a plan whose grid needs more fails with the numbers."""

    @classmethod
    def from_config(cls, tier_cfg: Mapping[str, Any]) -> TierOptions:
        keys = {f for f in cls.__dataclass_fields__ if f in tier_cfg}
        values = {k: tier_cfg[k] for k in keys}
        if "grades" in values:
            values["grades"] = tuple(values["grades"])
        resources = tier_cfg.get("resources") or {}
        if "mem_mb" in resources:
            values["mem_mb"] = resources["mem_mb"]
        return cls(**values)

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Region:
    """A box in ICRS RA and Dec (degrees); RA wraps through 0 when ``ra_deg[0] > ra_deg[1]``."""

    name: str
    ra_deg: tuple[float, float]
    dec_deg: tuple[float, float]
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> Region:
        return cls(
            name,
            (float(cfg["ra_deg"][0]), float(cfg["ra_deg"][1])),
            (float(cfg["dec_deg"][0]), float(cfg["dec_deg"][1])),
            _parse_time(cfg.get("start"), f"mosaic.regions.{name}.start"),
            _parse_time(cfg.get("end"), f"mosaic.regions.{name}.end"),
        )

    def contains(self, ra_deg: Any, dec_deg: Any, margin_deg: float = 0.0) -> np.ndarray:
        """Whether each position lies in the box grown by ``margin_deg`` on the sky."""
        ra = np.asarray(ra_deg, float) % 360.0
        dec = np.asarray(dec_deg, float)
        d0, d1 = self.dec_deg
        in_dec = (dec >= d0 - margin_deg) & (dec <= d1 + margin_deg)
        cosd = np.cos(np.radians(np.clip(np.abs(dec) + margin_deg, 0, 89.0)))
        m = margin_deg / cosd
        r0, r1 = self.ra_deg
        width = r1 - r0 if r1 >= r0 else r1 - r0 + 360.0  # [0, 360] is the whole circle
        if width + 2 * np.max(m, initial=0.0) >= 360.0:
            return in_dec
        return in_dec & ((ra - (r0 - m)) % 360.0 <= width + 2 * m)

    def describe(self) -> str:
        (r0, r1), (d0, d1) = self.ra_deg, self.dec_deg
        text = f"region {self.name} (RA {r0:g}..{r1:g}, Dec {d0:g}..{d1:g} deg)"
        if self.start or self.end:
            text += f" from {_iso(self.start) or 'any time'} to {_iso(self.end) or 'any time'}"
        return text


@dataclass(frozen=True)
class Selection:
    """What a mosaic name selects: observations starting in [start, end) and/or in a region."""

    tier: str
    name: str
    start: datetime | None = None
    end: datetime | None = None
    region: Region | None = None

    def describe(self) -> str:
        parts = []
        if self.start or self.end:
            parts.append(f"observations from {_iso(self.start) or 'any time'} to {_iso(self.end) or 'any time'}")
        if self.region is not None:
            parts.append(self.region.describe())
        return f"{self.tier} mosaic {self.name}: " + (", ".join(parts) or "every observation")

    def to_dict(self) -> dict[str, Any]:
        region = None
        if self.region is not None:
            region = {"name": self.region.name, "ra_deg": list(self.region.ra_deg),
                      "dec_deg": list(self.region.dec_deg)}
        return {"tier": self.tier, "name": self.name, "start": _iso(self.start), "end": _iso(self.end),
                "region": region}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        region = d.get("region")
        return cls(
            d["tier"], d["name"], _parse_time(d.get("start"), "start"), _parse_time(d.get("end"), "end"),
            None if region is None else Region(region["name"], tuple(region["ra_deg"]), tuple(region["dec_deg"])),
        )

    def in_time(self, times: Sequence[datetime]) -> np.ndarray:
        ok = np.ones(len(times), bool)
        if self.start is not None:
            ok &= np.array([t >= self.start for t in times], bool)
        if self.end is not None:
            ok &= np.array([t < self.end for t in times], bool)
        return ok


def _iso(t: datetime | None) -> str | None:
    return None if t is None else naming.format_timestamp(t)


def _parse_time(text: Any, key: str) -> datetime | None:
    """A UTC time from ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM:SS`` (or a datetime); None stays None."""
    if text is None:
        return None
    if isinstance(text, datetime):
        return naming._utc(text)
    for fmt in (naming.TIMESTAMP_FORMAT, _DAY, "%Y-%m-%dT%H:%M", _HOUR):
        try:
            return datetime.strptime(str(text), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise MosaicError(f"{key}: {text!r} is not a UTC time YYYY-MM-DD[THH:MM:SS]")


def regions(mosaic_cfg: Mapping[str, Any]) -> dict[str, Region]:
    """The configured regions by name."""
    return {name: Region.from_config(name, cfg) for name, cfg in (mosaic_cfg.get("regions") or {}).items()}


def selection_for(tier: str, name: str, mosaic_cfg: Mapping[str, Any], newest: datetime | None) -> Selection:
    """What the mosaic ``tier``/``name`` selects (see the module docstring).

    ``newest`` is the start of the newest observation, for ``latest``.
    Raises :class:`MosaicError` for an unknown tier or name.
    """
    if tier not in naming.MOSAIC_TIERS:
        raise MosaicError(f"unknown mosaic tier {tier!r}; known: {', '.join(naming.MOSAIC_TIERS)}")
    known = regions(mosaic_cfg)
    if name in known:
        region = known[name]
        return Selection(tier, name, region.start, region.end, region)
    if name == "latest":
        if newest is None:
            raise MosaicError(f"{tier} mosaic latest: there is no observation at all")
        window = timedelta(hours=float(mosaic_cfg["tiers"][tier]["window_h"]))
        end = naming._utc(newest) + timedelta(seconds=1)
        return Selection(tier, name, end - window, end)
    for fmt, span in ((_DAY, timedelta(days=1)), (_HOUR, timedelta(hours=1))):
        try:
            start = datetime.strptime(name, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        return Selection(tier, name, start, start + span)
    raise MosaicError(
        f"{tier} mosaic {name!r}: a mosaic name is a UTC day (YYYY-MM-DD), an hour (YYYY-MM-DDTHH), "
        f"'latest' or a region of mosaic.regions (configured: {', '.join(sorted(known)) or 'none'})"
    )


# ------------------------------------------------------- parse-time choice


class GroupIndex:
    """Observation groups by start time, with their approximate pointing, for parse time.

    Built once from the group ids (names only). The pointing of a group is
    the meridian at its mid time, at the configured declination: apparent
    coordinates, which differ from ICRS by precession (~0.35 deg now), so
    region queries use a margin and the plan rule checks the exact ICRS centre
    from each image's sidecar.
    """

    #: Margin of the parse-time region test (deg): precession, nutation, and the
    #: pointing declination's uncertainty; the plan rule decides exactly.
    MARGIN_DEG = 1.0

    def __init__(self, group_ids: Iterable[str], dec_deg: float) -> None:
        self.ids = sorted(group_ids)
        self.starts = [naming.parse_timestamp(g) for g in self.ids]
        self.dec_deg = float(dec_deg)
        self._ra: np.ndarray | None = None

    @property
    def newest(self) -> datetime | None:
        return self.starts[-1] if self.starts else None

    def pointing_ra_deg(self) -> np.ndarray:
        """Apparent RA of the meridian at each group's mid time (deg), computed once."""
        if self._ra is None:
            from . import geometry

            seconds = np.array([t.timestamp() for t in self.starts], float) + telescope.OBSERVATION_S / 2
            jd = seconds / 86400.0 + 2440587.5
            self._ra = np.degrees(geometry.lst(jd)) if jd.size else np.zeros(0)
        return self._ra

    def candidates(self, selection: Selection) -> list[str]:
        """Ids of the groups that may belong to the mosaic (a superset for regions)."""
        ok = selection.in_time(self.starts)
        if selection.region is not None and ok.any():
            ok &= selection.region.contains(self.pointing_ra_deg(), np.full(len(self.ids), self.dec_deg),
                                            self.MARGIN_DEG)
        return [g for g, keep in zip(self.ids, ok) if keep]

    def days(self) -> list[str]:
        return sorted({t.strftime(_DAY) for t in self.starts})

    def hours(self) -> list[str]:
        return sorted({t.strftime(_HOUR) for t in self.starts})


def target_names(index: GroupIndex, mosaic_cfg: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``(tier, name)`` mosaics of ``mosaic.targets`` that have candidate images.

    ``daily``, ``hourly``, ``latest`` and ``regions`` expand to every day, hour,
    the newest window and every region. Returns the mosaics and one note per
    listed mosaic left out because no observation falls in it.
    """
    out: list[tuple[str, str]] = []
    notes: list[str] = []
    for tier in naming.MOSAIC_TIERS:
        names: list[str] = []
        for entry in mosaic_cfg.get("targets", {}).get(tier, []):
            if entry == "daily":
                names += index.days()
            elif entry == "hourly":
                names += index.hours()
            elif entry == "regions":
                names += sorted(regions(mosaic_cfg))
            elif entry == "latest":
                names += ["latest"] if index.ids else []
            else:
                names.append(entry)
        for name in dict.fromkeys(names):
            try:
                selection = selection_for(tier, name, mosaic_cfg, index.newest)
            except MosaicError as exc:
                raise MosaicError(f"config key 'mosaic.targets.{tier}': {exc}") from None
            if index.candidates(selection):
                out.append((tier, name))
            else:
                notes.append(f"{selection.describe()}: no observation, not built")
    return out, notes


def nothing_selected(selection: Selection, n_groups: int) -> str:
    """The message for a mosaic whose selection finds no observation at all."""
    return (
        f"{selection.describe()}: none of the {n_groups} observation(s) in raw_dir falls in it, "
        "so there is nothing to mosaic (no plan or mosaic is made)"
    )


class Wiring:
    """Parse-time wiring of the mosaic rules: what the Snakefile asks, answered from names only.

    Built once per workflow parse from the complete groups and the config, so
    ``rules/mosaic.smk`` holds no logic: its input functions and targets are
    calls of these methods.
    """

    def __init__(self, results_dir: str | os.PathLike, group_ids: Iterable[str], config: Mapping[str, Any]) -> None:
        self.results_dir = os.fspath(results_dir)
        self.cfg = config["mosaic"]
        excluded = set(self.cfg.get("exclude_groups") or ())
        self.index = GroupIndex([g for g in group_ids if g not in excluded], config["pointing"]["dec_deg"])

    def selection(self, tier: str, name: str) -> Selection:
        return selection_for(tier, name, self.cfg, self.index.newest)

    def inputs(self, tier: str, name: str) -> dict[str, list[str]]:
        """The plan rule's inputs: images, primary beams and QA sidecars of the candidate groups.

        The sidecars are inputs too, so an image whose QA is revised (its
        sidecar rewritten) is re-planned like a new one. Raises :class:`MosaicError` with a clear message when no observation
        falls in the mosaic, so no plan or mosaic is ever made for it.
        """
        selection = self.selection(tier, name)
        groups = self.index.candidates(selection)
        if not groups:
            raise MosaicError(nothing_selected(selection, len(self.index.ids)))
        return {
            "images": [naming.product_path(self.results_dir, "image", g) for g in groups],
            "pbs": [naming.product_path(self.results_dir, "pb", g) for g in groups],
            "sidecars": [naming.sidecar_path(naming.product_path(self.results_dir, "image", g)) for g in groups],
        }

    def resource(self, tier: str, key: str) -> Any:
        """``mosaic.tiers.<tier>.resources.<key>``."""
        return self.cfg["tiers"][tier]["resources"][key]

    def targets(self, kind: str = "mosaic_qa") -> tuple[list[str], list[str]]:
        """Paths of the ``mosaic.targets`` mosaics that have observations (none when disabled), and notes."""
        if not self.cfg["enabled"]:
            return [], []
        found, notes = target_names(self.index, self.cfg)
        return [naming.mosaic_path(self.results_dir, tier, name, kind) for tier, name in found], notes


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
    from astropy.io import fits

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
        header = fits.getheader(image)
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
    base = os.path.basename(os.fspath(image))
    return base.split(".")[0] if _is_group(base[:19]) and base[19:20] == "." else base


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
    """Working memory of :func:`build` for this plan (MB): the grid plus the largest input."""
    if plan.grid is None:
        return None
    biggest = max((e.shape[0] * e.shape[1] for e in plan.images), default=0)
    return (plan.grid.n_pixels * BYTES_PER_OUTPUT_PIXEL + biggest * BYTES_PER_INPUT_PIXEL) / 2**20 + BASE_MEMORY_MB


def _unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _outline(entry: ImageEntry, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec of points along an image's edges (from its FITS header)."""
    from astropy.io import fits

    wcs = _celestial(fits.getheader(entry.image), entry.image)
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
    from astropy.io import fits

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
    header = fits.getheader(entries[0].image)
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
    """Peak resident memory of this process so far (MB)."""
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


# --------------------------------------------------------------------- QA


@dataclass(frozen=True)
class QAOptions:
    """Source finding, cross-matching and grade limits (config ``mosaic.qa``)."""

    detect_sigma: float = 5.0
    match_radius_arcsec: float = 20.0
    min_match_snr: float = 10.0
    max_sources: int = 2000
    min_matched: int = 3
    marginal_flux_error: float = 0.05
    bad_flux_error: float = 0.15
    marginal_offset_arcsec: float = 3.0
    bad_offset_arcsec: float = 8.0
    marginal_noise_ratio: float = 1.3
    bad_noise_ratio: float = 2.0
    preview_pixels: int = 1600

    @classmethod
    def from_config(cls, qa_cfg: Mapping[str, Any] | None) -> QAOptions:
        qa_cfg = qa_cfg or {}
        return cls(**{k: qa_cfg[k] for k in cls.__dataclass_fields__ if k in qa_cfg})


def load_reference(config: Mapping[str, Any]):
    """The reference catalogue (pandas: ra_deg, dec_deg, flux_jy[, spectral_index]) and what it is.

    The pipeline's catalogue (config section ``catalogue``, read by
    :mod:`dsa110_contimg.catalogue`: CSV, FITS or VOTable, columns mapped) when
    it has a path; otherwise the calibrator catalogue shipped with the package.
    A catalogue that cannot be read raises ``ValueError`` naming the file.
    """
    path = (config.get("catalogue") or {}).get("path")
    if path:
        from .catalogue import CatalogueOptions, load_catalogue

        return load_catalogue(CatalogueOptions.from_config(config)), str(path)
    from .calibrators import load_calibrators

    return load_calibrators(), "calibrators (package)"


def find_sources(data: np.ndarray, noise: np.ndarray, wcs, beam_deg: tuple[float, float, float] | None,
                 detect_sigma: float, max_sources: int):
    """Islands of ``data / noise`` above ``detect_sigma``, brightest first, each fitted.

    Returns a DataFrame: ra_deg, dec_deg, flux_jy (integrated, from a Gaussian
    fit of free shape when the beam is known; else the peak), peak_jy, snr.
    """
    import pandas as pd
    from scipy import ndimage

    from .image_qa import fit_point_source

    with np.errstate(invalid="ignore", divide="ignore"):
        snr = data / noise
    above = np.isfinite(snr) & (snr > detect_sigma)
    labels, n = ndimage.label(above, structure=np.ones((3, 3)))
    rows = []
    if n:
        index = np.arange(1, n + 1)
        peaks = ndimage.maximum_position(np.where(above, snr, -np.inf), labels, index)
        values = np.array([snr[p] for p in peaks])
        order = np.argsort(-values)[:max_sources]
        for k in order:
            y, x = peaks[k]
            ra, dec = wcs.wcs_pix2world([[x, y]], 0)[0]
            row = {"ra_deg": float(ra) % 360, "dec_deg": float(dec), "peak_jy": float(data[y, x]),
                   "flux_jy": float(data[y, x]), "snr": float(values[k]), "fitted": False}
            if beam_deg is not None:
                try:
                    fit = fit_point_source(data, wcs, float(ra), float(dec), beam_deg, free_shape=True)
                    if np.isfinite(fit.flux_jy) and fit.offset_arcsec < 3600 * beam_deg[0]:
                        row.update(ra_deg=fit.ra_deg % 360, dec_deg=fit.dec_deg, flux_jy=fit.flux_jy, fitted=True)
                except (ValueError, np.linalg.LinAlgError, RuntimeError):
                    pass
            rows.append(row)
    return pd.DataFrame(rows, columns=["ra_deg", "dec_deg", "flux_jy", "peak_jy", "snr", "fitted"])


def cross_match(sources, catalogue, radius_arcsec: float, freq_hz: float | None):
    """Each source's nearest catalogue source within ``radius_arcsec``.

    Returns a DataFrame of the matched sources with the catalogue's position
    and flux (scaled to ``freq_hz`` with the catalogue's spectral index when it
    has one), ``dra_arcsec`` (RA offset x cos Dec, source - catalogue),
    ``ddec_arcsec``, ``sep_arcsec`` and ``flux_ratio``.
    """
    import pandas as pd
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    columns = ["ra_deg", "dec_deg", "flux_jy", "snr", "cat_ra_deg", "cat_dec_deg", "cat_flux_jy",
               "dra_arcsec", "ddec_arcsec", "sep_arcsec", "flux_ratio"]
    if len(sources) == 0 or len(catalogue) == 0:
        return pd.DataFrame(columns=columns)
    src = SkyCoord(sources.ra_deg.to_numpy() * u.deg, sources.dec_deg.to_numpy() * u.deg)
    cat = SkyCoord(catalogue.ra_deg.to_numpy(float) * u.deg, catalogue.dec_deg.to_numpy(float) * u.deg)
    idx, sep, _ = src.match_to_catalog_sky(cat)
    ok = sep.arcsec <= radius_arcsec
    m = sources[ok].copy()
    c = catalogue.iloc[idx[ok]]
    flux = c.flux_jy.to_numpy(float)
    if freq_hz and "spectral_index" in c.columns:
        alpha = np.nan_to_num(c.spectral_index.to_numpy(float))
        flux = flux * (freq_hz / CATALOGUE_FREQ_HZ) ** alpha
    m["cat_ra_deg"] = c.ra_deg.to_numpy(float)
    m["cat_dec_deg"] = c.dec_deg.to_numpy(float)
    m["cat_flux_jy"] = flux
    cosd = np.cos(np.radians(m.cat_dec_deg.to_numpy()))
    m["dra_arcsec"] = ((m.ra_deg.to_numpy() - m.cat_ra_deg.to_numpy() + 180) % 360 - 180) * cosd * 3600
    m["ddec_arcsec"] = (m.dec_deg.to_numpy() - m.cat_dec_deg.to_numpy()) * 3600
    m["sep_arcsec"] = sep.arcsec[ok]
    m["flux_ratio"] = m.flux_jy.to_numpy() / flux
    return m[columns].reset_index(drop=True)


def read_maps(mosaic: str | os.PathLike, noise: str | os.PathLike):
    """Mosaic and noise planes (float32), the celestial WCS and the mosaic header."""
    data, wcs, header = read_plane(mosaic)
    sigma, _, _ = read_plane(noise)
    if sigma.shape != data.shape:
        raise MosaicError(f"{noise}: shape {sigma.shape} differs from the mosaic's {data.shape}")
    return data, sigma, wcs, header


def measure_qa(data: np.ndarray, noise: np.ndarray, wcs, header, catalogue, opts: QAOptions):
    """QA figures of a mosaic (see the module docstring) plus the sources and matches found.

    Returns ``(qa, sources, matches)``. ``qa`` holds ``rms_jy`` (median of the
    noise map over the covered area), ``rms_uniformity`` (10th / 90th percentile
    of the noise map: 1 is uniform), ``noise_ratio`` (robust rms of the
    signal-to-noise map away from sources: 1 when the noise map is right),
    ``peak_jy``, ``dynamic_range`` (peak / rms_jy), ``n_sources``,
    ``n_matched``, ``astrometry_offset_arcsec`` (length of the median offset
    vector of the matches above ``min_match_snr``), the median RA and Dec
    offsets and separation, ``flux_ratio`` (median measured / catalogue flux),
    ``grade`` and ``grade_reasons``.
    """
    from scipy import ndimage

    from .image_qa import robust_rms

    covered = np.isfinite(data) & np.isfinite(noise) & (noise > 0)
    if not covered.any():
        raise MosaicError("the mosaic has no covered pixel")
    sigma = noise[covered]
    rms = float(np.median(sigma))
    p10, p90 = np.percentile(sigma, [10, 90])
    del sigma
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(covered, data / noise, np.nan)
    sources_mask = ndimage.binary_dilation(np.abs(np.nan_to_num(snr)) > opts.detect_sigma, iterations=3)
    background = snr[covered & ~sources_mask]
    noise_ratio = robust_rms(background) if background.size > 100 else math.nan
    del background, snr, sources_mask
    peak = float(np.max(data[covered]))
    beam = None
    if all(k in header for k in ("BMAJ", "BMIN", "BPA")):
        beam = (float(header["BMAJ"]), float(header["BMIN"]), float(header["BPA"]))
    sources = find_sources(data, noise, wcs, beam, opts.detect_sigma, opts.max_sources)
    freq = header.get("RESTFRQ")
    inside = _in_footprint(catalogue, wcs, covered)
    matches = cross_match(sources, catalogue[inside], opts.match_radius_arcsec, freq)
    good = matches[matches.snr >= opts.min_match_snr]
    qa: dict[str, Any] = {
        "rms_jy": rms,
        "rms_min_jy": float(np.min(noise[covered])),
        "rms_uniformity": float(p10 / p90),
        "noise_ratio": noise_ratio,
        "measured_rms_jy": noise_ratio * rms if math.isfinite(noise_ratio) else None,
        "peak_jy": peak,
        "dynamic_range": peak / rms,
        "n_sources": len(sources),
        "n_catalogue_in_footprint": int(inside.sum()),
        "n_matched": len(good),
        "n_matched_all": len(matches),
        "astrometry_offset_arcsec": None,
        "median_ra_offset_arcsec": None,
        "median_dec_offset_arcsec": None,
        "median_separation_arcsec": None,
        "flux_ratio": None,
        "flux_ratio_scatter": None,
    }
    if len(good):
        dra, ddec = float(np.median(good.dra_arcsec)), float(np.median(good.ddec_arcsec))
        ratio = good.flux_ratio.to_numpy(float)
        qa.update(
            astrometry_offset_arcsec=math.hypot(dra, ddec), median_ra_offset_arcsec=dra,
            median_dec_offset_arcsec=ddec, median_separation_arcsec=float(np.median(good.sep_arcsec)),
            flux_ratio=float(np.median(ratio)),
            flux_ratio_scatter=float(1.4826 * np.median(np.abs(ratio - np.median(ratio)))),
        )
    qa["grade"], qa["grade_reasons"] = grade(qa, opts)
    return qa, sources, matches


def _in_footprint(catalogue, wcs, covered: np.ndarray) -> np.ndarray:
    """Which catalogue rows fall on covered pixels of the mosaic."""
    if len(catalogue) == 0:
        return np.zeros(0, bool)
    x, y = wcs.wcs_world2pix(catalogue.ra_deg.to_numpy(float), catalogue.dec_deg.to_numpy(float), 0)
    ok = np.isfinite(x) & np.isfinite(y)
    xi = np.where(ok, np.round(x), -1).astype(int)
    yi = np.where(ok, np.round(y), -1).astype(int)
    ny, nx = covered.shape
    ok &= (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    ok[ok] = covered[yi[ok], xi[ok]]
    return ok


def grade(qa: Mapping[str, Any], opts: QAOptions) -> tuple[str, list[str]]:
    """good / marginal / bad from the noise ratio, flux scale and astrometry, with reasons."""
    bad: list[str] = []
    marginal: list[str] = []
    ratio = qa.get("noise_ratio")
    if ratio is not None and math.isfinite(ratio):
        if ratio > opts.bad_noise_ratio:
            bad.append(f"noise {ratio:.2f} x the noise map (> {opts.bad_noise_ratio:g})")
        elif ratio > opts.marginal_noise_ratio:
            marginal.append(f"noise {ratio:.2f} x the noise map (> {opts.marginal_noise_ratio:g})")
    if qa["n_matched"] < opts.min_matched:
        marginal.append(f"{qa['n_matched']} catalogue match(es) above SNR {opts.min_match_snr:g} "
                        f"(< {opts.min_matched}): flux scale and astrometry unchecked")
    else:
        err = abs(qa["flux_ratio"] - 1)
        if err > opts.bad_flux_error:
            bad.append(f"flux ratio {qa['flux_ratio']:.3f} (off by > {opts.bad_flux_error:g})")
        elif err > opts.marginal_flux_error:
            marginal.append(f"flux ratio {qa['flux_ratio']:.3f} (off by > {opts.marginal_flux_error:g})")
        off = qa["astrometry_offset_arcsec"]
        if off > opts.bad_offset_arcsec:
            bad.append(f"median offset {off:.1f} arcsec (> {opts.bad_offset_arcsec:g})")
        elif off > opts.marginal_offset_arcsec:
            marginal.append(f"median offset {off:.1f} arcsec (> {opts.marginal_offset_arcsec:g})")
    if bad:
        return "bad", bad + marginal
    return ("marginal", marginal) if marginal else ("good", [])


def _block_reduce(a: np.ndarray, longest: int) -> np.ndarray:
    """``a`` block-averaged (NaN-aware) so that its longest side is at most ``longest``."""
    f = max(1, math.ceil(max(a.shape) / longest))
    if f == 1:
        return a
    ny, nx = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    blocks = a[:ny, :nx].reshape(ny // f, f, nx // f, f)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(blocks, axis=(1, 3))


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def render_preview(png: str | os.PathLike, data: np.ndarray, noise: np.ndarray, qa: Mapping[str, Any], matches,
                   title: str, longest: int = 1600) -> None:
    """PNG: the mosaic (asinh stretch), the noise map, astrometric offsets and flux ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = _block_reduce(data, longest)
    sig = _block_reduce(noise, max(64, longest // 2))
    rms = qa["rms_jy"]
    fig = plt.figure(figsize=(13, 8.5), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1.3, 1])
    ax = fig.add_subplot(grid[0, :])
    finite = img[np.isfinite(img)]
    vmax = float(np.percentile(finite, 99.9)) if finite.size else 1.0
    ax.imshow(np.arcsinh(img / (3 * rms)), origin="lower", cmap="inferno",
              vmin=np.arcsinh(-3 / 3), vmax=np.arcsinh(max(vmax, 10 * rms) / (3 * rms)), aspect="equal",
              interpolation="nearest")
    ax.set_title(f"mosaic (asinh, rms {rms * 1e3:.3g} mJy/beam, peak {qa['peak_jy']:.3g} Jy/beam, "
                 f"DR {qa['dynamic_range']:.0f})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax = fig.add_subplot(grid[1, 0])
    im = ax.imshow(sig * 1e3, origin="lower", cmap="viridis", aspect="equal", interpolation="nearest",
                   vmax=float(np.nanpercentile(sig, 98)) * 1e3 if np.isfinite(sig).any() else None)
    fig.colorbar(im, ax=ax, label="noise (mJy/beam)", shrink=0.8)
    ax.set_title(f"noise map (uniformity p10/p90 {qa['rms_uniformity']:.2f})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax = fig.add_subplot(grid[1, 1])
    if len(matches):
        ax.scatter(matches.dra_arcsec, matches.ddec_arcsec, s=8, c=np.log10(matches.snr), cmap="plasma")
        if qa.get("median_ra_offset_arcsec") is not None:
            ax.plot(qa["median_ra_offset_arcsec"], qa["median_dec_offset_arcsec"], "k+", ms=14, mew=2)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    off = qa.get("astrometry_offset_arcsec")
    ax.set_title(f"astrometry: {len(matches)} matches, median offset "
                 + (f"{off:.2f}\"" if off is not None else "n/a"), fontsize=9)
    ax.set_xlabel("dRA cos(Dec) (arcsec)")
    ax.set_ylabel("dDec (arcsec)")
    ax = fig.add_subplot(grid[1, 2])
    if len(matches):
        ax.scatter(matches.cat_flux_jy, matches.flux_ratio, s=8, c=np.log10(matches.snr), cmap="plasma")
        ax.set_xscale("log")
    ax.axhline(1, color="0.7", lw=0.8)
    fr = qa.get("flux_ratio")
    if fr is not None:
        ax.axhline(fr, color="k", lw=1, ls="--")
    ax.set_title("flux scale: median ratio " + (f"{fr:.3f}" if fr is not None else "n/a"), fontsize=9)
    ax.set_xlabel("catalogue flux (Jy)")
    ax.set_ylabel("mosaic / catalogue")
    reasons = "; ".join(qa.get("grade_reasons") or [])
    fig.suptitle(f"{title}: grade {qa['grade']}" + (f" ({reasons})" if reasons else ""), fontsize=10)
    fig.savefig(png, dpi=90, format="png")
    plt.close(fig)


__all__ = [
    "GroupIndex",
    "Wiring",
    "Grid",
    "ImageEntry",
    "MosaicError",
    "Plan",
    "QAOptions",
    "Region",
    "Selection",
    "TierOptions",
    "add_image",
    "build",
    "cross_match",
    "find_sources",
    "grade",
    "grid_for",
    "load_reference",
    "make_plan",
    "measure_qa",
    "nothing_selected",
    "read_entry",
    "regions",
    "render_preview",
    "selection_for",
    "target_names",
]
