"""The Snakemake workflow at parse time: dry runs on raw folders of empty files.

Each test runs the real ``snakemake`` in a temporary working directory, so
nothing is written into the repository. The raw files are empty: parsing the
workflow only reads names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest

from dsa110_contimg import naming

T0 = datetime(2025, 6, 15, 6, 0, 0)


def make_raw(folder, starts_and_subbands):
    folder.mkdir(parents=True, exist_ok=True)
    for start, subbands in starts_and_subbands:
        for sb in subbands:
            (folder / naming.raw_filename(start + timedelta(seconds=sb % 3), sb)).touch()
    return folder


@pytest.fixture
def run(snakemake_exe, repo_root, tmp_path):
    """Run snakemake on the repository's workflow with tmp_path as working directory."""

    def _run(*args: str) -> subprocess.CompletedProcess:
        # --config and --configfile take several values: targets go first.
        cmd = [
            str(snakemake_exe),
            *args,
            "--snakefile", str(repo_root / "Snakefile"),
            "--directory", str(tmp_path),
            "--configfile", str(repo_root / "config" / "config.yaml"),
        ]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    return _run


def output(result: subprocess.CompletedProcess) -> str:
    """Everything Snakemake said (it logs errors to stdout, our warnings go to stderr)."""
    return result.stdout + result.stderr


def planned(result: subprocess.CompletedProcess, rule: str) -> int:
    """Jobs of ``rule`` in the dry run's job table (0 when absent)."""
    match = re.search(rf"^{rule}\s+(\d+)$", output(result), re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_two_complete_groups_planned_incomplete_one_warned(run, tmp_path):
    make_raw(
        tmp_path / "raw",
        [
            (T0, range(16)),
            (T0 + timedelta(seconds=309), range(16)),
            (T0 + timedelta(seconds=618), [sb for sb in range(16) if sb not in (3, 7)]),
        ],
    )
    (tmp_path / "raw" / "notes.txt").touch()
    result = run("-n", "--config", "raw_dir=raw", "results_dir=results")
    assert result.returncode == 0, result.stderr
    assert planned(result, "convert") == 2
    out = output(result)
    assert "2025-06-15T06:10:18: missing subbands sb03, sb07" in out
    assert "notes.txt" in out
    assert "results/ms/2025-06-15T06:00:00.ms" in out
    assert "results/ms/2025-06-15T06:05:09.ms" in out
    assert "results/logs/convert/2025-06-15T06:00:00.log" in out
    assert not (tmp_path / "results").exists()


def test_empty_raw_dir_plans_nothing(run, tmp_path):
    (tmp_path / "raw").mkdir()
    result = run("-n", "--config", "raw_dir=raw", "results_dir=results")
    assert result.returncode == 0, result.stderr
    out = output(result)
    assert "no complete observation in raw_dir 'raw'" in out
    assert "Nothing to be done" in out


def test_missing_raw_dir_is_a_clear_error(run):
    result = run("-n", "--config", "raw_dir=nowhere", "results_dir=results")
    assert result.returncode != 0
    assert "raw_dir 'nowhere' does not exist" in output(result)


def test_bad_config_value_stops_before_any_job(run, tmp_path):
    make_raw(tmp_path / "raw", [(T0, range(16))])
    result = run("-n", "--config", "raw_dir=raw", "grouping={incomplete: maybe}")
    assert result.returncode != 0
    assert "config key 'grouping.incomplete': 'maybe' is not one of ['skip', 'fail']" in output(result)
    assert planned(result, "convert") == 0


def test_unknown_config_key_is_named(run, tmp_path):
    make_raw(tmp_path / "raw", [(T0, range(16))])
    result = run("-n", "--config", "raw_dir=raw", "results_dri=out")
    assert result.returncode != 0
    assert "'results_dri'" in output(result) and "did you mean 'results_dir'" in output(result)


def test_fail_policy_stops_on_incomplete_group(run, tmp_path):
    make_raw(tmp_path / "raw", [(T0, range(16)), (T0 + timedelta(seconds=309), range(15))])
    result = run("-n", "--config", "raw_dir=raw", "grouping={incomplete: fail}")
    assert result.returncode != 0
    assert "group 2025-06-15T06:05:09: missing subbands sb15" in output(result)


def test_asking_for_an_incomplete_group_names_the_problem(run, tmp_path):
    make_raw(tmp_path / "raw", [(T0, range(15))])
    result = run("results/ms/2025-06-15T06:00:00.ms", "-n", "--config", "raw_dir=raw", "results_dir=results")
    assert result.returncode != 0
    assert "group 2025-06-15T06:00:00 cannot be processed: missing subbands sb15" in output(result)


def test_rulegraph_renders_with_dot(run, tmp_path):
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("graphviz dot not installed (apt-get install graphviz)")
    make_raw(tmp_path / "raw", [(T0, range(16))])
    graph = run("--rulegraph", "--config", "raw_dir=raw")
    assert graph.returncode == 0, graph.stderr
    assert "convert" in graph.stdout
    svg = subprocess.run([dot, "-Tsvg"], input=graph.stdout, capture_output=True, text=True, timeout=60)
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout and "convert" in svg.stdout
