"""Grouping raw file names into observations, and the incomplete-group policy."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from dsa110_contimg import naming
from dsa110_contimg.raw import grouping

T0 = datetime(2025, 6, 15, 6, 0, 0, tzinfo=UTC)
CADENCE_S = 309  # one observation about every 309 s


def observation(start: datetime, subbands=range(16), jitter=None) -> list[str]:
    """Names of one observation, each subband opened 0-2 s after ``start``."""
    jitter = jitter or (lambda sb: sb % 3)
    return [naming.raw_filename(start + timedelta(seconds=jitter(sb)), sb) for sb in subbands]


def test_jittered_subbands_form_one_group_named_by_earliest_file():
    names = observation(T0 + timedelta(seconds=1), jitter=lambda sb: (sb * 7) % 3)
    names.append(naming.raw_filename(T0, 5))  # sb05 opened first
    names.remove(naming.raw_filename(T0 + timedelta(seconds=1 + (5 * 7) % 3), 5))
    result = grouping.group_files(reversed(names))
    assert [g.id for g in result.groups] == ["2025-06-15T06:00:00"]
    group = result.groups[0]
    assert group.complete and group.missing == []
    assert group.start == T0
    assert sorted(group.files) == list(range(16))
    assert group.ordered_files()[0].endswith("_sb00.hdf5")
    assert group.ordered_files()[-1].endswith("_sb15.hdf5")


def test_consecutive_observations_are_separate_groups():
    names = []
    for k in range(4):
        names += observation(T0 + timedelta(seconds=k * CADENCE_S))
    random.Random(0).shuffle(names)
    result = grouping.group_files(names)
    assert [g.id for g in result.groups] == [
        "2025-06-15T06:00:00",
        "2025-06-15T06:05:09",
        "2025-06-15T06:10:18",
        "2025-06-15T06:15:27",
    ]
    assert all(g.complete for g in result.groups)


def test_paths_are_kept_as_given():
    names = [f"/data/raw/{n}" for n in observation(T0)]
    group = grouping.group_files(names).groups[0]
    assert group.files[3] == f"/data/raw/{naming.raw_filename(T0, 3)}"


def test_tolerance_bounds_a_group_from_its_first_file():
    # files 0, 50, 100 s after T0: with 60 s the third starts a new group
    names = [naming.raw_filename(T0 + timedelta(seconds=s), sb) for sb, s in [(0, 0), (1, 50), (2, 100)]]
    result = grouping.group_files(names, tolerance_s=60, n_subbands=3)
    assert [sorted(g.files) for g in result.groups] == [[0, 1], [2]]
    assert grouping.group_files(names, tolerance_s=100, n_subbands=3).groups[0].complete


def test_incomplete_group_is_skipped_with_a_warning():
    names = observation(T0) + observation(T0 + timedelta(seconds=CADENCE_S), [sb for sb in range(16) if sb not in (3, 7)])
    result = grouping.group_files(names)
    assert result.groups[1].missing == [3, 7]
    assert not result.groups[1].complete
    selected = grouping.select_groups(result, "skip")
    assert [g.id for g in selected.groups] == ["2025-06-15T06:00:00"]
    assert "2025-06-15T06:05:09" in selected.warning
    assert "missing subbands sb03, sb07" in selected.warning


def test_incomplete_group_fails_under_fail_policy():
    names = observation(T0, range(15))
    with pytest.raises(grouping.IncompleteGroupError) as err:
        grouping.select_groups(grouping.group_files(names), "fail")
    assert "2025-06-15T06:00:00" in str(err.value)
    assert "sb15" in str(err.value)


def test_complete_listing_passes_both_policies_silently():
    result = grouping.group_files(observation(T0))
    for policy in ("skip", "fail"):
        selection = grouping.select_groups(result, policy)
        assert len(selection.groups) == 1 and selection.warning == ""


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="maybe"):
        grouping.select_groups(grouping.group_files([]), "maybe")


def test_duplicated_subband_names_both_files():
    names = observation(T0)
    twin = naming.raw_filename(T0 + timedelta(seconds=2), 4)  # sb04 written twice
    first = naming.raw_filename(T0 + timedelta(seconds=4 % 3), 4)
    result = grouping.group_files(names + [twin])
    group = result.groups[0]
    assert group.duplicates == {4: [first, twin]}
    assert group.files[4] == first
    assert not group.complete
    with pytest.raises(grouping.IncompleteGroupError) as err:
        grouping.select_groups(result, "fail")
    assert first in str(err.value) and twin in str(err.value)
    skipped = grouping.select_groups(result, "skip")
    assert skipped.groups == [] and first in skipped.warning and twin in skipped.warning


def test_files_that_are_not_observations_are_ignored():
    names = observation(T0) + ["notes.txt", ".DS_Store", "2025-06-15T06:00:00_sb00.hdf5.tmp"]
    result = grouping.group_files(names)
    assert result.ignored == ["notes.txt", ".DS_Store", "2025-06-15T06:00:00_sb00.hdf5.tmp"]
    assert result.invalid == {}
    assert result.groups[0].complete
    assert grouping.select_groups(result, "fail").warning == ""


def test_malformed_observation_names_are_reported():
    bad = ["2025-13-15T06:00:00_sb00.hdf5", "2025-06-15T06:00:00_sb16.hdf5"]
    result = grouping.group_files(observation(T0) + bad)
    assert sorted(result.invalid) == sorted(bad)
    assert "month" in result.invalid[bad[0]] and "subband 16" in result.invalid[bad[1]]
    assert result.groups[0].complete
    skipped = grouping.select_groups(result, "skip")
    assert len(skipped.groups) == 1 and all(b in skipped.warning for b in bad)
    with pytest.raises(naming.RawNameError, match="sb16"):
        grouping.select_groups(result, "fail")


def test_subbands_beyond_n_subbands_are_malformed():
    result = grouping.group_files(observation(T0, range(4)), n_subbands=2)
    assert [sorted(g.files) for g in result.groups] == [[0, 1]]
    assert len(result.invalid) == 2


def test_empty_listing():
    result = grouping.group_files([])
    assert result.groups == [] and result.ignored == [] and result.invalid == {}
    assert grouping.select_groups(result, "fail") == ([], "")


def test_group_lookup_by_id():
    result = grouping.group_files(observation(T0))
    assert result.by_id["2025-06-15T06:00:00"] is result.groups[0]


def test_thirty_days_group_quickly():
    """~8,400 observations x 16 subbands; Snakemake regroups at every parse."""
    rng = random.Random(1)
    names = []
    start, k = T0, 0
    while start < T0 + timedelta(days=30):
        names += [f"raw/{n}" for n in observation(start, jitter=lambda sb: rng.uniform(0, 2))]
        k += 1
        start = T0 + timedelta(seconds=k * 309.237)
    rng.shuffle(names)
    began = time.perf_counter()
    result = grouping.group_files(names)
    selection = grouping.select_groups(result, "skip")
    elapsed = time.perf_counter() - began
    assert len(result.groups) == k and len(selection.groups) == k and selection.warning == ""
    assert elapsed < 5, f"grouping 30 days took {elapsed:.2f} s"  # sanity bound only; ~0.2 s here
