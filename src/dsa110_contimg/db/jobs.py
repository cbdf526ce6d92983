"""Job runs: which rule ran for which wildcards, when, where, and why it failed.

Every job records its run through :func:`job_run`: "running" when it starts
(with host, process id and Slurm job id), then "success", or "failed" with the
reason. A job that dies hard (SIGKILL, out of memory, node failure) cannot
write its end; :func:`gone_reason` tells from the host and process id that it
is gone, queries show such a run as died, and :func:`reap` (run by the next
workflow run and by ``contimg db sync``) records it as "died".

Operating-system errors are named for what they mean to an operator: a full
disk is "out of disk space", not "disk I/O error". A job over its memory is
"out of memory" whichever way it ends: a ``MemoryError``; a child process (the
imager) killed by the kernel's OOM killer in the job's memory cgroup (Slurm's
task/cgroup), named by :func:`oom_since`; or the job itself killed, named when
the run is reaped from Slurm's accounting (``OUT_OF_MEMORY``, :func:`slurm_end`).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import naming
from ..runlock import orphaned, pid_alive
from .registry import ensure_group, utc_naive
from .schema import JOB_STATUSES, JobRun

logger = logging.getLogger("dsa110_contimg")

#: Wildcards that name an observation group (a calibrator group is one too).
GROUP_WILDCARDS = ("group", "calgroup")

MAX_MESSAGE = 4000  # characters kept of a failure message

#: OS errors an operator acts on, by errno: what to call them.
OS_ERROR_NAMES = {
    errno.ENOSPC: "out of disk space",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error (failing disk or lost network file system)",
    errno.ENOMEM: "out of memory",
    errno.EACCES: "permission denied",
}

#: SQLite's own words for a full disk (SQLITE_FULL).
_SQLITE_FULL = "database or disk is full"


def group_of(wildcards: Mapping[str, Any]) -> str | None:
    """The observation group a job works on, if a wildcard names one."""
    for key in GROUP_WILDCARDS:
        value = wildcards.get(key)
        if isinstance(value, str):
            try:
                naming.parse_timestamp(value)
            except ValueError:
                continue
            return value
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def os_problem(exc: BaseException) -> str | None:
    """'out of disk space' (or another name from :data:`OS_ERROR_NAMES`) when
    ``exc`` or what caused it is such an OS error; None otherwise."""
    for link in _chain(exc):
        if isinstance(link, MemoryError):
            return OS_ERROR_NAMES[errno.ENOMEM]
        if isinstance(link, OSError) and link.errno in OS_ERROR_NAMES:
            return OS_ERROR_NAMES[link.errno]
        if isinstance(link, OSError) and link.errno is None:  # shutil.Error: the errors as text
            for number in re.findall(r"\[Errno (\d+)\]", str(link)):
                if int(number) in OS_ERROR_NAMES:
                    return OS_ERROR_NAMES[int(number)]
        if isinstance(link, sqlite3.OperationalError) and _SQLITE_FULL in str(link):
            return OS_ERROR_NAMES[errno.ENOSPC]
    return None


def failure_message(exc: BaseException, problem: str | None = None) -> str:
    """One line saying what went wrong: the OS problem's name if any (``problem``
    when given, else :func:`os_problem`), the type and message."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    problem = problem or os_problem(exc)
    if problem and not text.startswith(problem):
        text = f"{problem}: {text}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def free_space_problem(path: str | os.PathLike[str], minimum_bytes: int = 1 << 20) -> str | None:
    """'out of disk space on <path> (N bytes free)' when the file system holding
    ``path`` (or its nearest existing parent) has less than ``minimum_bytes`` free."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    if free < minimum_bytes:
        return f"{OS_ERROR_NAMES[errno.ENOSPC]} on the file system of {where} ({free} bytes free)"
    return None


# ------------------------------------------------------- memory limits


def _memory_cgroup() -> Path | None:
    """This process's memory cgroup folder (cgroup v1 ``memory`` or the v2 unified one), if any."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return folder if (folder / "memory.oom_control").exists() else None
    for line in lines:
        if line.startswith("0::"):
            folder = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            return folder if (folder / "memory.events").exists() else None
    return None


def memory_oom_kills() -> tuple[int, str] | None:
    """(processes the kernel killed for memory in this process's cgroup, its limit as text);
    None when there is no memory cgroup to read (v1 ``memory.oom_control``, v2 ``memory.events``)."""
    folder = _memory_cgroup()
    if folder is None:
        return None
    v1 = (folder / "memory.oom_control").exists()
    try:
        text = (folder / ("memory.oom_control" if v1 else "memory.events")).read_text()
    except OSError:
        return None
    kills = re.search(r"^oom_kill (\d+)$", text, re.M)
    if kills is None:
        return None
    limits = []  # the tightest limit of the cgroup and its parents (Slurm sets the job's, not the task's)
    for where in (folder, *folder.parents):
        try:
            value = (where / ("memory.limit_in_bytes" if v1 else "memory.max")).read_text().strip()
        except OSError:
            break
        if value.isdigit() and int(value) < 2**60:
            limits.append(int(value))
    return int(kills.group(1)), f"{min(limits) / 2**20:.0f} MB" if limits else "no limit"


