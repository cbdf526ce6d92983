"""The rolling run's parse-time choices: settle time, window, failed groups held back."""

from __future__ import annotations

import datetime as dt
import os
import time

from db_products import group_at, make_raw

from dsa110_contimg.config import validate_config
from dsa110_contimg.db import record_job
from dsa110_contimg.raw import grouping
from dsa110_contimg.rolling import held, window

UTC = dt.UTC


def _age(paths, seconds):
    stamp = time.time() - seconds
    for p in paths:
        os.utime(p, (stamp, stamp))


def test_groups_being_written_wait_and_the_window_is_recent_nights(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    old = make_raw(raw, group_at(60, "2025-06-10"))
    done = make_raw(raw, group_at(60))
    writing = make_raw(raw, group_at(70), subbands=range(9))  # the correlator is still writing it
    _age(old + done, 3600)
    _age(writing[:-1], 3600)  # its newest file is fresh
    found = grouping.group_files(grouping.raw_names(raw))
    assert len(found.incomplete) == 1
    picked = window.select(found, raw, {"settle_s": 600, "window_days": 2})
    assert picked.settling == (group_at(70),)
    assert [g.id for g in picked.grouping.groups] == [group_at(60, "2025-06-10"), group_at(60)]
    assert picked.grouping.incomplete == [], "a group being written is not counted incomplete"
    assert picked.window_start == dt.datetime(2025, 6, 14)
    assert picked.in_window([g.id for g in found.groups]) == [group_at(60), group_at(70)]
    # Once its files are old enough, the same group is planned (and, incomplete, listed so).
    _age(writing, 3600)
    again = window.select(grouping.group_files(grouping.raw_names(raw)), raw, {"settle_s": 600, "window_days": 1})
    assert again.settling == () and [g.id for g in again.grouping.incomplete] == [group_at(70)]
    assert again.window_start == dt.datetime(2025, 6, 15)


def test_a_failed_group_is_held_until_its_file_is_replaced_or_the_retry_time(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    config = validate_config({"raw_dir": str(raw), "results_dir": str(tmp_path / "results"),
                              "run": {"retry_failed_after_h": 6}})
    bad, good, fixed = group_at(10), group_at(20), group_at(30)
    files = {g: make_raw(raw, g) for g in (bad, good, fixed)}
    for paths in files.values():
        _age(paths, 7200)
    now = dt.datetime.now(UTC)
    hour = dt.timedelta(hours=1)
    record_job(config, "convert", {"group": bad}, "failed", started=now - hour, finished=now - hour,
               message="ConversionError: raw/x_sb04.hdf5: truncated")
    # good: failed once, then succeeded (the latest run counts)
    record_job(config, "image", {"group": good}, "failed", started=now - 3 * hour, finished=now - 3 * hour,
               message="boom")
    record_job(config, "image", {"group": good}, "success", started=now - 2 * hour, finished=now - 2 * hour)
    # fixed: failed, then a raw file was replaced after the failure
    record_job(config, "convert", {"group": fixed}, "failed", started=now - 1.5 * hour,
               finished=now - 1.5 * hour, message="truncated")
    os.utime(files[fixed][4], None)
    groups = grouping.group_files(grouping.raw_names(raw)).by_id
    out = held.held_back(config, groups, raw)
    assert out == {bad: "convert failed: ConversionError: raw/x_sb04.hdf5: truncated"}
    # Past run.retry_failed_after_h the group is tried once more; null holds it until a file changes.
    assert held.held_back(config, groups, raw, now=(now + 6 * hour).replace(tzinfo=None)) == {}
    config["run"]["retry_failed_after_h"] = None
    assert bad in held.held_back(config, groups, raw, now=(now + 600 * hour).replace(tzinfo=None))


def test_a_held_back_transit_is_named_for_the_calibrator_flux_and_its_targets_lose_it(tmp_path):
    from simdata import transit_start

    from dsa110_contimg import naming, run_plan

    raw = tmp_path / "raw"
    raw.mkdir()
    transit = naming.format_timestamp(transit_start())
    target = naming.format_timestamp(transit_start() + dt.timedelta(seconds=620))
    _age(make_raw(raw, transit) + make_raw(raw, target), 3600)
    config = validate_config({
        "raw_dir": str(raw), "results_dir": str(tmp_path / "results"), "pointing": {"dec_deg": 30.5},
        "run": {"rolling": True, "window_days": 30000, "hold": {transit: "convert failed: truncated"}},
    })  # fmt: skip
    plan = run_plan.build(config)
    assert plan.held == {transit: "convert failed: truncated"}
    assert plan.calflux_left_out == {transit: "3C286: convert failed: truncated"}
    assert list(plan.groups) == [target] and target in plan.calibration.problems
    assert plan.left_out() == {transit: "convert failed: truncated"}
