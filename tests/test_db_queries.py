"""Finding products: filters, the night summary with job runs, and the ``contimg products`` commands."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from db_products import (
    CALGROUP,
    group_at,
    make_chain,
    make_ms,
    make_raw,
)

from dsa110_contimg import cli
from dsa110_contimg.db import Database, job_run, record_job

DAY1 = [group_at(60 * 8), group_at(60 * 8 + 5.15), group_at(60 * 8 + 10.3)]
DAY2 = group_at(60 * 8, day="2025-06-16")
CALGROUP2 = group_at(60 * 7.9, day="2025-06-16")


@pytest.fixture
def config(db_url, dirs, tmp_path):
    raw, results = dirs
    return {"raw_dir": str(raw), "results_dir": str(results), "database": {"url": db_url}}


@pytest.fixture
def night(config, dirs):
    """Day 1: a full chain, a good image and a bad one; a group converted whose calibration
    failed; a group with 12 subbands. Day 2: one chain at another declination."""
    raw, results = dirs
    chains = [make_chain(raw, results, DAY1[0]), make_chain(raw, results, DAY1[1], grade="bad")]
    make_ms(results, DAY1[2], make_raw(raw, DAY1[2]))
    make_raw(raw, group_at(60 * 9), subbands=range(12))
    make_chain(raw, results, DAY2, calgroup=CALGROUP2)
    with Database(config["database"]["url"]) as database:
        assert not database.sync(results, raw).problems
        # day 2 points 10 degrees further north
        move = sa.text("UPDATE observation_groups SET dec_deg = 26.1 WHERE id IN (:a, :b)")
        database._run(lambda s: s.execute(move, {"a": DAY2, "b": CALGROUP2}), write=True)
    return chains


def paths(rows):
    return sorted(r["path"] for r in rows)


def test_list_filters(config, night):
    with Database(config["database"]["url"]) as db:
        assert len(db.list_products()) == 6 + 4 + 1 + 6  # the second chain shares the caltable
        images = db.list_products("image")
        assert len(images) == 3
        assert paths(db.list_products("image", grade="bad")) == [str(night[1]["image"])]
        assert paths(db.list_products(grade="good")) == paths(
            [r for r in images if r["grade"] == "good"]
        )
        day1 = db.list_products("image", since="2025-06-15", until="2025-06-16")
        assert paths(day1) == sorted(str(c["image"]) for c in night)
        # a caltable's time is its transit, not its group's start
        assert len(db.list_products("caltable", since=f"{CALGROUP}", until="2025-06-16")) == 1
        # photometry has no declination of its own: its group's is used; an image has its own
        assert [r["group_id"] for r in db.list_products("photometry", dec=26.0)] == [DAY2]
        assert len(db.list_products("photometry", dec=16.0, dec_tol=0.5)) == 2
        assert len(db.list_products("image", dec=16.0, dec_tol=0.5)) == 3
        assert len(db.list_products(group=DAY1[2])) == 1
        assert db.list_products(status="gone") == []
        assert len(db.list_products(status="active")) == 2
        with pytest.raises(ValueError, match="status 'lost'"):
            db.list_products(status="lost")


def test_night_summary_with_job_runs(config, night):
    record_job(config, "apply_calibration", {"group": DAY1[2]}, "failed",
               message="NoCalibrationError: no passing calibration within 12 h")  # fmt: skip
    with pytest.raises(RuntimeError, match="image is empty"):
        with job_run(config, "image", {"group": DAY1[1]}, log="logs/image.log"):
            raise RuntimeError("image is empty")
    with pytest.raises(KeyError):  # failed, then fixed by a rerun: not a failure
        with job_run(config, "photometry", {"group": DAY1[0]}):
            raise KeyError("flux")
    with job_run(config, "photometry", {"group": DAY1[0]}) as run_id:
        with Database(config["database"]["url"]) as db:
            (running,) = [r for r in db.job_runs() if r["id"] == run_id]
        assert running["status"] == "running" and running["rule"] == "photometry" and running["finished"] is None
    record_job(config, "lightcurves", {}, "failed", started="2025-06-15T23:00:00Z",
               message="ValueError: catalogue lacks column flux")  # fmt: skip

    with Database(config["database"]["url"]) as db:
        summary = db.night("2025-06-15")
        runs = db.job_runs(rule="image")
    assert summary["totals"] == {
        "seen": 5, "complete": 4, "incomplete": 1, "converted": 4, "calibrated": 2,
        "imaged": 2, "photometry": 2, "failed": 2,
    }  # fmt: skip
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups[DAY1[2]]["failed"] == [
        "apply_calibration: NoCalibrationError: no passing calibration within 12 h"
    ]
    assert groups[DAY1[1]]["grade"] == "bad"
    assert groups[DAY1[1]]["failed"] == ["image: RuntimeError: image is empty"]
    assert groups[DAY1[0]]["failed"] == [] and groups[DAY1[0]]["photometry"]
    assert groups[group_at(60 * 9)]["raw"] == "12/16"
    assert groups[CALGROUP]["caltable"]
    (other,) = [f for f in summary["failures"] if f["group"] is None]
    assert other["rule"] == "lightcurves" and "lacks column" in other["reason"]
    (run,) = runs
    assert run["status"] == "failed" and run["log_path"].endswith("logs/image.log")
    assert run["runtime_s"] >= 0 and run["host"] and run["pid"]

    with Database(config["database"]["url"]) as db:
        assert db.night("2025-06-16")["totals"]["seen"] == 2
        assert db.night("2025-06-17")["totals"]["seen"] == 0
        with pytest.raises(ValueError, match="a night is a date"):
            db.night("2025-06-16T08:00:00")


def test_job_run_rejects_bad_status(config):
    with pytest.raises(ValueError, match="job status 'done'"):
        record_job(config, "convert", {"group": DAY1[0]}, "done")


# ------------------------------------------------------------- command line
# The commands only format what the queries above return: SQLite is enough.

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def config_file(config, tmp_path, night):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@sqlite_only
def test_products_list_formats(config_file, night, capsys):
    code, out, _ = run(capsys, "products", "list", "--config", config_file, "--kind", "image")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["kind", "group_id", "status", "grade", "cal_status", "path"]
    assert lines[-1] == "3 product(s)" and "bad" in out

    code, out, _ = run(capsys, "products", "list", "--config", config_file, "--kind", "image",
                       "--grade", "good", "--since", "2025-06-15", "--until", "2025-06-16",
                       "--format", "csv")  # fmt: skip
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["path"] == str(night[0]["image"]) and row["rms_jy"] == "0.0008"

    code, out, _ = run(capsys, "products", "list", "--config", config_file, "--status", "retired",
                       "--format", "json")  # fmt: skip
    assert json.loads(out) == []


@sqlite_only
def test_products_show_tree(config_file, night, capsys):
    code, out, _ = run(capsys, "products", "show", "--config", config_file, str(night[0]["image"]))
    assert code == 0
    made_from = out.split("made from:\n")[1].split("used by:")[0]
    assert made_from.splitlines()[0].startswith("image ")
    assert "└─ calibrated" in made_from and "caltable" in made_from
    assert "raw         16 files in" in made_from and "_sb00.hdf5 .." in made_from
    assert "photometry" in out.split("used by:")[1]

    code, out, _ = run(capsys, "products", "show", "--config", config_file, "--format", "json",
                       str(night[0]["raw"][0]))  # fmt: skip
    shown = json.loads(out)
    assert shown["product"] is None and shown["provenance"]["kind"] == "raw"
    assert [n["kind"] for n in [shown["derived"], *shown["derived"]["children"]]] == ["raw", "ms"]

    code, out, _ = run(capsys, "products", "show", "--config", config_file, "--format", "csv",
                       str(night[0]["calibrated"]))  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["direction"] for r in rows} == {"provenance", "derived"}


@sqlite_only
def test_products_night(config_file, night, capsys):
    config = json.loads(open(config_file).read())
    record_job(config, "apply_calibration", {"group": DAY1[2]}, "failed",
               message="NoCalibrationError: no passing calibration")  # fmt: skip
    code, out, _ = run(capsys, "products", "night", "--config", config_file, "2025-06-15")
    assert code == 0
    assert out.startswith("night 2025-06-15 (UTC): 5 group(s) seen (4 complete, 1 incomplete), "
                          "4 converted, 2 calibrated, 2 imaged, 2 with photometry, 1 failed")  # fmt: skip
    assert "apply_calibration: NoCalibrationError" in out and "incomplete" in out
    code, out, _ = run(capsys, "products", "night", "--config", config_file, "2025-06-15",
                       "--format", "json")  # fmt: skip
    assert json.loads(out)["totals"]["failed"] == 1


@sqlite_only
def test_products_errors_are_one_line(config_file, capsys, tmp_path):
    code, _, err = run(capsys, "products", "show", "--config", config_file, str(tmp_path / "x.fits"))
    assert code == 2 and err.startswith("contimg: error: no product or raw file registered")
    code, _, err = run(capsys, "products", "list", "--config", config_file, "--kind", "nonsense")
    assert code == 2 and "unknown kind 'nonsense'" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["products", "night", "--config", config_file, "15/06/2025"])
