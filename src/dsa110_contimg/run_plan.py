"""The parse-time plan of the workflow: one object the Snakefile builds once.

From the validated config and the names in raw_dir (no file is opened, no
database or catalogue is read) it answers everything the rules ask: the
complete observation groups and their subband files, the calibration plan
(calibrator transits, each group's candidate calibrations), the mosaic wiring
and the default targets. It is deterministic: the same names and config give
the same plan, so every Slurm job's own snakemake rebuilds the same DAG
cheaply. Checks that need a service (database, catalogue) run once per run
in the Snakefile's ``onstart:`` (:func:`preflight`) or in ``contimg check``.

A rolling run (``run.rolling``, set by ``contimg run``) plans only settled
groups (:mod:`.rolling.window`), targets the products of a window of recent
nights, and goes without the groups of ``run.hold`` (held back by a failure;
``contimg run`` finds them in the database before it starts Snakemake, so
parsing asks no service): the fan-ins run on what succeeded and list what
they left out, and why (:meth:`RunPlan.left_out`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import naming
from .calibration import plan as calplan
from .mosaic.wiring import Wiring
from .raw import grouping


class PlanError(ValueError):
    """The run cannot be planned (missing raw_dir, incomplete groups under policy 'fail')."""


def _summarise(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class RunPlan:
    """Everything the rules need to know, computed from names and config."""

    config: Mapping[str, Any]
    grouping: grouping.Grouping
    groups: dict[str, grouping.Group]
    calibration: calplan.CalibrationPlan
    mosaics: Wiring
    mosaic_targets: list[str]
    notes: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    """Groups held back by a failure (``run.hold``) -> why: not planned, not waited for."""
    target_ids: list[str] | None = None
    """The groups whose products are targets (a rolling run's window); None: every group."""
    calflux_left_out: dict[str, str] = field(default_factory=dict)
    """Held-back calibrator transits -> why (the calibrator flux fan-in lists them)."""

    @property
    def results(self) -> str:
        return self.config["results_dir"]

    @property
    def raw(self) -> str:
        return self.config["raw_dir"]

    def group(self, group_id: str) -> grouping.Group:
        """The complete group ``group_id``, or a ValueError saying why it cannot be processed."""
        try:
            return self.groups[group_id]
        except KeyError:
            if group_id in self.held:
                raise ValueError(f"group {group_id} is held back: {self.held[group_id]}") from None
            known = self.grouping.by_id.get(group_id)
            if known is not None:
                raise ValueError(f"group {known.id} cannot be processed: {known.problem()}") from None
            raise ValueError(f"no observation {group_id} in raw_dir {self.raw!r}") from None

    def subband_files(self, group_id: str) -> list[str]:
        """Raw files of one group, sb00 (highest frequency) first."""
        return [os.path.join(self.raw, name) for name in self.group(group_id).ordered_files()]

    def caltables_for(self, group_id: str) -> list[str]:
        """The group's candidate calibrations, nearest first."""
        return [naming.product_path(self.results, "caltable", c)
                for c in self.calibration.candidates.get(group_id, [])]

    def flux_references_for(self, group_id: str) -> list[str]:
        """Flux-standard solutions of this run the group's flux bootstrap may read
        (:func:`dsa110_contimg.calibration.plan.flux_references`)."""
        refs = calplan.flux_references(self.calibration, group_id,
                                       self.config["calibration"]["bootstrap_max_separation_h"])
        return [naming.product_path(self.results, "caltable", c) for c in refs]

    def calibration_problem(self, group_id: str) -> str | None:
        return self.calibration.problems.get(group_id)

    def photometry_enabled(self) -> bool:
        return bool(self.config["catalogue"]["path"]) and bool(self.groups)

    @property
    def targeted(self) -> list[str]:
        """The groups whose products the run targets, in time order."""
        return sorted(self.groups) if self.target_ids is None else list(self.target_ids)

    def products(self, kind: str, group_ids: list[str] | None = None) -> list[str]:
        """Paths of product ``kind`` of ``group_ids`` (default: the targeted groups)."""
        ids = self.targeted if group_ids is None else group_ids
        return [naming.product_path(self.results, kind, g) for g in ids]

    def earlier(self, kind: str) -> list[str]:
        """Existing products ``kind`` of the groups before a rolling run's window: a fan-in
        reads them (light curves span the survey) without planning their jobs."""
        if self.target_ids is None:
            return []
        targeted = set(self.target_ids)
        ids = sorted(g for g in self.groups if g not in targeted)
        if kind == "caltable":
            ids = [g for g in ids if g in self.calibration.calgroups]
        return [p for p in self.products(kind, ids) if os.path.exists(naming.sidecar_path(p))]

    def calibrator_caltables(self) -> list[str]:
        """The solutions of the targeted calibrator transits: the flux monitor's inputs."""
        return self.products("caltable", [g for g in self.targeted if g in self.calibration.calgroups])

    def left_out(self) -> dict[str, str]:
        """Groups the fan-ins go without -> why: held back by a failure, or incomplete
        (groups still being written are not listed: they are not seen yet)."""
        why = dict(self.held)
        why.update({g.id: f"incomplete: {g.problem()}" for g in self.grouping.incomplete})
        return dict(sorted(why.items()))

    def targets(self) -> list[str]:
        """Every final product: images, the calibrator flux table when a calibrator
        transits, photometry + new sources + the light-curve fan-in when a
        catalogue is configured, the mosaics of ``mosaic.targets``.

        With no group the target is raw_dir itself (it exists), so Snakemake
        plans no job at all; an empty target list would still run 'all'.
        """
        targets = self.products("image")
        if self.calibration.calgroups:
            targets.append(naming.calflux_path(self.results))
        if self.photometry_enabled():
            targets += [naming.product_path(self.results, "ese_candidates", "all"),
                        naming.product_path(self.results, "variability", "all")]
            targets += self.products("new_sources")
        return (targets + self.mosaic_targets) or [self.raw]


def build(config: Mapping[str, Any], names: list[str] | None = None) -> RunPlan:
    """The plan for ``config`` (validated) and the names in its raw_dir (listed when not given)."""
    raw = config["raw_dir"]
    if names is None:
        try:
            names = grouping.raw_names(raw)
        except FileNotFoundError:
            raise PlanError(
                f"raw_dir {raw!r} does not exist (working directory {os.getcwd()!r}); "
                "set raw_dir in the config or pass --config raw_dir=PATH"
            ) from None
    # A raw file that is not a readable regular file (a dangling symlink, say)
    # makes its group incomplete: that group's problem, never the whole run's.
    found = grouping.read_raw(raw, config["grouping"], names)
    notes = []
    rolling = config["run"]["rolling"]
    if rolling:
        from .rolling import window

        picked = window.select(found, raw, config["run"])
        found = picked.grouping
        if picked.settling:
            notes.append(f"waiting for {len(picked.settling)} group(s) still being written (run.settle_s): "
                         f"{_summarise(list(picked.settling))}")
    try:
        selection = grouping.select_groups(found, config["grouping"]["incomplete"])
    except (grouping.GroupingError, naming.RawNameError) as err:
        raise PlanError(f"raw_dir {raw!r} (grouping.incomplete is 'fail'): {err}") from None
    groups = {g.id: g for g in selection.groups}
    held = {g: why for g, why in sorted(config["run"]["hold"].items()) if g in groups} if rolling else {}
    for group_id, why in held.items():
        notes.append(f"holding back {group_id} until its cause changes: {why}")
    if held:
        # A group is a transit by its own time span alone, so the held groups are planned by themselves.
        transits = calplan.plan_calibration(held, config["pointing"]["dec_deg"], config["calibration"]).calgroups
        calflux_left_out = {g: f"{transits[g]}: {why}" for g, why in held.items() if g in transits}
        groups = {g: v for g, v in groups.items() if g not in held}
    else:
        calflux_left_out = {}
    target_ids = picked.in_window(groups) if rolling else None
    if selection.warning:
        notes.append(f"WARNING: raw_dir {raw!r}: {selection.warning}")
    if found.ignored:
        notes.append(f"ignoring {len(found.ignored)} file(s) in raw_dir {raw!r} that are not observations: "
                     f"{_summarise(sorted(found.ignored))}")
    if not groups:
        notes.append(f"no complete observation in raw_dir {raw!r}: nothing to do")
    cal = calplan.plan_calibration(groups, config["pointing"]["dec_deg"], config["calibration"])
    if cal.calgroups:
        notes.append("calibrator transits: " + ", ".join(f"{n} in {g}" for g, n in sorted(cal.calgroups.items())))
    if cal.problems:
        notes.append(f"WARNING: {len(cal.problems)} group(s) have no calibration and will fail at "
                     f"apply_calibration: {_summarise(sorted(cal.problems))}")
    mosaics = Wiring(config["results_dir"], groups, config, held=held, target_ids=target_ids)
    # A mosaic target stands for its outcome record: the QA of a plan that kept images,
    # the plan alone (saying why) of one that kept none (rule mosaic_outcome).
    mosaic_targets, mosaic_notes = mosaics.targets("mosaic_outcome")
    return RunPlan(config, found, groups, cal, mosaics, mosaic_targets, notes + mosaic_notes, held, target_ids,
                   calflux_left_out)


def preflight(config: Mapping[str, Any]) -> list[str]:
    """Checks that need a service, run once before any job (``onstart:``, ``contimg check``).

    Returns what was checked; raises :class:`PlanError` naming the problem
    (the database unreachable or at another schema revision, a catalogue
    that cannot be read).
    """
    from .db import DatabaseError, check_database
    from .photometry.catalogue import check_catalogue

    try:
        done = [check_database(config)]
    except DatabaseError as err:
        raise PlanError(f"product database: {err}") from None
    if problem := check_catalogue(config):
        raise PlanError(f"catalogue: {problem}")
    if config["catalogue"]["path"]:
        done.append(f"catalogue {config['catalogue']['path']}: readable")
    return done