def oom_since(before: tuple[int, str] | None) -> str | None:
    """'out of memory: ...' when the kernel has killed a process of this job's
    memory cgroup since ``before`` (a :func:`memory_oom_kills` reading)."""
    now = memory_oom_kills()
    if before is None or now is None or now[0] <= before[0]:
        return None
    return (f"{OS_ERROR_NAMES[errno.ENOMEM]}: the kernel killed {now[0] - before[0]} process(es) of this job "
            f"(its memory limit is {now[1]})")


# ------------------------------------------------------------ died runs


def _proc_start(pid: int) -> dt.datetime | None:
    """When process ``pid`` of this host started (naive UTC), from /proc; None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, counted after "pid (comm)"
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    return utc_naive(dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=age)


#: How a Slurm job ended, by the state sacct gives it or one of its steps, most telling first.
SLURM_ENDS = {
    "OUT_OF_MEMORY": OS_ERROR_NAMES[errno.ENOMEM],
    "TIMEOUT": "time limit reached",
    "CANCELLED": "cancelled",
    "NODE_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "node failed to boot",
    "DEADLINE": "deadline reached",
}


def _run_quietly(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_end(job_id: str) -> str | None:
    """How Slurm job ``job_id`` ended, from sacct: 'out of memory (Slurm job N: OUT_OF_MEMORY)',
    'cancelled (...)', ...; None when sacct is missing, does not answer or names nothing telling."""
    sacct = shutil.which("sacct")
    out = _run_quietly([sacct, "-j", job_id, "-n", "-P", "-o", "JobID,State"]) if sacct else None
    if out is None or out.returncode != 0:
        return None
    states = {}
    for line in out.stdout.splitlines():
        step, _, state = line.partition("|")
        if state:
            states.setdefault(state.split()[0].rstrip("+"), step)
    for state, meaning in SLURM_ENDS.items():
        if state in states:
            return f"{meaning} (Slurm job {job_id}: step {states[state]} {state})"
    return None


def _slurm_gone(job_id: str) -> str | None:
    """Why Slurm job ``job_id`` is over (None: still queued or running, or unknown)."""
    squeue = shutil.which("squeue")
    out = _run_quietly([squeue, "-h", "-j", job_id, "-o", "%T"]) if squeue else None
    if out is None or (out.returncode == 0 and out.stdout.strip()):
        return None
    if out.returncode == 0 or "Invalid job id" in out.stderr:
        end = slurm_end(job_id)
        return f"{end}: Slurm job {job_id} is over" if end else f"Slurm job {job_id} is no longer queued or running"
    return None


def gone_reason(run: JobRun | Mapping[str, Any], host: str | None = None) -> str | None:
    """Why a run recorded as running is not running any more (None: it may be).

    A run on this host whose process no longer exists, or whose process id now
    belongs to a process started after the run (a reused id), died without a
    final record. A run elsewhere is judged by its Slurm job when it has one;
    otherwise it cannot be judged from here and is taken as running.
    """
    get = run.get if isinstance(run, Mapping) else lambda key: getattr(run, key)
    if get("status") != "running":
        return None
    host = host or platform.node()
    pid, started = get("pid"), utc_naive(get("started"))
    where = f"process {pid} on {get('host')}"
    if get("host") == host and pid is not None:
        if not pid_alive(pid):
            full = free_space_problem(get("log_path")) if get("log_path") else None
            end = slurm_end(str(get("slurm_job_id"))) if get("slurm_job_id") else None
            return ("died: " + (f"{end}: " if end else "")
                    + f"{where} is gone without a final record (killed, out of memory or crashed)"
                    + (f"; {full}" if full else ""))
        began = _proc_start(pid)
        if started is not None and began is not None and began > started + dt.timedelta(seconds=2):
            return f"died: {where} is gone without a final record (its id now belongs to another process)"
        return None
    if get("slurm_job_id"):
        reason = _slurm_gone(str(get("slurm_job_id")))
        if reason:
            return f"died: {reason} and {where} left no final record"
    return None


def reap(session: Session, host: str | None = None) -> list[JobRun]:
    """Record as "died" (with the reason) every running run that :func:`gone_reason` finds gone."""
    died = []
    for run in session.scalars(select(JobRun).where(JobRun.status == "running")):
        reason = gone_reason(run, host)
        if reason:
            run.status = "died"
            run.message = reason[:MAX_MESSAGE]
            died.append(run)
    session.flush()
    return died


# -------------------------------------------------------------- records


def record(
    session: Session,
    rule: str,
    wildcards: Mapping[str, Any],
    status: str = "success",
    *,
    run_id: int | None = None,
    started: dt.datetime | str | None = None,
    finished: dt.datetime | str | None = None,
    host: str | None = None,
    pid: int | None = None,
    log: str | os.PathLike[str] | None = None,
    message: str | None = None,
    slurm_job_id: str | None = None,
) -> int:
    """Insert a job run, or with ``run_id`` update it (its end); returns its id.

    Host, process id and Slurm job id default to this process's; the run
    time is computed from ``started`` and ``finished`` when both are known.
    """
    if status not in JOB_STATUSES:
        raise ValueError(f"job status {status!r} is not one of {list(JOB_STATUSES)}")
    started, finished = utc_naive(started), utc_naive(finished)
    if run_id is None:
        row = JobRun(
            rule=rule,
            wildcards={str(k): str(v) for k, v in wildcards.items()},
            group_id=_group_row(session, wildcards),
            started=started,
            host=host or platform.node(),
            pid=os.getpid() if pid is None else pid,
            slurm_job_id=slurm_job_id or os.environ.get("SLURM_JOB_ID"),
            log_path=None if log is None else str(os.path.abspath(log)),
        )
        session.add(row)
    else:
        row = session.get(JobRun, run_id)
        if row is None:
            raise LookupError(f"no job run {run_id}")
    row.status = status
    if finished is not None:
        row.finished = finished
    if message is not None:
        row.message = message[:MAX_MESSAGE]
    if row.started is not None and row.finished is not None:
        row.runtime_s = (row.finished - row.started).total_seconds()
    session.flush()
    return row.id


def _group_row(session: Session, wildcards: Mapping[str, Any]) -> str | None:
    group = group_of(wildcards)
    if group is not None:
        ensure_group(session, group)
    return group


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _database_problem(config: Mapping[str, Any], exc: BaseException) -> str:
    """The database error, led by 'out of disk space' when that is the cause."""
    from .core import database_url

    text = " ".join(str(exc).split())
    problem = os_problem(exc)
    url = database_url(config)
    if url.get_backend_name() == "sqlite" and url.database:
        problem = free_space_problem(url.database) or problem
    return f"{problem}: {text}" if problem and problem not in text else text


class Terminated(BaseException):
    """SIGTERM (Slurm's scancel, a time limit, a shutdown) turned into an exception,
    so the job's ``finally`` blocks run and its failure is recorded."""


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(f"terminated by {signal.Signals(signum).name} (cancelled, time limit or shutdown)")


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def record_failure(
    config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any], run_id: int, exc: BaseException,
    problem: str | None = None,
) -> None:
    """Record run ``run_id`` as failed with ``exc`` as the reason (led by
    ``problem``, e.g. from :func:`oom_since`); when the database cannot be
    written, say so in the log and in a note on ``exc``."""
    from .core import Database
    from .errors import DatabaseError

    reason = failure_message(exc, problem)
    if problem or os_problem(exc):
        logger.error("%s: %s", rule, reason)
    try:
        with Database.from_config(config) as db:
            db.record_job(rule, wildcards, "failed", run_id=run_id, finished=_now(), message=reason)
    except (DatabaseError, OSError) as db_exc:
        note = f"(the failure could not be recorded in the database: {_database_problem(config, db_exc)})"
        logger.error("%s %s", rule, note)
        exc.add_note(note)


