"""Jobs killed mid-way: nothing partial is left, nothing is registered, the next run redoes it.

A node failure, an out-of-memory kill or a time limit ends a job with
SIGKILL: no ``except``, no ``finally``. Convert writes its MS under a hidden
temporary name and renames it into place only when complete, then writes the
sidecar and registers the product, so a kill at any point before the rename
leaves no product, no sidecar and no database row. (Deleting a product and
rerunning it is tested in test_workflow_run.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from simdata import SMALL, simulate

from dsa110_contimg import naming
from dsa110_contimg.config import validate_config
from dsa110_contimg.db import Database
from dsa110_contimg.raw.grouping import group_files

# Big enough that convert writes its MS for about 3 s on this machine.
BIG = replace(SMALL, n_obs=1, n_ants=48, n_chan=48, n_int=12, calibrators=False)


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory) -> tuple[Path, str]:
    """One observation of 48 antennas x 768 channels (about 280 MB), made once."""
    tmp = tmp_path_factory.mktemp("big")
    files = simulate(tmp, BIG)
    (group,) = group_files([f.name for f in files]).groups
    return tmp / "raw", group.id


def _command(snakemake_exe, repo_root, workdir, raw, *extra):
    return [
        str(snakemake_exe), "-s", str(repo_root / "Snakefile"), "-d", str(workdir),
        *extra,
        "--configfile", str(repo_root / "config" / "config.yaml"),
        "--config", f"raw_dir={raw}",
    ]


def _run(snakemake_exe, repo_root, workdir, raw, *extra):
    return subprocess.run(_command(snakemake_exe, repo_root, workdir, raw, *extra),
                          capture_output=True, text=True, timeout=600)


def _start(snakemake_exe, repo_root, workdir, raw, target):
    """Snakemake in a session of its own (its jobs too), output to a file."""
    out = open(workdir / "first-run.log", "w")
    proc = subprocess.Popen(
        _command(snakemake_exe, repo_root, workdir, raw, target, "--cores", "2"),
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    return proc


def _wait_for_writer(ms: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    """The temporary MS that convert is writing, once it has some content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in ms.parent.glob(f".{ms.name}.tmp-*"):
            if tmp.is_dir() and any(tmp.iterdir()):
                return tmp
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    log = (ms.parent.parent.parent / "first-run.log")
    raise AssertionError(f"convert never started writing {ms}:\n{log.read_text()[-3000:] if log.exists() else ''}")


def _ms_rows(workdir: Path, group: str) -> list[dict]:
    config = validate_config({"results_dir": str(workdir / "results")})
    with Database.from_config(config) as db:
        return [r for r in db.list_products(kind="ms") if r["group_id"] == group]


def _assert_nothing_left(workdir: Path, ms_rel: str, group: str) -> None:
    ms = workdir / ms_rel
    assert not ms.exists(), "no MS after a kill"
    assert not (workdir / naming.sidecar_path(ms_rel)).exists(), "no sidecar after a kill"
    assert _ms_rows(workdir, group) == [], "no database row after a kill"


def _assert_redone_once(workdir: Path, ms_rel: str, group: str) -> None:
    from casacore import tables

    ms = workdir / ms_rel
    rows = _ms_rows(workdir, group)
    assert len(rows) == 1 and rows[0]["status"] == "current"
    with tables.table(str(ms), ack=False) as t:
        assert t.nrows() == rows[0]["n_rows"] > 0
    leftovers = sorted(p.name for p in ms.parent.iterdir() if p.name.startswith("."))
    assert leftovers == [], f"temporaries of the killed attempt left beside the products: {leftovers}"
    config = validate_config({"results_dir": str(workdir / "results")})
    with Database.from_config(config) as db:
        runs = db.job_runs(rule="convert", group=group)
    assert runs and runs[-1]["status"] == "success", runs


def test_job_killed_while_writing_leaves_nothing_and_is_redone(tmp_path, big_raw, snakemake_exe, repo_root):
    raw, group = big_raw
    ms_rel = naming.ms_path("results", group)
    proc = _start(snakemake_exe, repo_root, tmp_path, raw, ms_rel)
    try:
        tmp = _wait_for_writer(tmp_path / ms_rel, proc)
        writer = int(tmp.name.rsplit("-", 1)[1])  # the job's own process (the name says)
        os.kill(writer, signal.SIGKILL)  # as the OOM killer or a node's death would
        assert proc.wait(timeout=120) != 0, "a killed job fails the run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "first-run.log").read_text()
    assert "Error in rule convert" in log, log[-3000:]
    _assert_nothing_left(tmp_path, ms_rel, group)

    out = _run(snakemake_exe, repo_root, tmp_path, raw, ms_rel, "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_redone_once(tmp_path, ms_rel, group)


def test_snakemake_killed_with_its_job_is_unlocked_and_redone(tmp_path, big_raw, snakemake_exe, repo_root):
    """The machine running Snakemake dies: Snakemake and its job are gone at once."""
    raw, group = big_raw
    ms_rel = naming.ms_path("results", group)
    proc = _start(snakemake_exe, repo_root, tmp_path, raw, ms_rel)
    try:
        _wait_for_writer(tmp_path / ms_rel, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    time.sleep(0.5)  # let the killed processes' files settle
    _assert_nothing_left(tmp_path, ms_rel, group)

    # Its lock is still there: the next run says so and how to clear it ...
    out = _run(snakemake_exe, repo_root, tmp_path, raw, ms_rel, "--cores", "2")
    assert out.returncode != 0 and "--unlock" in out.stderr, out.stderr[-3000:]
    out = _run(snakemake_exe, repo_root, tmp_path, raw, "--unlock")
    assert out.returncode == 0, out.stderr[-3000:]
    # ... and once unlocked, the killed job is redone from scratch.
    out = _run(snakemake_exe, repo_root, tmp_path, raw, ms_rel, "--cores", "2", "--rerun-incomplete")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "convert" in out.stderr
    _assert_redone_once(tmp_path, ms_rel, group)
