"""Faults injected into a real run: status names them, nothing is lost or replaced, a rerun recovers.

The cases share one workflow run (conftest.py, faultsite.py) and each leaves
it healthy again; each writes its row of the fault table.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import needs
import numpy as np
import yaml
from casacore import tables
from faultsite import Site, record

from dsa110_contimg import naming, runlock


def _runs(site: Site, rule: str) -> list[dict]:
    with site.database() as db:
        return db.job_runs(rule=rule, group=site.group)


def test_injection_strings_in_paths_stop_the_run_before_anything_runs(site: Site, tmp_path):
    marker = tmp_path / "pwned"
    for key, value in (
        ("results_dir", f"{tmp_path}/r'$(touch {marker})'"),
        ("results_dir", f"{tmp_path}/r`touch {marker}`"),
        ("calibration", {"pin": "../../../etc"}),
    ):
        config = tmp_path / "hostile.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(site.config.read_text()), key: value}))
        t0 = time.monotonic()
        out = site.snakemake(config=config, workdir=tmp_path)
        assert out.returncode != 0 and f"config key '{key}" in out.stderr, out.stderr[-2000:]
        assert not marker.exists()
        assert not any(p.name.startswith("r") for p in tmp_path.iterdir() if p.is_dir() and p.name != ".snakemake")
    site.assert_healthy()
    record("`$(...)`, backtick or quote in results_dir; `..` in calibration.pin",
           "(no run starts) snakemake: config key named, 'contains ... which CASA and the shell would interpret'",
           "nothing (nothing ran)", time.monotonic() - t0)


def test_a_dangling_raw_symlink_is_its_groups_problem_alone(site: Site):
    raw = site.workdir / "raw"
    real = sorted(raw.iterdir())
    later = "2025-06-16T05:00:00"
    links = []
    for path in real:
        link = raw / f"{later}_{path.name.rsplit('_', 1)[1]}"
        link.symlink_to(path if "_sb05" not in path.name else raw / "vanished.hdf5")
        links.append(link)
    try:
        out = site.snakemake()
        assert out.returncode == 0, out.stderr[-3000:]
        assert "MissingInputException" not in out.stderr
        assert f"{raw / (later + '_sb05.hdf5')}: dangling symlink" in out.stderr
        status = site.status()
        assert status.returncode == 1
        assert f"incomplete_groups {later[:10]}" in status.stdout
        assert f"{later}  sb05 {raw / (later + '_sb05.hdf5')}: dangling symlink to" in status.stdout
        night = site.contimg("products", "night", later[:10], "--format", "json")
        report = site.status_json()
        (status_night,) = [n for n in report["nights"] if n["night"] == later[:10]]
        assert yaml.safe_load(night.stdout)["totals"]["incomplete"] == status_night["totals"]["incomplete"] == 1
    finally:
        t0 = time.monotonic()
        for link in links:
            link.unlink()
    site.assert_healthy()
    record("dangling raw symlink (one subband of a new group)",
           "exit 1, `incomplete_groups`: the group, `sb05 <file>: dangling symlink to <target>`; the run goes on",
           "nothing (the group waits for its file)", time.monotonic() - t0)


def test_a_corrupt_database_page_is_found_and_rebuilt_from_the_files(site: Site):
    db_file = site.results / "products.sqlite"
    with sqlite3.connect(db_file) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'images'").fetchone()
        n_pages = con.execute("PRAGMA page_count").fetchone()[0]
    assert 1 < root < n_pages, "a page in the middle of the file"
    with open(db_file, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(np.random.default_rng(1).bytes(page_size))

    status = site.status()
    assert status.returncode == 1 and "database_damaged" in status.stdout, status.stdout + status.stderr
    check = site.contimg("db", "check")
    assert check.returncode == 1 and "damaged" in check.stdout
    sync = site.contimg("db", "sync")
    assert sync.returncode == 1 and "problem" in sync.stdout
    # What a run's onstart checks (contimg check runs the same preflight): refused before any job.
    preflight = site.contimg("check")
    assert preflight.returncode == 1 and "product database: database sqlite" in preflight.stderr, preflight.stderr
    assert "is damaged" in preflight.stderr, preflight.stderr

    t0 = time.monotonic()
    db_file.rename(db_file.with_suffix(".damaged"))
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    rebuilt = site.contimg("db", "sync")
    assert rebuilt.returncode == 0 and "added" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    out = site.snakemake()
    assert out.returncode == 0, out.stderr[-2000:]
    recover = time.monotonic() - t0
    site.assert_healthy()
    Path(f"{db_file.with_suffix('.damaged')}").unlink()
    record("corrupt SQLite page (the images table's root page)",
           "exit 1, `database_damaged` (quick_check); `db check`/`db sync` exit 1; snakemake stops at parse",
           "the job-run history (only in the database; the job logs stay); products rebuilt from sidecars",
           recover)


def test_imaging_an_all_flagged_ms_fails_its_job_on_the_record(site: Site):
    ms = Path(naming.product_path(site.results, "calibrated", site.group))
    with tables.table(str(ms), readonly=False, ack=False) as t:
        flags = t.getcol("FLAG")
        t.putcol("FLAG", np.ones_like(flags))
    try:
        out = site.snakemake("--forcerun", "image")
        assert out.returncode != 0
        status = site.status()
        assert status.returncode == 1, status.stdout
        assert f"jobs_failed {site.group[:10]}: 1 failed job(s): {site.group} image" in status.stdout
        failed = status.stdout.split("failed:\n", 1)[1].splitlines()[0]
        assert "image: ImagingError" in failed and "flagged" in failed, failed
        (night,) = site.status_json()["nights"]
        assert (night["totals"]["imaged"], night["totals"]["failed"]) == (0, 1), night["totals"]
        assert _runs(site, "image")[-1]["status"] == "failed"
        assert not site.image.exists() and site.leftovers() == []
    finally:
        t0 = time.monotonic()
        with tables.table(str(ms), readonly=False, ack=False) as t:
            t.putcol("FLAG", flags)
    out = site.snakemake()
    assert out.returncode == 0, out.stderr[-2000:]
    recover = time.monotonic() - t0
    site.assert_healthy()
    record("imaging an all-flagged MS", "exit 1, `jobs_failed`: `<group> image: ImagingError: ... flagged`; "
           "imaged 0, failed 1", "nothing (the image is redone from the calibrated MS)", recover)


def test_a_job_killed_mid_write_is_shown_as_died_and_cleaned_up(site: Site):
    proc = site.start("--forcerun", "image")
    try:
        pid = site.wait_for_image_job(proc)
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        assert proc.wait(timeout=300) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = site.status()
    assert status.returncode == 1 and f"jobs_died {site.group[:10]}: 1 died job(s): {site.group} image" \
        in status.stdout, status.stdout
    assert f"image: died: process {pid}" in status.stdout
    assert _runs(site, "image")[-1]["status"] == "running", "the database cannot know until someone looks"
    assert any(".image-work-" in p for p in site.leftovers())

    t0 = time.monotonic()
    out = site.snakemake()
    assert out.returncode == 0, out.stderr[-2000:]
    recover = time.monotonic() - t0
    assert "recorded as died" in out.stderr and "removed 1 leftover(s) of dead job attempts" in out.stderr
    runs = _runs(site, "image")
    assert [r["status"] for r in runs[-2:]] == ["died", "success"]
    site.assert_healthy()
    record("kill -9 of the image job mid-write", "exit 1, `jobs_died`: `<group> image: died: process N "
           "on <host> is gone without a final record`", "nothing (work folder removed by the next run)", recover)


def test_a_second_snakemake_from_another_directory_is_refused(site: Site, tmp_path):
    first = site.start("--forcerun", "image", name="first")
    try:
        site.wait_for_image_job(first)
        os.killpg(first.pid, signal.SIGSTOP)  # the first run stays busy while the second starts
        t0 = time.monotonic()
        second = site.snakemake("--forcerun", "image", workdir=tmp_path)
        os.killpg(first.pid, signal.SIGCONT)
        assert second.returncode != 0
        assert f"is in use by another workflow run: pid {first.pid} on" in second.stdout + second.stderr, \
            (second.stdout + second.stderr)[-2000:]
        assert first.wait(timeout=600) == 0, site.log_tail(name="first")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGCONT)
            os.killpg(first.pid, signal.SIGKILL)
    assert not (tmp_path / "results").exists()
    site.assert_healthy()
    record("two snakemakes on one results_dir from different working directories",
           "(the second stops at once) `results_dir ... is in use by another workflow run: pid N on host, "
           "started T in DIR`; status unchanged", "nothing", time.monotonic() - t0)


def test_an_orphan_of_a_killed_snakemake_never_replaces_the_rerun_product(site: Site):
    other = site.workdir / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(site.config.read_text()), "imaging": {"imsize": 256}}))
    first = site.start("--forcerun", "image", config=other, name="orphaned")
    try:
        orphan = site.wait_for_image_job(first)
        os.kill(first.pid, signal.SIGKILL)  # Snakemake alone: its job goes on as an orphan ...
        first.wait(timeout=60)
        os.killpg(first.pid, signal.SIGSTOP)  # ... held back (with its imager) until the rerun is done
        t0 = time.monotonic()
        unlock = site.snakemake("--unlock")
        assert unlock.returncode == 0, unlock.stderr[-2000:]
        out = site.snakemake()
        assert out.returncode == 0, out.stderr[-3000:]
        assert "took over the lock of" in out.stderr and f"pid {first.pid}" in out.stderr
        recover = time.monotonic() - t0
    finally:
        try:  # the orphan (256 pixels) finishes after the rerun (128 pixels)
            os.killpg(first.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    # Let go, the orphan finds its run gone (runlock.watch_run) and stops within seconds.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and runlock.pid_alive(orphan):
        time.sleep(0.1)
    assert not runlock.pid_alive(orphan), "the orphan stops itself once it runs again"
    with fits_header(site.image) as header:
        assert header["NAXIS1"] == 128, "the rerun's 128-pixel image stands"
    (stale,) = [r for r in _runs(site, "image") if r["pid"] == orphan]
    assert stale["status"] == "failed" and stale["message"].startswith("StaleAttemptError: "), stale
    assert "stale attempt" in stale["message"], stale
    assert f"the snakemake that started this job (pid {first.pid}" in stale["message"] \
        or "no longer holds" in stale["message"]
    site.assert_healthy()
    record("kill -9 of snakemake; its orphaned image job held back (SIGSTOP) until a rerun is done",
           "(rerun) `took over the lock ... from a run that is gone`; let go, the orphan stops itself in seconds: "
           "its run `failed: StaleAttemptError`", "nothing (the orphan's output is discarded, the rerun's product "
           "stands)", recover)


def _wait_for_child(pid: int, name: str, proc: subprocess.Popen, timeout: float = 300) -> int:
    """The process id of ``pid``'s descendant called ``name`` once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for child in runlock.descendants(pid):
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    return child
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no {name} under job {pid}")


