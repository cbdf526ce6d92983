"""`contimg transits` (now and next) and `contimg calibration at` (validity windows)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from db_products import make_caltable, make_ms, make_raw

from dsa110_contimg import cli, geometry
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.transits import calibrator_transits
from dsa110_contimg.config import load_config
from dsa110_contimg.db import Database
from dsa110_contimg.monitoring import pointing

UTC = dt.UTC


def test_now_and_next_at_a_transit_of_3c286(capsys):
    day = calibrator_transits(dt.datetime(2025, 6, 15, tzinfo=UTC), dt.datetime(2025, 6, 16, tzinfo=UTC), 30.5)
    first = day[day.name == "3C286"]
    transit = dt.datetime.fromisoformat(first.iloc[0]["transit_utc"]).replace(tzinfo=UTC)
    now = transit - dt.timedelta(minutes=2)
    view = pointing.now_view(now, 30.5, 1.5, n_next=20)
    # LST agrees with the precise (astropy/pyuvdata) LST at the array to a second of time.
    jd = now.timestamp() / 86400 + 2440587.5
    precise_h = np.degrees(geometry.lst(np.array([jd]))[0]) / 15
    assert view["lst_hours"] == pytest.approx(precise_h, abs=1 / 3600)
    # At transit the LST is the calibrator's apparent RA: 2 min before, 2 sidereal min less.
    (in_beam,) = view["in_beam"]
    assert in_beam["name"] == "3C286" and in_beam["in_minutes"] == pytest.approx(2.0, abs=0.05)
    # The next transits are in time order, the other calibrators of dec 30.5 +- 1.5 between 3C286's.
    assert view["next"][0]["name"] == "3C286"
    assert [r["in_minutes"] for r in view["next"]] == sorted(r["in_minutes"] for r in view["next"])
    assert set(day.name) <= {r["name"] for r in view["next"]}
    ours = [r for r in view["next"] if r["name"] == "3C286"]
    gaps_h = np.diff([dt.datetime.fromisoformat(r["transit_utc"]).timestamp() / 3600 for r in ours])
    assert len(ours) >= 3 and gaps_h == pytest.approx([23.9345] * (len(ours) - 1), abs=0.002), "a sidereal day apart"
    # An hour later: nothing in the beam (3C286 crosses the 2.7 deg beam in ~12 min at dec 30.5).
    assert pointing.now_view(now + dt.timedelta(hours=1), 30.5, 1.5)["in_beam"] == []
    assert 5 < pointing.beam_crossing_s(30.5) / 60 < 20
    assert cli.main(["transits", "--dec", "30.5", "--now", now.strftime("%Y-%m-%dT%H:%M:%S")]) == 0
    out = capsys.readouterr().out
    assert "in the beam now: 3C286 (15.0838 Jy), transits in 2.0 min" in out  # Perley-Butler 2017 at 1.4 GHz
    # No calibrator near dec -60: said so.
    assert cli.main(["transits", "--dec", "-60", "--json"]) == 0
    south = json.loads(capsys.readouterr().out)
    cal = load_calibrators()
    if not ((cal.dec_deg + 60).abs() <= 1.5).any():
        assert south["in_beam"] == [] and south["next"] == []


def test_transits_take_the_declination_from_the_config(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("pointing: {dec_deg: 30.5}\n")
    assert cli.main(["transits", "--config", str(tmp_path / "c.yaml"), "--now", "2025-06-16T03:45:00"]) == 0
    assert "pointing dec +30.50" in capsys.readouterr().out
    assert cli.main(["transits", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "give --dec or --config" in capsys.readouterr().err


def test_calibration_at_names_the_covering_solutions_and_the_one_used(tmp_path, capsys):
    raw, results = tmp_path / "raw", tmp_path / "results"
    raw.mkdir()
    day1, day1b, day2 = "2025-06-15T03:00:00", "2025-06-15T09:00:00", "2025-06-16T03:00:00"
    for calgroup, passed in ((day1, True), (day1b, False), (day2, True)):
        make_caltable(results, calgroup, make_ms(results, calgroup, make_raw(raw, calgroup)), passed=passed)
    config = tmp_path / "c.yaml"
    config.write_text(f"raw_dir: {raw}\nresults_dir: {results}\n")
    with Database.from_config(load_config(config)) as db:
        assert not db.sync(results, raw).problems
    # Windows are transit +-12 h (transit 150 s after the group start).
    assert cli.main(["calibration", "at", "2025-06-15T10:00:00", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"calibration at 2025-06-15T10:00:00: {day1} (of 2 covering)")
    assert f"   {day1b}" in out and "failed QA: median SNR 2" in out  # nearer, but failed QA
    assert cli.main(["calibration", "at", "2025-06-15T16:00:00", "--config", str(config), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["chosen"] == day2 and answer["n_overlapping"] == 2  # day1's window ended at 15:02:30
    assert [s["calgroup"] for s in answer["covering"]] == [day1b, day2]  # nearest transit first
    timeline = {s["calgroup"]: s for s in answer["timeline"]}
    assert list(timeline) == [day1, day1b, day2]
    assert timeline[day1]["to_next_h"] == pytest.approx(0.0, abs=1e-3)  # day2's window starts as day1's ends
    assert timeline[day2]["to_next_h"] is None and timeline[day1b]["passed"] is False
    assert cli.main(["calibration", "at", "2025-06-20T00:00:00", "--config", str(config)]) == 1
    assert "none usable (0 covering" in capsys.readouterr().out
