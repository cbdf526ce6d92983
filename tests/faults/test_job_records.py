"""Job records that never lie: host/PID/Slurm id at the start, failures named, dead jobs shown as died."""

from __future__ import annotations

import datetime as dt
import errno
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from dsa110_contimg.config import validate_config
from dsa110_contimg.db import Database, job_run
from dsa110_contimg.db.jobs import failure_message, gone_reason

GROUP = "2025-06-15T08:00:03"


@pytest.fixture
def config(tmp_path):
    return validate_config({"results_dir": str(tmp_path / "results"), "raw_dir": str(tmp_path / "raw")})


def _runs(config):
    with Database.from_config(config) as db:
        return db.job_runs()


def _dead_pid() -> int:
    """The id of a process of this host that has exited (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_records_host_pid_and_slurm_id_then_success(config, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with job_run(config, "convert", {"group": GROUP}) as run_id:
        (run,) = _runs(config)
        assert (run["id"], run["status"], run["host"], run["pid"], run["slurm_job_id"]) == (
            run_id, "running", platform.node(), os.getpid(), "4242")
        assert gone_reason(run) is None, "a live process's run is not died"
    (run,) = _runs(config)
    assert run["status"] == "success" and run["finished"] >= run["started"] and run["runtime_s"] >= 0


def test_a_full_disk_is_named_as_such_in_the_record(config):
    with pytest.raises(OSError), job_run(config, "image", {"group": GROUP}):
        raise OSError(errno.ENOSPC, "No space left on device", "/results/images/x.fits")
    (run,) = _runs(config)
    assert run["status"] == "failed"
    assert run["message"].startswith("out of disk space: OSError: [Errno 28] No space left on device")
    # An error caused by a full disk, deeper in the chain, is named too.
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("casacore: cannot write table") from inner
    except RuntimeError as outer:
        assert failure_message(outer).startswith("out of disk space: RuntimeError: casacore")


def test_a_job_that_died_is_shown_as_died_and_recorded_once(config):
    started = dt.datetime.now(dt.UTC)
    with Database.from_config(config) as db:
        dead = db.record_job("image", {"group": GROUP}, "running", started=started, pid=_dead_pid())
        alive = db.record_job("convert", {"group": GROUP}, "running", started=started)  # this process
        night = db.night(GROUP[:10])
    (failure,) = night["failures"]
    assert (failure["rule"], failure["status"]) == ("image", "died")
    assert failure["reason"].startswith(f"died: process {_runs(config)[0]['pid']} on {platform.node()} is gone")
    assert night["totals"]["failed"] == 1
    with Database.from_config(config) as db:
        died = db.reap_dead_jobs()
        assert [r["id"] for r in died] == [dead]
        assert db.reap_dead_jobs() == [], "reaping twice changes nothing"
        runs = {r["id"]: r for r in db.job_runs()}
    assert runs[dead]["status"] == "died" and runs[dead]["message"].startswith("died: process")
    assert runs[alive]["status"] == "running"


def test_a_reused_process_id_does_not_keep_a_dead_run_alive(config):
    """This process exists, but started long after the run: the run's own process is gone."""
    with Database.from_config(config) as db:
        db.record_job("image", {"group": GROUP}, "running", started=dt.datetime(2025, 6, 15, 8, 0))
        (run,) = db.job_runs()
    assert "its id now belongs to another process" in gone_reason(run)


def test_a_run_on_another_host_without_slurm_is_not_judged(config):
    with Database.from_config(config) as db:
        db.record_job("image", {"group": GROUP}, "running", host="other-node", pid=_dead_pid())
        (run,) = db.job_runs()
    assert gone_reason(run) is None


JOB = """
import sys, time
from dsa110_contimg.config import validate_config
from dsa110_contimg.db import job_run
config = validate_config({"results_dir": sys.argv[1]})
with job_run(config, "image", {"group": "2025-06-15T08:00:03"}):
    print("running", flush=True)
    time.sleep(600)
"""


def test_a_job_terminated_by_sigterm_is_recorded_as_failed(config):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", JOB, config["results_dir"]], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    proc.terminate()
    assert proc.wait(timeout=60) != 0
    (run,) = _runs(config)
    assert run["status"] == "failed" and run["pid"] == proc.pid
    assert run["message"].startswith("Terminated: terminated by SIGTERM"), run["message"]


def test_memory_error_is_named_out_of_memory(config):
    with pytest.raises(MemoryError), job_run(config, "image", {"group": GROUP}):
        raise MemoryError("Unable to allocate 8.00 GiB for an array")
    (run,) = _runs(config)
    assert run["message"].startswith("out of memory: MemoryError: Unable to allocate"), run["message"]


GREEDY = """
import subprocess, sys
from dsa110_contimg.config import validate_config
from dsa110_contimg.db import job_run
config = validate_config({"results_dir": sys.argv[1]})
print("ready", flush=True)
sys.stdin.readline()  # moved into the memory cgroup
with job_run(config, "image", {"group": "2025-06-15T08:00:03"}):
    # the imager: a child that needs more than the job's memory limit
    code = subprocess.run([sys.executable, "-c", "x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096])"]).returncode
    raise RuntimeError(f"imager failed (exit {code})")
"""


def test_a_child_killed_by_the_oom_killer_is_named_out_of_memory(config, tmp_path):
    """The job in a memory cgroup of 200 MB (as Slurm's task/cgroup makes one); its imager needs 400 MB."""
    from needs import unavailable

    root = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not (root / "memory.oom_control").exists():
        unavailable("needs root and a cgroup v1 memory controller at /sys/fs/cgroup/memory")
    group = root / f"contimg-test-{os.getpid()}"
    group.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        (group / "memory.limit_in_bytes").write_text(str(200 * 2**20))
        proc = subprocess.Popen([sys.executable, "-c", GREEDY, config["results_dir"]], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        (group / "cgroup.procs").write_text(str(proc.pid))
        _, err = proc.communicate("go\n", timeout=120)
        assert proc.returncode != 0 and "imager failed (exit -9)" in err, err[-2000:]
    finally:
        group.rmdir()
    (run,) = _runs(config)
    assert run["status"] == "failed"
    assert run["message"].startswith(
        "out of memory: the kernel killed 1 process(es) of this job (its memory limit is 200 MB): RuntimeError"
    ), run["message"]
