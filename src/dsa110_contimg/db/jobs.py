"""Job runs: which rule ran for which wildcards, when, where, and why it failed.

Stages record a run when it starts and again when it ends (``job_run`` in
:mod:`.core` does both around a block); ``contimg products night`` reads the
latest run of each rule and group to say what failed and why.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from .. import naming
from .registry import ensure_group, utc_naive
from .schema import JOB_STATUSES, JobRun

#: Wildcards that name an observation group (a calibrator group is one too).
GROUP_WILDCARDS = ("group", "calgroup")

MAX_MESSAGE = 4000  # characters kept of a failure message


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


def failure_message(exc: BaseException) -> str:
    """One line saying what went wrong: the exception type and its message."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


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
