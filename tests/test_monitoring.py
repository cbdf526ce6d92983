"""Monitoring: ``contimg status`` (per-night health, failures with reasons,
alerts, JSON and Prometheus) and the Snakemake report (rule summary), opened in
a real headless browser.

One real workflow run (module fixture): three tiny simulated observations, the
third holding a 3C286 transit, the first with a truncated subband. Its state
is read by several tests; the last one repairs the file and reruns, so keep
the tests that need the failure above it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from db_products import make_chain, make_raw
from pictures import assert_picture
from report_check import (
    build_report,
    decoded,
    open_in_browser,
    read_table,
    report_results,
)
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import cli, naming
from dsa110_contimg.calibration import fluxmon
from dsa110_contimg.config import load_config
from dsa110_contimg.db import Database
from dsa110_contimg.monitoring import status
from dsa110_contimg.provenance import atomic_output, read_sidecar, sidecar_path, write_sidecar
from dsa110_contimg.raw.grouping import group_files

CONTIMG = Path(sys.executable).with_name("contimg")
RUN_CONFIG = {
    "raw_dir": "raw",
    "results_dir": "results",
    "pointing": {"dec_deg": 30.5},
    "imaging": {"imsize": 256},
    "mosaic": {"enabled": False},
}


def contimg_status(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CONTIMG), "status", "--config", str(config), *args],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def write_config(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**RUN_CONFIG, **changes}))
    return path


def run_workflow(snakemake_exe: Path, repo_root: Path, workdir: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(snakemake_exe), "-s", str(repo_root / "Snakefile"), "-d", str(workdir),
        "--configfile", str(repo_root / "config" / "config.yaml"), str(workdir / "run.yaml"),
        "--cores", "2", "--keep-going",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory, snakemake_exe, repo_root):
    """The workflow on three observations, one subband of the first truncated."""
    workdir = tmp_path_factory.mktemp("status_run")
    opts = replace(SMALL, start=transit_start(), n_obs=3, n_int=6, n_ants=16, n_chan=4, dec_deg=30.5,
                   n_sources=4)  # fmt: skip
    files = simulate(workdir, opts)
    groups = group_files([f.name for f in files]).groups
    bad = workdir / "raw" / groups[0].ordered_files()[4]
    original = bad.read_bytes()
    bad.write_bytes(original[:2000])
    write_config(workdir / "run.yaml")
    out = run_workflow(snakemake_exe, repo_root, workdir)
    assert out.returncode != 0, "the truncated subband fails its group"
    assert (workdir / naming.product_path("results", "image", groups[2].id)).exists(), out.stderr[-3000:]
    return {"dir": workdir, "groups": [g.id for g in groups], "bad": bad, "original": original}


def test_failed_group_is_named_with_its_reason_and_exits_1(run):
    out = contimg_status(run["dir"], run["dir"] / "run.yaml")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    text = out.stdout
    bad_group = run["groups"][0]
    failed = text.split("failed:\n", 1)[1].splitlines()[0]
    assert failed.lstrip().startswith(f"{bad_group}  convert: ConversionError")
    assert run["bad"].name in failed and "truncated" in failed
    night = run["groups"][0][:10]
    row = next(line.split() for line in text.splitlines() if line.startswith(night))
    assert row[:7] == [night, "3", "0", "2", "2", "2", "1"]  # seen, incomplete, converted, calibrated, imaged, failed
    assert f"calibration: {run['groups'][2]} on 3C286" in text
    alerts = text.split("ALERTS (", 1)[1]
    assert f"jobs_failed {night}: 1 failed job(s): {bad_group} convert" in alerts


def test_products_night_shows_a_failed_group_with_its_raw_files(run):
    """convert registers the raw files first: the failed group is complete, not "0/16 incomplete"."""
    night = run["groups"][0][:10]
    out = subprocess.run([str(CONTIMG), "products", "night", night, "--config", str(run["dir"] / "run.yaml"),
                          "--format", "json"], cwd=run["dir"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    row = next(r for r in summary["groups"] if r["group"] == run["groups"][0])
    assert row["raw"] == "16/16" and row["complete"] is True and not row["converted"]
    assert run["bad"].name in row["failed"][0]
    assert row["flagged_fraction"] is None and row["rfi_flagged_fraction"] is None
    assert summary["totals"]["incomplete"] == 0 and summary["totals"]["failed"] == 1
    for group in run["groups"][1:]:  # calibrated: the sidecar's figures, per group
        qa = read_sidecar(sidecar_path(naming.product_path(run["dir"] / "results", "calibrated", group)))["qa"]
        row = next(r for r in summary["groups"] if r["group"] == group)
        assert (row["flagged_fraction"], row["rfi_flagged_fraction"]) == pytest.approx(
            (qa["flagged_fraction"], qa["rfi_flagged_fraction"])
        )
    text = subprocess.run([str(CONTIMG), "products", "night", night, "--config", str(run["dir"] / "run.yaml")],
                          cwd=run["dir"], capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    header = next(line for line in text.splitlines() if line.startswith("group"))
    assert header.split()[:6] == ["group", "raw", "stage", "grade", "flagged", "rfi"]
    line = next(line for line in text.splitlines() if line.startswith(run["groups"][2]))
    assert line.split()[-2:] == [f"{qa['flagged_fraction']:.3f}", f"{qa['rfi_flagged_fraction']:.3f}"]


def test_json_report(run):
    out = contimg_status(run["dir"], run["dir"] / "run.yaml", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["version"] == status.REPORT_VERSION and report["ok"] is False
    assert set(report) == {
        "version", "generated", "reference_time", "raw_dir", "database", "database_present",
        "database_problems", "nights",
        "calibration", "calibrator_flux", "newest_observation", "thresholds", "missing", "alerts", "ok",
    }  # fmt: skip
    assert report["reference_time"] == report["newest_observation"] == run["groups"][2]
    (night,) = report["nights"]
    assert night["totals"] == {"seen": 3, "incomplete": 0, "converted": 2, "calibrated": 2, "imaged": 2,
                               "failed": 1, "failed_jobs": 1}  # fmt: skip
    (failure,) = night["failures"]
    assert failure["group"] == run["groups"][0] and failure["rule"] == "convert"
    assert run["bad"].name in failure["reason"] and Path(failure["log"]).exists()
    assert night["n_images"] == 2 and night["image_rms_over_thermal"] > 0
    assert 0 <= night["flagged_fraction"] < 1
    # RFI flagging of the two calibrated groups (apply_calibration's sidecars): their median
    rfi = [read_sidecar(sidecar_path(naming.product_path(run["dir"] / "results", "calibrated", g)))["qa"]["rfi_flagged_fraction"]
           for g in run["groups"][1:]]  # fmt: skip
    assert night["rfi_flagged_fraction"] == pytest.approx(sum(rfi) / 2)
    assert 0 <= night["rfi_flagged_fraction"] <= night["flagged_fraction"]
    latest = report["calibration"]["latest"]
    assert latest["calgroup"] == run["groups"][2] and latest["calibrator"] == "3C286"
    transit = dt.datetime.fromisoformat(latest["transit_time"])
    assert dt.datetime.fromisoformat(latest["valid_end"]) - transit == dt.timedelta(hours=12)
    assert latest["expired"] is False and abs(latest["age_h"]) < 0.1
    assert {a["name"] for a in report["alerts"]} <= set(status.ALERTS)
    assert {"name": "jobs_failed", "night": night["night"]}.items() <= report["alerts"][0].items()
    assert report["missing"] == []


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """family -> {sample line's name{labels}: value}; checks HELP and TYPE precede each family."""
    families: dict[str, dict[str, float]] = {}
    seen_help, seen_type = set(), set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            seen_help.add(line.split()[2])
        elif line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind == "gauge"
            seen_type.add(name)
        else:
            match = re.fullmatch(r'(contimg_[a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (\S+)', line)
            assert match, f"not an exposition line: {line!r}"
            name = match.group(1)
            assert name in seen_help and name in seen_type, f"{name} without HELP/TYPE"
            families.setdefault(name, {})[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    return families


def test_prometheus_export_and_atomic_file(run):
    out = contimg_status(run["dir"], run["dir"] / "run.yaml", "--prometheus")
    assert out.returncode == 1
    metrics = parse_prometheus(out.stdout)
    night = run["groups"][0][:10]
    assert metrics["contimg_night_groups_seen"] == {f'contimg_night_groups_seen{{night="{night}"}}': 3}
    assert metrics["contimg_night_groups_failed"][f'contimg_night_groups_failed{{night="{night}"}}'] == 1
    assert metrics["contimg_alert"]['contimg_alert{alert="jobs_failed"}'] == 1
    assert metrics["contimg_alert"]['contimg_alert{alert="calibration_stale"}'] == 0
    assert len(metrics["contimg_alert"]) == len(status.ALERTS)
    assert metrics["contimg_database_present"] == {"contimg_database_present": 1}
    rfi = json.loads(contimg_status(run["dir"], run["dir"] / "run.yaml", "--json").stdout)["nights"][0]
    assert metrics["contimg_night_rfi_flagged_fraction"] == {
        f'contimg_night_rfi_flagged_fraction{{night="{night}"}}': pytest.approx(rfi["rfi_flagged_fraction"])
    }

    config = load_config(run["dir"] / "run.yaml", {"results_dir": str(run["dir"] / "results"),
                                                   "raw_dir": str(run["dir"] / "raw")})  # fmt: skip
    target = run["dir"] / "metrics" / "contimg.prom"
    report = status.write_prometheus(target, config)
    assert report["nights"][0]["totals"]["failed"] == 1
    written = parse_prometheus(target.read_text())
    assert written.keys() == metrics.keys()
    assert [p.name for p in target.parent.iterdir()] == ["contimg.prom"], "no temporary left behind"


def test_thresholds_switch_alerts(run):
    base = load_config(run["dir"] / "run.yaml", {"results_dir": str(run["dir"] / "results"),
                                                 "raw_dir": str(run["dir"] / "raw")})  # fmt: skip

    def names(now=None, **limits):
        config = {**base, "status": {**base["status"], **limits}}
        return {a["name"] for a in status.gather(config, now=now)["alerts"]}

    rms = status.gather(base)["nights"][0]["image_rms_over_thermal"]
    assert "image_noise" not in names(max_rms_over_thermal=rms * 1.01)
    assert "image_noise" in names(max_rms_over_thermal=rms * 0.99)
    later = dt.datetime.fromisoformat(run["groups"][2]) + dt.timedelta(hours=13)
    assert "calibration_stale" in names(now=later)
    assert "calibration_stale" not in names(now=later, max_calibration_age_h=14)
    assert status.gather(base, now=later)["calibration"]["latest"]["expired"] is True
    assert "data_stale" in names(max_data_age_h=1)  # the simulated data are from 2025
    assert "data_stale" not in names(now=later, max_data_age_h=14)


def test_no_database_and_no_raw_dir(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("raw_dir: raw\nresults_dir: results\n")
    out = contimg_status(tmp_path, config)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and out.stderr == ""
    assert "raw_dir 'raw' does not exist" in out.stdout
    assert "no product database yet at sqlite:///" in out.stdout
    assert "no observation group in raw_dir or the database" in out.stdout
    assert "ALERTS: none" in out.stdout
    assert not (tmp_path / "results").exists(), "status never creates the database"
    report = json.loads(contimg_status(tmp_path, config, "--json").stdout)
    assert report["nights"] == [] and report["database_present"] is False
    assert report["calibration"]["latest"] is None


def test_partial_run_raw_files_only(tmp_path):
    """Raw files, nothing processed: the groups are seen, an incomplete one is an alert."""
    (tmp_path / "raw").mkdir()
    good, partial = "2025-06-15T08:00:03", "2025-06-15T08:05:12"
    make_raw(tmp_path / "raw", good)
    partial_files = make_raw(tmp_path / "raw", partial, subbands=range(15))
    config = tmp_path / "c.yaml"
    config.write_text("raw_dir: raw\nresults_dir: results\n")
    # Files younger than run.settle_s may still be being written: not incomplete yet.
    fresh = json.loads(contimg_status(tmp_path, config, "--json").stdout)
    assert fresh["nights"][0]["totals"]["incomplete"] == 0 and fresh["alerts"] == []
    old = time.time() - 3600
    for path in partial_files:
        os.utime(path, (old, old))
    out = contimg_status(tmp_path, config)
    assert out.returncode == 1, out.stderr
    assert f"{partial}  missing subbands sb15" in out.stdout
    assert "nothing converted in the last 1 night(s)" in out.stdout
    assert "no calibration solved yet" in out.stdout
    assert f"incomplete_groups 2025-06-15: 1 incomplete group(s): {partial}" in out.stdout
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text("raw_dir: raw\nresults_dir: results\nstatus: {max_incomplete_groups: 1}\n")
    assert contimg_status(tmp_path, relaxed).returncode == 0


def test_empty_database(tmp_path):
    (tmp_path / "results").mkdir()
    Database(f"sqlite:///{tmp_path / 'results' / 'products.sqlite'}").close()  # schema, no rows
    config = tmp_path / "c.yaml"
    config.write_text("raw_dir: .\nresults_dir: results\n")
    out = contimg_status(tmp_path, config, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["database_present"] is True and report["nights"] == []
    assert report["missing"] == ["no observation group in raw_dir or the database"]


def write_calflux(results: Path, caltable: Path, calgroup: str, ratio: float) -> None:
    """A calibrator flux table as rule calibrator_flux writes it (one measured row)."""
    transit = dt.datetime.fromisoformat(calgroup) + dt.timedelta(seconds=150)
    row = dict(calgroup=calgroup, calibrator="3C286", transit_time=transit.isoformat(), dec_deg=16.1,
               passed=True, flux_expected_jy=14.65, flux_measured_jy=14.65 * ratio, flux_ratio=ratio,
               n_references=1, alert=abs(ratio - 1) > 0.1, note="")  # fmt: skip
    path = Path(naming.calflux_path(results))
    with atomic_output(path) as tmp:
        pd.DataFrame([row], columns=fluxmon.COLUMNS).to_csv(tmp, index=False)
    write_sidecar(path, kind="calflux", group=None, inputs=[caltable], qa={"n_measured": 1, "n_alerts": 1})


def test_alerts_from_registered_qa(tmp_path):
    """Products registered from sidecars (as the stages write them): each figure against its limit."""
    raw, results = tmp_path / "raw", tmp_path / "results"
    raw.mkdir()
    calgroup = "2025-06-15T07:55:00"
    chains = [make_chain(raw, results, "2025-06-15T08:00:03", calgroup, rfi=0.01, rms=0.8e-3),
              make_chain(raw, results, "2025-06-15T08:05:12", calgroup, rfi=0.05, rms=5.6e-3)]  # fmt: skip
    for path in make_raw(raw, "2025-06-15T08:10:21", subbands=range(12)):
        os.utime(path, (time.time() - 3600,) * 2)  # written an hour ago, not still being written
    write_calflux(results, chains[0]["caltable"], calgroup, ratio=1.3)
    config = load_config({"raw_dir": str(raw), "results_dir": str(results)})
    with Database.from_config(config) as database:
        assert not database.sync(results, raw).problems
    report = status.gather(config)
    (night,) = report["nights"]
    assert night["totals"] == {"seen": 4, "incomplete": 1, "converted": 3, "calibrated": 2, "imaged": 2,
                               "failed": 0, "failed_jobs": 0}  # fmt: skip
    assert night["image_rms_over_thermal"] == pytest.approx((0.8e-3 + 5.6e-3) / 2 / 0.7e-3)
    # flagged: the calibrated MSs' 0.11 and 0.15 (0.1 flagged before, 0.01 and 0.05 newly as RFI;
    # their MSs' 0.1 overridden), the calibrator group's MS 0.1 (not calibrated: no RFI figure)
    assert night["flagged_fraction"] == pytest.approx(0.11)
    assert night["rfi_flagged_fraction"] == pytest.approx(0.03)
    assert report["calibrator_flux"] == [{"calibrator": "3C286", "calgroup": calgroup,
                                          "transit_time": "2025-06-15T07:57:30", "flux_ratio": 1.3,
                                          "drifting": True}]  # fmt: skip
    names = {a["name"] for a in report["alerts"]}
    assert names == {"image_noise", "incomplete_groups", "calibrator_flux_drift"}
    strict = {**config, "status": {**config["status"], "max_flagged_fraction": 0.105}}
    assert "flagged_fraction" in {a["name"] for a in status.gather(strict)["alerts"]}
    lenient = {
        **config,
        "status": {**config["status"], "max_rms_over_thermal": 10, "max_incomplete_groups": 1},
        "calibration": {**config["calibration"], "flux_alert_fraction": 0.5},
    }
    assert status.gather(lenient)["alerts"] == []
    text = status.render_text(status.gather(config))
    assert "3C286 1.300 DRIFT" in text and "2025-06-15T08:10:21  missing subbands" in text
    header, row = (line.split() for line in text.splitlines()[1:3])
    assert header[-3:] == ["rms/thermal", "flagged", "rfi"] and row[-2:] == ["0.110", "0.030"]
    metrics = parse_prometheus(status.render_prometheus(report))
    assert metrics["contimg_night_rfi_flagged_fraction"] == {
        'contimg_night_rfi_flagged_fraction{night="2025-06-15"}': pytest.approx(0.03)
    }
    with Database.from_config(config) as database:
        groups = {g["group"]: g for g in database.night("2025-06-15")["groups"]}
    assert [(groups[g]["flagged_fraction"], groups[g]["rfi_flagged_fraction"])
            for g in (calgroup, "2025-06-15T08:00:03", "2025-06-15T08:05:12")] == [
        (0.1, None), (pytest.approx(0.11), 0.01), (pytest.approx(0.15), 0.05)
    ]  # fmt: skip


def test_cli_arguments(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"raw_dir: {tmp_path}\nresults_dir: {tmp_path / 'results'}\n")
    assert cli.main(["status", "--config", str(config), "--nights", "0"]) == 2
    assert "--nights must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--config", str(config), "--json", "--prometheus"])
    assert exit_.value.code == 2
    assert cli.main(["status", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_report_of_a_partial_run_opens_in_a_browser(run, snakemake_exe, repo_root):
    from artifacts import ARTIFACTS
    from needs import require_tool

    chromium = require_tool("chromium")
    html = build_report(snakemake_exe, repo_root, run["dir"], run["dir"] / "run.yaml")
    bad, good = run["groups"][0], run["groups"][1:]

    # The observations table: every group, the stage it reached, the failure reason.
    table = read_table(run["dir"] / "results" / "report" / "observations.html").set_index("observation")
    assert sorted(table.index) == sorted(run["groups"])
    assert table.loc[bad, "stage"] == "raw"
    assert run["bad"].name in table.loc[bad, "failure"] and "truncated" in table.loc[bad, "failure"]
    for g in good:
        assert table.loc[g, "stage"] == "imaged" and table.loc[g, "calibration"] == run["groups"][2]
        qa = read_sidecar(run["dir"] / "results" / "images" / f"{g}.image.fits.json")["qa"]
        assert table.loc[g, "grade"] == qa["grade"], "the table shows the image's own QA"
        assert float(table.loc[g, "rms (mJy/beam)"]) == pytest.approx(qa["rms_jy"] * 1e3, rel=1e-2)

    results = report_results(html)
    pngs = {"throughput.png", "calibration_timeline.png", "calibrator_flux.png", "lightcurves.png"}
    thumbnails = {f"{g}.png" for g in good}
    assert pngs | thumbnails | {"observations.html", "mosaics.html"} <= set(results)
    for name in pngs | thumbnails:
        assert_picture(decoded(results[name]))
        assert results[name]["caption"].strip(), f"{name} has no caption"
    # Nothing imaged for mosaics (disabled) and no light curve (the fan-in needs every group): said, not failed.
    assert b"No mosaic has been built" in decoded(results["mosaics.html"])

    open_in_browser(chromium, html, ARTIFACTS / "report-partial-run.png")


def test_report_before_anything_is_imaged(tmp_path, snakemake_exe, repo_root):
    """Raw files only: the report is made and says that nothing has run yet."""
    simulate(tmp_path, SMALL)
    html = build_report(snakemake_exe, repo_root, tmp_path, write_config(tmp_path / "run.yaml"))
    folder = tmp_path / "results" / "report"
    table = read_table(folder / "observations.html")
    assert table["stage"].tolist() == ["raw"]
    assert not list((folder / "thumbnails").glob("*.png"))
    results = report_results(html)
    assert {"observations.html", "throughput.png", "lightcurves.png", "mosaics.html"} <= set(results)
    assert "contimg_night_groups_seen" in (folder / "metrics.prom").read_text()


def test_a_failure_fixed_by_a_rerun_clears_the_alert(run, snakemake_exe, repo_root):
    """Last: repairs the run's truncated file and reruns the workflow."""
    run["bad"].write_bytes(run["original"])
    out = run_workflow(snakemake_exe, repo_root, run["dir"])
    assert out.returncode == 0, out.stderr[-3000:]
    lenient = write_config(run["dir"] / "lenient.yaml", status={"max_rms_over_thermal": 1e6})
    out = contimg_status(run["dir"], lenient)
    assert out.returncode == 0, out.stdout
    assert "ALERTS: none" in out.stdout and "failed:" not in out.stdout
    night = run["groups"][0][:10]
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith(night))
    assert row[:7] == [night, "3", "0", "3", "3", "3", "0"]


def _cal_report(valid_end: str, next_transit: str | None, reference: str = "2025-06-15T12:00:00") -> dict:
    latest = {"calgroup": "2025-06-15T03:00:00", "calibrator": "3C286", "transit_time": "2025-06-15T03:02:00",
              "valid_start": "2025-06-14T15:02:00", "valid_end": valid_end, "age_h": 9.0,
              "expired": reference > valid_end}
    nxt = None if next_transit is None else {"calibrator": "3C48", "transit_time": next_transit}
    return {"nights": [], "calibrator_flux": [], "newest_observation": reference, "reference_time": reference,
            "calibration": {"n_solutions": 1, "n_passed": 1, "latest": latest, "latest_attempt": None,
                            "next_transit": nxt}}


def test_calibration_expiring_without_a_transit_to_renew_it_is_an_alert():
    limits = status.thresholds(load_config({}))
    assert limits["calibration_expiry_warn_h"] == 4
    now = dt.datetime(2025, 6, 15, 12)
    # Expires in 3 h; the next transit comes after: alert, naming both.
    (alert,) = status.alerts(_cal_report("2025-06-15T15:00:00", "2025-06-15T18:00:00"), limits, now)
    assert alert["name"] == "calibration_expiring"
    assert "expires at 2025-06-15T15:00:00, in 3.0 h" in alert["message"] and "3C48 at 2025-06-15T18:00:00" in alert["message"]
    # A transit before the end renews it; an end beyond the warning time is no concern yet.
    assert status.alerts(_cal_report("2025-06-15T15:00:00", "2025-06-15T14:00:00"), limits, now) == []
    assert status.alerts(_cal_report("2025-06-15T17:00:00", None), limits, now) == []
    (alert,) = status.alerts(_cal_report("2025-06-15T13:00:00", None), limits, now)
    assert "no transit within 2 days" in alert["message"]


def test_next_transit_at_the_pointing_declination():
    config = load_config({"pointing": {"dec_deg": 30.5}})
    nxt = status._next_transit(config, dt.datetime(2025, 6, 15, 12))
    # After noon UTC on 2025-06-15 the first calibrator of dec 30.5 +- 1.5 to transit is
    # J0741+312 (RA 115.3 deg, 2 Jy) at 21:58; 3C286 (RA 202.8) follows at 03:47 the next day.
    assert nxt["calibrator"] == "J0741+312"
    from dsa110_contimg.calibration.transits import calibrator_transits

    table = calibrator_transits(dt.datetime(2025, 6, 15, 12, tzinfo=dt.UTC), dt.datetime(2025, 6, 17, tzinfo=dt.UTC),
                                30.5, 1.5)
    assert nxt["transit_time"] == table.iloc[0]["transit_utc"][:19]
