"""Mosaic wiring at parse time: tier options, regions, which groups may belong to a mosaic."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .. import naming, telescope
from ..constants import MJD_UNIX_EPOCH, MJD_ZERO_JD, SECONDS_PER_DAY
from . import _DAY, _HOUR, MosaicError

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
            return datetime.strptime(str(text), fmt).replace(tzinfo=UTC)
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
            start = datetime.strptime(name, fmt).replace(tzinfo=UTC)
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
            from .. import geometry

            seconds = np.array([t.timestamp() for t in self.starts], float) + telescope.OBSERVATION_S / 2
            jd = seconds / SECONDS_PER_DAY + MJD_UNIX_EPOCH + MJD_ZERO_JD
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
        "so there is nothing to mosaic (its plan says so; no mosaic is made)"
    )


class Wiring:
    """Parse-time wiring of the mosaic rules: what the Snakefile asks, answered from names only.

    Built once per workflow parse from the complete groups and the config, so
    ``rules/mosaic.smk`` holds no logic: its input functions and targets are
    calls of these methods.
    """

    def __init__(
        self,
        results_dir: str | os.PathLike,
        group_ids: Iterable[str],
        config: Mapping[str, Any],
        held: Mapping[str, str] | None = None,
        target_ids: Iterable[str] | None = None,
    ) -> None:
        """``held`` maps groups held back by a failure to why (not waited for, listed in
        the plans they fall in); ``target_ids`` limits the days and hours of
        ``mosaic.targets`` to those of these groups (a rolling run's window)."""
        self.results_dir = os.fspath(results_dir)
        self.cfg = config["mosaic"]
        excluded = set(self.cfg.get("exclude_groups") or ())
        dec = config["pointing"]["dec_deg"]
        self.index = GroupIndex([g for g in group_ids if g not in excluded], dec)
        self.held = dict(held or {})
        self.held_index = GroupIndex([g for g in self.held if g not in excluded], dec)
        self.target_index = self.index if target_ids is None else GroupIndex(
            [g for g in target_ids if g not in excluded], dec)

    def selection(self, tier: str, name: str) -> Selection:
        return selection_for(tier, name, self.cfg, self.index.newest)

    def inputs(self, tier: str, name: str) -> dict[str, list[str]]:
        """The plan rule's inputs: images, primary beams and QA sidecars of the candidate groups.

        The sidecars are inputs too, so an image whose QA is revised (its
        sidecar rewritten) is re-planned like a new one. With no candidate the
        lists are empty: the plan is written empty with the reasons
        (:meth:`left_out`) and build_mosaic refuses it.
        """
        selection = self.selection(tier, name)
        groups = self.index.candidates(selection)
        return {
            "images": [naming.product_path(self.results_dir, "image", g) for g in groups],
            "pbs": [naming.product_path(self.results_dir, "pb", g) for g in groups],
            "sidecars": [naming.sidecar_path(naming.product_path(self.results_dir, "image", g)) for g in groups],
        }

    def left_out(self, tier: str, name: str) -> dict[str, str]:
        """Groups of the mosaic's selection the plan goes without -> why (held back by a
        failure); with no candidate at all, the empty selection itself (key ``""``)."""
        selection = self.selection(tier, name)
        why = {g: self.held[g] for g in self.held_index.candidates(selection)}
        if not self.index.candidates(selection) and not why:
            why[""] = nothing_selected(selection, len(self.index.ids))
        return why

    def resource(self, tier: str, key: str) -> Any:
        """``mosaic.tiers.<tier>.resources.<key>``."""
        return self.cfg["tiers"][tier]["resources"][key]

    def targets(self, kind: str = "mosaic_qa") -> tuple[list[str], list[str]]:
        """Paths of the ``mosaic.targets`` mosaics that have observations (none when disabled), and notes."""
        if not self.cfg["enabled"]:
            return [], []
        # Mosaics whose every observation is held back by a failure are targets too:
        # their plan is made, empty, with the reasons (the workflow builds no mosaic
        # from an empty plan: see rule mosaic_outcome).
        everything = GroupIndex(self.target_index.ids + self.held_index.ids, self.index.dec_deg)
        found, notes = target_names(everything, self.cfg)
        for tier, name in found:
            selection = self.selection(tier, name)
            if not self.index.candidates(selection):
                notes.append(f"{selection.describe()}: every observation is held back; its plan says why")
        return [naming.mosaic_path(self.results_dir, tier, name, kind) for tier, name in found], notes


def plan_keeps_images(plan: str | os.PathLike) -> bool:
    """Whether a written plan file chose at least one image (read after the plan job)."""
    import json

    with open(plan, encoding="utf-8") as f:
        return bool(json.load(f).get("images"))
