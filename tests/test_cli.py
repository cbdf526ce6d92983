"""The contimg command line: output and one-line errors with exit code 2."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dsa110_contimg import cli, naming


def touch_observation(folder, start, subbands=range(16)):
    for sb in subbands:
        (folder / naming.raw_filename(start + timedelta(seconds=sb % 3), sb)).touch()


def test_groups_lists_complete_incomplete_and_other_files(tmp_path, capsys):
    touch_observation(tmp_path, datetime(2025, 6, 15, 6))
    touch_observation(tmp_path, datetime(2025, 6, 15, 6, 5, 9), range(15))
    (tmp_path / "notes.txt").touch()
    (tmp_path / "2025-13-01T00:00:00_sb00.hdf5").touch()
    assert cli.main(["groups", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2025-06-15T06:00:00  complete" in out
    assert "2025-06-15T06:05:09  INCOMPLETE  15/16  missing subbands sb15" in out
    assert "ignored     notes.txt" in out
    assert "2025-13-01T00:00:00_sb00.hdf5" in out
    assert "2 group(s): 1 complete, 1 incomplete; 1 malformed name(s); 1 other file(s)" in out


def test_config_check(tmp_path, capsys, repo_root):
    assert cli.main(["config", "check", str(repo_root / "config" / "config.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert cli.main(["config", "check", "--show", str(repo_root / "config" / "demo.yaml")]) == 0
    assert "raw_dir: demo/raw" in capsys.readouterr().out


def test_check_plans_the_run_and_checks_the_services(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    touch_observation(raw, datetime(2025, 6, 15, 6))
    touch_observation(raw, datetime(2025, 6, 15, 6, 5, 9), range(15))
    catalogue = tmp_path / "sky.csv"
    catalogue.write_text("name,ra_deg,dec_deg,flux_jy\nA,10.0,30.0,1.5\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"raw_dir: {raw}\nresults_dir: {tmp_path / 'results'}\npointing: {{dec_deg: 30.5}}\n"
                      f"catalogue: {{path: {catalogue}}}\n")
    assert cli.main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 complete observation(s)" in out and "incomplete" in out
    assert "products.sqlite: new (created by the first job)" in out
    assert f"catalogue {catalogue}: readable" in out
    assert not (tmp_path / "results").exists(), "a check writes nothing"
    catalogue.write_text("name,flux\nA,1\n")
    assert cli.main(["check", "--config", str(config)]) == 1
    assert "catalogue" in capsys.readouterr().err


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grouping:\n  incomplete: maybe\n")
    assert cli.main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("contimg: error: ") and "'grouping.incomplete'" in err
    assert cli.main(["groups", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["no-such-command"])
    assert exit_.value.code == 2


def test_db_sync_registers_the_raw_files(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    touch_observation(raw, datetime(2025, 6, 15, 6))
    config = tmp_path / "config.yaml"
    config.write_text(f"raw_dir: {raw}\nresults_dir: {tmp_path / 'results'}\n")
    assert cli.main(["db", "sync", "--config", str(config)]) == 0
    first = capsys.readouterr().out
    assert "2025-06-15T06:00:00" in first
    assert (tmp_path / "results" / "products.sqlite").exists()
    assert cli.main(["db", "sync", "--config", str(config)]) == 0
    assert "0 added" in capsys.readouterr().out


def test_db_errors_are_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"results_dir: {tmp_path}\nraw_dir: {tmp_path}\n"
        "database: {url: 'postgresql+psycopg://nobody@127.0.0.1:1/none'}\n"
    )
    assert cli.main(["db", "sync", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contimg: error: ") and err.count("\n") == 1


def test_transits_lists_3c286_once_a_sidereal_day(capsys):
    assert cli.main(["transits", "--start", "2025-06-15", "--end", "2025-06-18", "--dec", "30.5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("3C286 ")]
    assert len(lines) == 3 and "2025-06-16T03:46:46" in lines[1]


def test_calflux_exits_nonzero_on_an_alert(tmp_path, capsys):
    import pandas as pd
    import yaml

    from dsa110_contimg.calibration.fluxmon import COLUMNS

    results = tmp_path / "results"
    path = tmp_path / naming.calflux_path("results")
    path.parent.mkdir(parents=True)
    row = dict.fromkeys(COLUMNS, "")
    row.update(calgroup="2025-06-16T03:46:17", calibrator="3C380", passed=True, flux_ratio=0.7,
               alert=True, note="-30.0% against 1 reference(s)")
    pd.DataFrame([row]).to_csv(path, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"results_dir": str(results)}))
    assert cli.main(["calflux", "--config", str(cfg)]) == 1
    assert "ALERT 3C380" in capsys.readouterr().out