def test_orphans_of_a_killed_snakemake_stop_at_once_with_their_imager(site: Site):
    """kill -9 of Snakemake while WSClean images 4096 pixels: the job and WSClean are gone in seconds."""
    big = site.workdir / "big.yaml"
    big.write_text(yaml.safe_dump({**yaml.safe_load(site.config.read_text()), "imaging": {"imsize": 4096}}))
    first = site.start("--forcerun", "image", config=big, name="orphans")
    try:
        job = site.wait_for_image_job(first)
        imager = _wait_for_child(job, "wsclean", first)
        os.kill(first.pid, signal.SIGKILL)  # Snakemake alone
        t0 = time.monotonic()
        first.wait(timeout=60)
        while time.monotonic() - t0 < 30 and (runlock.pid_alive(job) or runlock.pid_alive(imager)):
            time.sleep(0.05)
        stopped = time.monotonic() - t0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert site.snakemake("--unlock").returncode == 0  # Snakemake's own lock, left by the kill
    assert not runlock.pid_alive(job) and not runlock.pid_alive(imager), "the orphan and its WSClean still run"
    assert stopped < 5, f"the orphan took {stopped:.1f} s to stop"

    status = site.status()
    assert status.returncode == 1, status.stdout
    assert f"jobs_failed {site.group[:10]}: 1 failed job(s): {site.group} image" in status.stdout, status.stdout
    line = next(ln for ln in status.stdout.splitlines() if f"{site.group}  image: " in ln)
    assert f"image: StaleAttemptError: orphaned job stopped at once with wsclean ({imager}): stale attempt: " \
        f"the snakemake that started this job (pid {first.pid}" in line, line
    (run,) = [r for r in _runs(site, "image") if r["pid"] == job]
    assert run["status"] == "failed" and "is gone; its output is discarded" in run["message"], run["message"]
    # Its work folder is left (removed by the next run) unless the job's own clean-up got to it first.
    assert set(site.leftovers()) <= {f"images/.{site.group}.image-work-{job}"}, site.leftovers()

    t0 = time.monotonic()
    out = site.snakemake()
    assert out.returncode == 0, out.stderr[-3000:]
    recover = time.monotonic() - t0
    assert "took over the lock of" in out.stderr
    site.assert_healthy()
    record("kill -9 of snakemake while WSClean images (4096 pixels)",
           f"exit 1, `jobs_failed`: `<group> image: StaleAttemptError: orphaned job stopped at once with wsclean "
           f"(PID): stale attempt: the snakemake that started this job (pid N ...) is gone ...`; job and WSClean "
           f"gone {stopped:.1f} s after the kill", "nothing (work folder removed by the rerun or the job itself)", recover)