@contextmanager
def job_run(
    config: Mapping[str, Any],
    rule: str,
    wildcards: Mapping[str, Any],
    log: str | os.PathLike[str] | None = None,
) -> Iterator[int | None]:
    """Record a job run around a block: "running" at the start (host, PID, Slurm
    job id), then "success", or "failed" with the exception as the reason (the
    exception is re-raised). SIGTERM within the block is raised as
    :class:`Terminated`, so a cancelled job is recorded as failed, not left running.

    When the start cannot be recorded the job fails at once with
    :class:`~.errors.DatabaseError` naming the cause (a full disk named as
    such): it could not register its product either. When the end cannot be
    recorded, the job's own exception still wins and carries a note, and the
    reason goes to the job's log; the run then shows as died once the process
    is gone, never as running or succeeded.
    """
    from .core import Database
    from .errors import DatabaseError

    started = _now()
    try:
        with Database.from_config(config) as db:
            run_id = db.record_job(rule, wildcards, "running", started=started, log=log)
    except (DatabaseError, OSError) as exc:
        raise DatabaseError(f"{rule}: cannot record the job's start: {_database_problem(config, exc)}") from exc
    oom_before = memory_oom_kills()
    try:
        with _terminate_as_exception():
            yield run_id
    except BaseException as exc:
        if not orphaned():  # else runlock.watch_run records why the job is being stopped
            record_failure(config, rule, wildcards, run_id, exc, oom_since(oom_before))
        raise
    try:
        with Database.from_config(config) as db:
            db.record_job(rule, wildcards, "success", run_id=run_id, finished=_now())
    except (DatabaseError, OSError) as exc:
        raise DatabaseError(f"{rule}: cannot record the job's success: {_database_problem(config, exc)}") from exc
