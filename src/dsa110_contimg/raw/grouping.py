"""Group raw subband files into observations, from their names alone.

The correlator opens the 16 subband files of one observation 0-2 s apart and
names each after its own opening second, so the files of one observation do
not share a timestamp. A group starts at the earliest file not yet assigned
and takes every file that started within ``tolerance_s`` of it; its id is
that earliest timestamp. Snakemake calls this at every parse, so it opens no
file and stays fast on a month of listings.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import NamedTuple

import numpy as np

from .. import naming

POLICIES = ("skip", "fail")


class GroupingError(ValueError):
    """Raw files that cannot be turned into the groups asked for."""


class IncompleteGroupError(GroupingError):
    """A group lacks subbands (or has one twice) under the ``fail`` policy."""


@dataclass(frozen=True)
class Group:
    """The subband files of one observation.

    ``files`` maps subband -> name (as given: basename or path). When a
    subband appears twice, ``files`` holds the earlier file and
    ``duplicates`` lists every file claiming that subband; such a group is not
    complete because nobody can tell which file is right. ``unreadable`` maps
    subbands whose file cannot be read (a dangling symlink, a symlink to
    something else than a regular file) to the reason (see :func:`check_readable`).
    """

    id: str
    start: datetime
    files: dict[int, str]
    missing: list[int]
    duplicates: dict[int, list[str]] = field(default_factory=dict)
    unreadable: dict[int, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every subband present exactly once and readable: ready to convert."""
        return not self.missing and not self.duplicates and not self.unreadable

    def ordered_files(self) -> list[str]:
        """The files in subband order, sb00 (the highest frequency) first."""
        return [self.files[sb] for sb in sorted(self.files)]

    def problem(self) -> str:
        """One line saying why the group is not complete ('' if it is)."""
        parts = []
        if self.missing:
            parts.append("missing subbands " + ", ".join(f"sb{sb:02d}" for sb in self.missing))
        for sb, names in sorted(self.duplicates.items()):
            parts.append(f"sb{sb:02d} appears twice: " + " and ".join(names))
        for sb, why in sorted(self.unreadable.items()):
            parts.append(f"sb{sb:02d} {why}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Grouping:
    """Result of :func:`group_files`.

    ``groups`` in time order; ``invalid`` maps names that look like raw files
    but are malformed to the reason; ``ignored`` lists names that are not
    observations at all (``notes.txt``, ``.DS_Store``).
    """

    groups: list[Group]
    invalid: dict[str, str]
    ignored: list[str]

    @cached_property
    def by_id(self) -> dict[str, Group]:
        return {g.id: g for g in self.groups}

    @property
    def complete(self) -> list[Group]:
        return [g for g in self.groups if g.complete]

    @property
    def incomplete(self) -> list[Group]:
        return [g for g in self.groups if not g.complete]


class Selection(NamedTuple):
    """Groups to process, and the warning to show about the others ('' if none)."""

    groups: list[Group]
    warning: str


def raw_names(raw_dir: str | os.PathLike) -> list[str]:
    """Names of the entries of ``raw_dir`` that are not folders (no file is opened).

    Raises FileNotFoundError when ``raw_dir`` does not exist.
    """
    with os.scandir(raw_dir) as entries:
        return [entry.name for entry in entries if not entry.is_dir()]


def unreadable_files(raw_dir: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """name -> why, for the names in ``raw_dir`` that Snakemake would find missing.

    A listed name that is a symlink is followed (one ``stat`` per symlink; a
    regular file costs nothing: the directory listing says what it is): a
    dangling symlink, or one to something that is not a regular file, is
    reported, and so is a name that vanished since the listing. A regular
    file this user cannot read is left to its convert job, which fails with
    the file named (its group's problem alone, like these).
    """
    wanted = set(names)
    with os.scandir(raw_dir) as entries:
        listed = {e.name: e.is_symlink() for e in entries}
    problems = {name: f"{os.path.join(raw_dir, name)}: vanished since raw_dir was listed"
                for name in wanted.difference(listed)}  # fmt: skip
    for name in wanted.intersection(n for n, link in listed.items() if link):
        path = os.path.join(raw_dir, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            problems[name] = f"{path}: dangling symlink to {os.readlink(path)!r}"
            continue
        except OSError as exc:
            problems[name] = f"{path}: cannot follow the symlink ({exc.strerror})"
            continue
        if not stat.S_ISREG(st.st_mode):
            problems[name] = f"{path}: symlink to something that is not a regular file"
    return problems


def check_readable(grouping: Grouping, raw_dir: str | os.PathLike) -> Grouping:
    """``grouping`` with each group's unreadable files (:func:`unreadable_files`) marked:
    such a group is incomplete, that group's problem alone."""
    problems = unreadable_files(raw_dir, [name for g in grouping.groups for name in g.files.values()])
    if not problems:
        return grouping
    return Grouping([_mark(g, problems) for g in grouping.groups], grouping.invalid, grouping.ignored)


def read_raw(raw_dir: str | os.PathLike, grouping_cfg: Mapping, names: Iterable[str] | None = None) -> Grouping:
    """The observations in ``raw_dir`` (config section ``grouping``), unreadable files marked
    (:func:`check_readable`). ``names`` defaults to the listing (FileNotFoundError without
    ``raw_dir``)."""
    names = raw_names(raw_dir) if names is None else names
    found = group_files(names, tolerance_s=grouping_cfg["tolerance_s"], n_subbands=grouping_cfg["n_subbands"])
    return check_readable(found, raw_dir)


def newest_mtime(raw_dir: str | os.PathLike, group: Group) -> float:
    """Newest modification time (Unix seconds) of a group's files; a vanished file counts as now."""
    names = list(group.files.values()) + [n for dup in group.duplicates.values() for n in dup]
    try:
        return max((os.stat(os.path.join(raw_dir, name)).st_mtime for name in names), default=0.0)
    except FileNotFoundError:
        return time.time()


def _mark(group: Group, problems: Mapping[str, str]) -> Group:
    bad = {sb: problems[name] for sb, name in group.files.items() if name in problems}
    return replace(group, unreadable=bad) if bad else group


def group_files(names: Iterable[str], tolerance_s: float = 60, n_subbands: int = 16) -> Grouping:
    """Group raw file names (basenames or paths) into observations.

    Sorted by time, a group starts at the earliest unassigned file and takes
    the files that started at most ``tolerance_s`` later. Subbands are
    expected to be 0..n_subbands-1.
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, not {tolerance_s}")
    if not 1 <= n_subbands <= naming.N_SUBBANDS:
        raise ValueError(f"n_subbands must be in 1..{naming.N_SUBBANDS}, not {n_subbands}")
    listing = naming.classify_raw_names(names)
    invalid = dict(listing.invalid)
    keep = listing.subbands < n_subbands
    for i in np.flatnonzero(~keep).tolist():
        invalid[listing.names[i]] = (
            f"{listing.names[i]!r}: subband {listing.subbands[i]} outside 00..{n_subbands - 1:02d}"
            f" (grouping.n_subbands is {n_subbands})"
        )
    idx = np.flatnonzero(keep)
    seconds, subbands = listing.seconds[idx], listing.subbands[idx]
    order = np.lexsort((subbands, seconds))  # by time, then subband
    idx, seconds, subbands = idx[order], seconds[order], subbands[order]

    # Group boundaries: each group begins at the first file later than the
    # previous group's start + tolerance (one searchsorted per group).
    bounds = [0]
    while bounds[-1] < len(seconds):
        first = seconds[bounds[-1]]
        bounds.append(int(np.searchsorted(seconds, first + tolerance_s, side="right")))
    starts = seconds[bounds[:-1]]
    ids = naming.format_epoch_seconds(starts)
    start_times = [t.replace(tzinfo=UTC) for t in starts.astype("datetime64[s]").tolist()]
    names = [listing.names[i] for i in idx.tolist()]
    sbs = subbands.tolist()
    groups = []
    for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        files = dict(zip(sbs[a:b], names[a:b]))
        duplicates: dict[int, list[str]] = {}
        if len(files) < b - a:  # rare: redo keeping the earlier file of each pair
            files = {}
            for sb, name in zip(sbs[a:b], names[a:b]):
                if sb in files:
                    duplicates.setdefault(sb, [files[sb]]).append(name)
                else:
                    files[sb] = name
        missing = [] if len(files) == n_subbands else [sb for sb in range(n_subbands) if sb not in files]
        groups.append(Group(ids[g], start_times[g], files, missing, duplicates))
    return Grouping(groups, invalid, listing.ignored)


def select_groups(grouping: Grouping, policy: str) -> Selection:
    """Apply the ``grouping.incomplete`` policy.

    ``skip``: the complete groups, and a warning naming every incomplete group
    with its missing (or doubled) subbands and every malformed raw name.
    ``fail``: raise :class:`IncompleteGroupError` (or, for malformed names
    only, :class:`naming.RawNameError`) naming them, so nothing runs.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown incomplete-group policy {policy!r}; use one of {list(POLICIES)}")
    lines = [f"group {g.id}: {g.problem()}" for g in grouping.incomplete]
    bad_names = list(grouping.invalid.values())
    if policy == "fail":
        if lines:
            raise IncompleteGroupError("; ".join(lines + bad_names))
        if bad_names:
            raise naming.RawNameError("; ".join(bad_names))
        return Selection(grouping.groups, "")
    warning = []
    if lines:
        warning.append(f"skipping {len(lines)} incomplete group(s):")
        warning.extend("  " + line for line in lines)
    if bad_names:
        warning.append(f"skipping {len(bad_names)} file(s) with malformed raw names:")
        warning.extend("  " + line for line in bad_names)
    return Selection(grouping.complete, "\n".join(warning))
