"""One run per results_dir, whatever the working directory; a stale attempt replaces nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsa110_contimg import runlock
from dsa110_contimg.provenance import atomic_output

HOLD = """
import sys, time
from dsa110_contimg import runlock
runlock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(runlock.TOKEN_ENV, raising=False)
    monkeypatch.delenv(runlock.LOCK_ENV, raising=False)
    yield
    for path in list(runlock._held):
        runlock.release(path.parent)


def _holder_process(results: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(results)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder_then_takes_over_when_it_dies(tmp_path, clean_env):
    results = tmp_path / "results"
    (tmp_path / "a").mkdir()
    holder = _holder_process(results, tmp_path / "a")
    try:
        with pytest.raises(runlock.RunLockError) as err:
            runlock.acquire(results)  # from another working directory (this test's)
        assert f"pid {holder.pid} on" in str(err.value) and str(tmp_path / "a") in str(err.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    mine, previous = runlock.acquire(results)
    assert previous is not None and previous.pid == holder.pid, "the dead holder is named when taken over"
    assert mine.pid == os.getpid() and os.environ[runlock.TOKEN_ENV] == mine.token
    runlock.release(results)
    assert runlock.read_holder(runlock.lock_path(results)) is None
    _, previous = runlock.acquire(results)
    assert previous is None, "a released lock is not a stale one"


def test_stale_attempt_cannot_replace_a_newer_product(tmp_path, clean_env):
    results = tmp_path / "results"
    runlock.acquire(results)
    product = results / "images" / "x.fits"
    with atomic_output(product) as tmp:
        tmp.write_text("first run")  # current: renamed
    old_token = os.environ[runlock.TOKEN_ENV]
    # A newer run takes the lock over (as after this run's Snakemake was killed).
    runlock.release(results)
    runlock.acquire(results)
    newer = os.environ[runlock.TOKEN_ENV]
    with atomic_output(product) as tmp:
        tmp.write_text("newer run")
    os.environ[runlock.TOKEN_ENV] = old_token  # the orphaned job of the first run finishes
    with pytest.raises(runlock.StaleAttemptError, match="no longer holds"), atomic_output(product) as tmp:
        tmp.write_text("orphan")
    assert product.read_text() == "newer run"
    assert [p.name for p in product.parent.iterdir()] == ["x.fits"], "the orphan's temporary is removed"
    os.environ[runlock.TOKEN_ENV] = newer


def test_a_job_whose_snakemake_is_gone_is_stale(tmp_path, clean_env, monkeypatch):
    results = tmp_path / "results"
    holder = _holder_process(results, tmp_path)
    record = runlock.read_holder(runlock.lock_path(results))
    monkeypatch.setenv(runlock.TOKEN_ENV, record.token)
    monkeypatch.setenv(runlock.LOCK_ENV, str(runlock.lock_path(results)))
    runlock.ensure_current()  # its run is alive: fine
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with pytest.raises(runlock.StaleAttemptError, match="is gone"):
        runlock.ensure_current("x.fits")


def test_leftovers_of_dead_attempts_are_removed_live_ones_kept(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    casa = tmp_path / "casa-state"  # CASA's per-user state folder: per-process files of earlier versions
    casa.mkdir()
    monkeypatch.setenv("CONTIMG_CASA_DIR", str(casa))
    casa_dead = [casa / f"casa-{dead.pid}.log", casa / f"casasiteconfig-{dead.pid}.py",
                 casa / f".casasiteconfig-0123abcd.py.tmp-{dead.pid}"]  # fmt: skip
    casa_kept = [casa / f"casa-{os.getpid()}.log", casa / "casa.log", casa / "casasiteconfig-0123abcd.py"]
    for path in casa_dead + casa_kept:
        path.write_text("x" * 10)
    images = tmp_path / "results" / "images"
    work = images / f".2025-06-15T08:00:03.image-work-{dead.pid}"
    work.mkdir(parents=True)
    (work / "big").write_bytes(b"x" * 1000)
    tmp = images / f".a.fits.tmp-{dead.pid}"
    tmp.write_text("half")
    callib = images / f".b.ms.tmp-{dead.pid}.callib.txt"  # CASA's input, named after a temporary
    callib.write_text("lib")
    live = images / f".b.fits.tmp-{os.getpid()}"
    live.write_text("being written")
    product = tmp_path / "results" / "ms" / "g.ms"  # inside a product: not looked at
    (product / f".x.tmp-{dead.pid}").mkdir(parents=True)
    (tmp_path / "results" / "ms" / "g.ms.json").write_text("{}")
    removed = dict(runlock.remove_dead_leftovers(tmp_path / "results"))
    assert removed == {work: 1000, tmp: 4, callib: 3, **{p: 10 for p in casa_dead}}
    assert all(p.exists() for p in casa_kept)
    assert live.exists() and (product / f".x.tmp-{dead.pid}").exists()


ORPHAN = """
import subprocess, sys, time
from pathlib import Path
from dsa110_contimg import runlock
child = subprocess.Popen(["sleep", "600"])
print(child.pid, flush=True)
runlock.watch_run(lambda exc: Path(sys.argv[1]).write_text(str(exc)), interval_s=0.2)
time.sleep(600)
"""


def test_a_job_whose_snakemake_dies_stops_at_once_with_its_children(tmp_path, clean_env):
    """What a job does on its own (runlock.watch_run) when the Snakemake that started it is killed."""
    results = tmp_path / "results"
    holder = _holder_process(results, tmp_path)
    record = runlock.read_holder(runlock.lock_path(results))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), runlock.TOKEN_ENV: record.token,
           runlock.LOCK_ENV: str(runlock.lock_path(results))}  # fmt: skip
    said = tmp_path / "said.txt"
    job = subprocess.Popen([sys.executable, "-c", ORPHAN, str(said)], env=env, stdout=subprocess.PIPE, text=True)
    child = int(job.stdout.readline())
    try:
        assert job.poll() is None and runlock.pid_alive(child), "a job of a live run goes on"
        time.sleep(0.5)
        assert job.poll() is None
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        t0 = time.monotonic()
        assert job.wait(timeout=10) == runlock.ORPHAN_EXIT
        while runlock.pid_alive(child) and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert not runlock.pid_alive(child), "the job's child (the imager) is killed with it"
        assert time.monotonic() - t0 < 3
    finally:
        for pid in (job.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = said.read_text()
    assert text.startswith(f"orphaned job stopped at once with sleep ({child}): stale attempt: the snakemake "
                           f"that started this job (pid {holder.pid}"), text