def test_a_casa_job_killed_leaves_no_casa_temporaries(site: Site, tmp_path, monkeypatch):
    """kill -9 of apply_calibration while CASA works: its CASA log is beside its job log, not in the shared
    CASA state folder; the next run removes the dead attempt's MS and per-process CASA files."""
    state = tmp_path / "casa-state"  # this test's own CASA state folder (inherited by the jobs)
    monkeypatch.setenv("CONTIMG_CASA_DIR", str(state))
    monkeypatch.delenv("CASASITECONFIG", raising=False)  # set by an earlier test's CASA in this process
    ms = Path(naming.product_path(site.results, "calibrated", site.group))
    casa_log = site.results / "logs" / "apply_calibration" / f"{site.group}.casa.log"
    proc = site.start("--forcerun", "apply_calibration", name="casa")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(ms.parent.glob(f".{ms.name}.tmp-*[0-9]")):
            assert proc.poll() is None, site.log_tail(name="casa")
            time.sleep(0.05)
        (tmp,) = ms.parent.glob(f".{ms.name}.tmp-*[0-9]")  # the job has started (its earlier CASA log is gone)
        job = int(tmp.name.rsplit("-", 1)[1])
        while time.monotonic() < deadline and not (casa_log.exists() and casa_log.stat().st_size > 0):
            assert proc.poll() is None, site.log_tail(name="casa")
            time.sleep(0.05)
        casa_files = sorted(p.name for p in ms.parent.glob(f".{ms.name}.tmp-{job}.*"))  # mstransform's callib
        os.kill(job, signal.SIGKILL)
        assert proc.wait(timeout=300) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    shared = state / "casa.log"
    assert not shared.exists() or shared.stat().st_size < 8000, "CASA's chatter went to the shared log"
    assert not [p.name for p in state.iterdir() if p.name.startswith("casa-")], "no per-process CASA file"
    assert casa_log.stat().st_size > 0, "the killed job's CASA log is kept beside its job log"
    earlier = state / f"casa-{job}.log"  # what earlier versions left per process: the next run removes it too
    earlier.write_text("x" * 100_000)
    status = site.status()
    assert status.returncode == 1 and f"{site.group} apply_calibration" in status.stdout, status.stdout
    assert "jobs_died" in status.stdout

    # The product the killed job was replacing is intact, so a plain rerun would have nothing to do (and
    # Snakemake runs no onstart then): the operator reruns the job that died.
    t0 = time.monotonic()
    out = site.snakemake("--forcerun", "apply_calibration")
    assert out.returncode == 0, out.stderr[-3000:]
    recover = time.monotonic() - t0
    removed = 2 + len(casa_files)  # the attempt's MS, its CASA files, the earlier version's CASA log
    assert f"removed {removed} leftover(s) of dead job attempts" in out.stderr, (casa_files, out.stderr[-3000:])
    assert not earlier.exists() and not tmp.exists()
    assert casa_log.exists(), "the rerun's CASA log is beside its job log"
    site.assert_healthy()
    record("kill -9 of apply_calibration while CASA works", "exit 1, `jobs_died`: `<group> apply_calibration: died: "
           "process N ... is gone without a final record`", f"nothing (the next run removes the attempt's MS, "
           f"{', '.join(casa_files) or 'no CASA input file at that moment'} and dead processes' files in the CASA "
           f"state folder; CASA's log kept beside the job log)", recover)


