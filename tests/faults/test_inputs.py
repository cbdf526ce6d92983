"""Inputs that must not hurt: paths that reach a shell, unreadable raw files, CASA's state folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dsa110_contimg import casa_env
from dsa110_contimg.config import ConfigError, validate_config
from dsa110_contimg.monitoring import night
from dsa110_contimg.raw import grouping

GROUP = "2025-06-15T08:00:03"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"results_dir": "results'$(touch pwned)'"}, "'results_dir'"),
        ({"raw_dir": "raw`id`"}, "'raw_dir'"),
        ({"results_dir": "res\nults"}, "'results_dir'"),
        ({"calibration": {"pin": "../../../etc"}}, "'calibration.pin'"),
        ({"catalogue": {"path": 'sky".csv'}}, "'catalogue.path'"),
    ],
)
def test_paths_that_a_shell_would_interpret_are_a_config_error(changes, named):
    with pytest.raises(ConfigError, match=named):
        validate_config(changes)


def test_a_working_directory_with_a_dollar_is_refused_for_relative_dirs(tmp_path, monkeypatch):
    hostile = tmp_path / "$(touch pwned)"
    hostile.mkdir()
    monkeypatch.chdir(hostile)
    with pytest.raises(ConfigError, match="in working directory"):
        validate_config({"results_dir": "results"})
    assert not (hostile / "pwned").exists()
    validate_config({"results_dir": str(tmp_path / "results"), "raw_dir": str(tmp_path / "raw")})


def test_an_unreadable_raw_file_is_its_groups_problem_alone(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [f"2025-06-15T08:00:0{sb % 2}_sb{sb:02d}.hdf5" for sb in range(16)]
    bad = [f"2025-06-15T08:05:1{sb % 2}_sb{sb:02d}.hdf5" for sb in range(16)]
    for name in good + bad:
        (raw / name).write_bytes(b"x")
    (raw / bad[4]).unlink()
    (raw / bad[4]).symlink_to(tmp_path / "gone.hdf5")
    (raw / bad[7]).unlink()
    os.mkfifo(tmp_path / "fifo")
    (raw / bad[7]).symlink_to(tmp_path / "fifo")
    found = grouping.check_readable(grouping.group_files(grouping.raw_names(raw)), raw)
    first, second = found.groups
    assert first.complete and not first.unreadable
    assert not second.complete and sorted(second.unreadable) == [4, 7]
    assert f"sb04 {raw / bad[4]}: dangling symlink to '{tmp_path / 'gone.hdf5'}'" in second.problem()
    assert f"sb07 {raw / bad[7]}: symlink to something that is not a regular file" in second.problem()
    selection = grouping.select_groups(found, "skip")
    assert [g.id for g in selection.groups] == [first.id] and "dangling symlink" in selection.warning


def test_one_night_count_for_products_night_and_status(tmp_path):
    """A group the database saw complete but whose subband is now doubled counts as incomplete."""
    names = [f"2025-06-15T08:00:03_sb{sb:02d}.hdf5" for sb in range(16)] + ["2025-06-15T08:00:04_sb03.hdf5"]
    raw = grouping.group_files(names).groups
    summary = {
        "night": "2025-06-15", "totals": {}, "failures": [],
        "groups": [{"group": GROUP, "raw": "16/16", "complete": True, "dec_deg": 30.5, "converted": True,
                    "calibrated": False, "imaged": False, "photometry": False, "caltable": False,
                    "grade": None, "failed": []},
                   {"group": "2025-06-15T09:00:00", "raw": "not registered", "complete": None, "dec_deg": None,
                    "converted": False, "calibrated": False, "imaged": False, "photometry": False,
                    "caltable": False, "grade": None, "failed": ["convert: died: process 1 is gone"]}],
    }  # fmt: skip
    summary["failures"] = [{"group": "2025-06-15T09:00:00", "rule": "convert", "status": "died"}]
    merged = night.merge(summary, raw, raw[0].start.date())
    assert merged["totals"] == {"seen": 2, "complete": 0, "incomplete": 1, "converted": 1, "calibrated": 0,
                                "imaged": 0, "photometry": 0, "failed": 1, "failed_jobs": 1}  # fmt: skip
    assert merged["incomplete"] == [{"group": GROUP, "problem": raw[0].problem()}]


def test_casa_state_folder_is_private_and_site_configs_do_not_pile_up(tmp_path, monkeypatch):
    state = tmp_path / "casa-state"
    monkeypatch.setenv("CONTIMG_CASA_DIR", str(state))
    monkeypatch.delenv("CASASITECONFIG", raising=False)
    sites = {casa_env.configure() for _ in range(3)}
    sites.add(casa_env.configure(logfile=tmp_path / "job.log"))
    sites.add(casa_env.configure(logfile=tmp_path / "job.log"))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert len(sites) == 2 and sorted(state.glob("casasiteconfig-*.py")) == sorted(sites)
    assert f"logfile = {str(tmp_path / 'job.log')!r}" in Path(os.environ["CASASITECONFIG"]).read_text()
    # Old configs that nobody used for a day go when a new one is written.
    old = next(iter(sites - {Path(os.environ["CASASITECONFIG"])}))
    os.utime(old, (0, 0))
    casa_env.configure(logfile=tmp_path / "other.log")
    assert not old.exists()

    state.chmod(0o777)
    casa_env.configure()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700, "a loose mode is tightened"


def test_a_casa_state_folder_of_another_user_or_a_symlink_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CASASITECONFIG", raising=False)
    other = tmp_path / "planted"
    other.mkdir(mode=0o700)
    (other / "casasiteconfig-x.py").write_text("import os; os.system('touch /tmp/pwned')")
    link = tmp_path / "link"
    link.symlink_to(other)
    monkeypatch.setenv("CONTIMG_CASA_DIR", str(link))
    with pytest.raises(casa_env.CasaEnvError, match="not a folder"):
        casa_env.configure()
    if os.getuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    os.chown(other, 65534, 65534)
    monkeypatch.setenv("CONTIMG_CASA_DIR", str(other))
    with pytest.raises(casa_env.CasaEnvError, match="belongs to uid 65534"):
        casa_env.configure()
    assert "CASASITECONFIG" not in os.environ
