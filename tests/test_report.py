"""The report's figures and tables from products on disk (dsa110_contimg.monitoring.report)."""

from __future__ import annotations

import os

import pytest
from pictures import assert_picture

from dsa110_contimg import naming
from dsa110_contimg.monitoring import report
from dsa110_contimg.provenance import write_sidecar


def test_busy_hours_is_the_union_of_job_intervals():
    # Two overlapping jobs (0-20 s, 10-15 s), a pause, then one of 36 s: 56 s busy, not 136.
    assert report.busy_hours([0, 10, 100], [20, 15, 136]) == pytest.approx(56 / 3600)
    assert report.busy_hours([], []) == 0


def test_benchmarks_are_read_per_rule_and_job(tmp_path):
    folder = tmp_path / "benchmarks"
    for rule, job, seconds in (("image", "2025-06-16T03:45:00", 140.5), ("build_mosaic", "science/2025-06-16", 79.0)):
        path = folder / rule / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:02:20\t1157.5\n")
    table = report.read_benchmarks(tmp_path).set_index("rule")
    assert table.loc["image", "wall_s"] == 140.5 and table.loc["image", "max_rss_mb"] == 1157.5
    assert table.loc["build_mosaic", "job"] == "science/2025-06-16"
    figures = report.throughput(table.reset_index(), 1, tmp_path / "t.png")
    assert figures["slowest"][0]["rule"] == "image" and figures["observations_per_hour"] > 0

    (folder / "image" / "bad.tsv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bad.tsv"):
        report.read_benchmarks(tmp_path)


def _caltable(results, group, start, end, passed=True):
    path = naming.product_path(results, "caltable", group)
    os.makedirs(path, exist_ok=True)
    write_sidecar(path, kind="caltable", group=group,
                  qa={"valid_start": start, "valid_end": end, "calibrator": "3C286", "passed": passed})


def test_calibration_timeline_counts_gaps_overlaps_and_uncalibrated(tmp_path):
    results = tmp_path / "results"
    _caltable(results, "2025-06-16T03:46:17", "2025-06-15T15:46:46", "2025-06-16T15:46:46")
    _caltable(results, "2025-06-17T03:42:21", "2025-06-16T12:00:00", "2025-06-17T15:42:51")  # overlaps the first
    _caltable(results, "2025-06-19T03:34:30", "2025-06-18T18:00:00", "2025-06-19T15:34:59")  # a gap before it
    _caltable(results, "2025-06-20T03:30:00", "2025-06-19T15:30:00", "2025-06-20T15:30:00", passed=False)
    obs = [report.Observation("2025-06-16T04:00:00", "imaged", "2025-06-16T03:46:17", None),
           report.Observation("2025-06-18T10:00:00", "converted", None, None),
           report.Observation("2025-06-18T11:00:00", "raw", None, None)]
    figures = report.calibration_timeline(results, obs, tmp_path / "timeline.png")
    # The failed solution is drawn but bridges nothing; the raw-only group is not "uncalibrated" yet.
    assert figures == {"calibrations": 4, "uncalibrated": 1, "gaps": 1, "overlaps": 1}
    assert_picture(tmp_path / "timeline.png")


def test_observation_stage_and_qa_from_the_files(tmp_path):
    results = tmp_path / "results"
    group = "2025-06-16T03:45:00"
    for kind in ("ms", "calibrated"):
        os.makedirs(naming.product_path(results, kind, group))
    write_sidecar(naming.product_path(results, "calibrated", group), kind="calibrated", group=group,
                  qa={"caltable": "2025-06-16T03:46:17"})
    (obs,) = report.observations(results, [group])
    assert (obs.stage, obs.caltable, obs.image_qa) == ("calibrated", "2025-06-16T03:46:17", None)
    frame = report.observations_frame([obs], {group: "image: ImagingError: all data flagged"})
    assert frame.loc[0, "failure"] == "image: ImagingError: all data flagged" and frame.loc[0, "grade"] == ""