class fits_header:  # noqa: N801  (a context manager used like a function)
    def __init__(self, path: Path):
        from astropy.io import fits

        self.hdul = fits.open(path)

    def __enter__(self):
        return self.hdul[0].header

    def __exit__(self, *exc):
        self.hdul.close()


def test_a_full_disk_is_named_and_a_rerun_recovers(site: Site, tmp_path):
    """results_dir on a 6 MB tmpfs: the MS fits, the calibration's copy of it does not."""
    if os.geteuid() != 0:
        needs.unavailable("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        config = tmp_path / "small.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(site.config.read_text()),
                                          "results_dir": str(mount / "results")}))  # fmt: skip
        small = Site(tmp_path, config, site.group)
        out = small.snakemake()
        assert out.returncode != 0
        status = small.status()
        assert status.returncode == 1 and "jobs_failed" in status.stdout, status.stdout
        failed = status.stdout.split("failed:\n", 1)[1].splitlines()[0]
        assert f"{site.group}  solve_calibration: out of disk space" in failed, failed
        (run,) = [r for r in _runs(small, "solve_calibration")]
        assert run["status"] == "failed" and run["message"].startswith("out of disk space")
        assert not (mount / "results" / "caltables" / site.group).exists() and small.leftovers() == []

        t0 = time.monotonic()
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        out = small.snakemake()
        assert out.returncode == 0, out.stderr[-3000:]
        recover = time.monotonic() - t0
        small.assert_healthy()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    record("disk full (results_dir on a 6 MB tmpfs)", "exit 1, `jobs_failed`: `<group> solve_calibration: "
           "out of disk space: ... [Errno 28] No space left on device ...`", "nothing (MS kept; the "
           "calibration's temporary removed)", recover)
