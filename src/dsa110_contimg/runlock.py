"""One workflow run per results directory, and no product from a stale attempt.

Snakemake locks its working directory, not the results directory: two runs
started from different folders on one ``results_dir`` would both run every
job, and a job orphaned by a killed Snakemake could rename its output over
the product a later run made. So the running Snakemake holds
``<results_dir>/.contimg-run.lock`` (an exclusive ``flock``, released by the
kernel when the process dies, whatever killed it) with a JSON record of who
holds it and a random token, which its jobs inherit through the environment.

- :func:`start_run` (rule files' ``onstart``): take the lock or refuse with a
  message naming the holder; a lock whose holder is gone is taken over with a
  warning; temporaries and work folders of dead attempts are removed; job runs
  whose process is gone are recorded as died.
- :func:`ensure_current` (before every final rename, see
  :func:`dsa110_contimg.provenance.atomic_output`): raise
  :class:`StaleAttemptError` unless the run that started this job still holds
  the lock.
- :func:`watch_run` (every job, :func:`dsa110_contimg.stages.common.stage_run`):
  a thread that checks the same every second and, once the job's run is gone,
  kills the job's child processes (the imager) and the job itself, so an orphan
  of a killed Snakemake stops within seconds instead of imaging for hours.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dsa110_contimg")

LOCK_NAME = ".contimg-run.lock"
TOKEN_ENV = "CONTIMG_RUN_TOKEN"
LOCK_ENV = "CONTIMG_RUN_LOCK"

#: Hidden leftovers of an attempt, named after its process id: atomic_output's
#: temporaries and set-aside old products, the imager's work folders, and files
#: named after a temporary (the calibration library CASA's mstransform reads,
#: ``.<ms>.tmp-<pid>.callib.txt``).
LEFTOVER = re.compile(r"^\..+\.(?:tmp|old|image-work)-(?P<pid>\d+)(?:\.[^/]+)?$")

_held: dict[Path, int] = {}  # lock file -> descriptor holding the flock, for this process's life


class RunLockError(RuntimeError):
    """Another live run holds the results directory."""


class StaleAttemptError(RuntimeError):
    """This job's run no longer holds the results directory: its outputs must not replace anything."""


@dataclass(frozen=True)
class Holder:
    """Who holds a results directory's lock."""

    token: str
    host: str
    pid: int
    started: str
    workdir: str
    command: str

    def describe(self) -> str:
        return (f"pid {self.pid} on {self.host}, started {self.started} in {self.workdir} "
                f"({self.command})")  # fmt: skip


def lock_path(results_dir: str | os.PathLike[str]) -> Path:
    """The lock file of ``results_dir`` (absolute, so every working directory agrees)."""
    return Path(results_dir).resolve() / LOCK_NAME


def read_holder(path: str | os.PathLike[str]) -> Holder | None:
    """The holder recorded in a lock file; None when there is none (released, or no file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    try:
        return Holder(**json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise RunLockError(f"{path}: not a lock record this software wrote ({exc})") from None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def acquire(results_dir: str | os.PathLike[str]) -> tuple[Holder, Holder | None]:
    """Take ``results_dir``'s lock for this process; returns (this holder, the stale one taken over).

    Raises :class:`RunLockError` naming the holder when a live run has it.
    Sets :data:`TOKEN_ENV` and :data:`LOCK_ENV` so the jobs started from here
    can tell (:func:`ensure_current`) that their run is still the current one.
    """
    path = lock_path(results_dir)
    if path in _held:
        holder = read_holder(path)
        if holder is not None:
            return holder, None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        holder = read_holder(path)
        who = holder.describe() if holder else "a process that has not written its record yet"
        raise RunLockError(
            f"results_dir {path.parent} is in use by another workflow run: {who}. "
            "Wait for it to end (or stop it); two runs on one results_dir would redo each other's jobs"
        ) from None
    try:
        previous = read_holder(path)
    except RunLockError:
        previous = None  # unreadable record of a dead holder: we hold the flock, so it is gone
    holder = Holder(
        token=secrets.token_hex(16), host=platform.node(), pid=os.getpid(),
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), workdir=os.getcwd(),
        command=" ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:500],
    )  # fmt: skip
    data = (json.dumps(asdict(holder)) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    _held[path] = fd
    os.environ[TOKEN_ENV] = holder.token
    os.environ[LOCK_ENV] = str(path)
    return holder, previous


def release(results_dir: str | os.PathLike[str]) -> None:
    """Give the lock up (clean end of a run): the record is emptied, then the flock dropped."""
    path = lock_path(results_dir)
    fd = _held.pop(path, None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    if os.environ.get(LOCK_ENV) == str(path):
        os.environ.pop(LOCK_ENV, None)
        os.environ.pop(TOKEN_ENV, None)


def ensure_current(what: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`StaleAttemptError` unless this job's run still holds its results directory.

    Call it just before renaming a finished output into place. A job started
    outside a locked run (no :data:`TOKEN_ENV`: a test, a direct call) is
    always current. Otherwise the lock must hold this job's token and, when
    the holder runs on this host, the holder must be alive: a job whose
    Snakemake was killed (or replaced by a newer run) is a stale attempt.
    """
    token, path = os.environ.get(TOKEN_ENV), os.environ.get(LOCK_ENV)
    if not token or not path:
        return
    label = f" for {what}" if what is not None else ""
    holder = read_holder(path)
    if holder is None or holder.token != token:
        now = f"now held by {holder.describe()}" if holder else "released since"
        raise StaleAttemptError(
            f"stale attempt{label}: the run that started this job no longer holds {path} ({now}); "
            "its output is discarded and nothing is replaced"
        )
    if holder.host == platform.node() and not pid_alive(holder.pid):
        raise StaleAttemptError(
            f"stale attempt{label}: the snakemake that started this job ({holder.describe()}) is gone; "
            "its output is discarded and nothing is replaced (the next run redoes the job)"
        )


# ---------------------------------------------------------------- orphans

#: Exit status of a job that stopped itself because its run is gone (EX_TEMPFAIL: redo it).
ORPHAN_EXIT = 75


def _children_of() -> dict[int, list[int]]:
    """Every process of this host by parent id, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state != "Z":  # a zombie has ended already
            children.setdefault(int(ppid), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Process ids of every live descendant of ``pid`` on this host (children before grandchildren)."""
    children, found, todo = _children_of(), [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found += kids
        todo += kids
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def signal_descendants(sig: int, pid: int | None = None) -> list[str]:
    """Send ``sig`` to every descendant of ``pid`` (default: this process); returns "name (pid)" of each.

    Looks again until none is left unsignalled, so a child forked meanwhile gets it too.
    """
    pid = os.getpid() if pid is None else pid
    sent: list[str] = []
    signalled: set[int] = set()
    for _ in range(10):
        found = [child for child in descendants(pid) if child not in signalled]
        if not found:
            break
        for child in found:
            signalled.add(child)
            name = _name(child)
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                continue
            sent.append(f"{name} ({child})")
        time.sleep(0.02)
    return sent


_orphaned = threading.Event()


def orphaned() -> bool:
    """Whether :func:`watch_run` is stopping this process (its failure is recorded there, not by the job)."""
    return _orphaned.is_set()


def watch_run(on_orphan: Callable[[StaleAttemptError], None], interval_s: float = 1.0) -> threading.Event | None:
    """Stop this job as soon as its run is gone; returns the event that ends the watch (None: not in a run).

    Every ``interval_s`` a daemon thread runs :func:`ensure_current`. Once it
    raises, the thread freezes every child process of the job (an imager:
    WSClean, tclean's Python) with SIGSTOP, so that the job cannot take their
    end for a failure of its own; calls ``on_orphan`` with the error (naming
    what is stopped) to record it; SIGKILLs the children; and ends the process
    at once with :data:`ORPHAN_EXIT`: the main thread may be deep in C code
    that no signal would interrupt. Its temporaries are removed by the next
    run (:func:`remove_dead_leftovers`).
    """
    if not os.environ.get(TOKEN_ENV) or not os.environ.get(LOCK_ENV):
        return None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            try:
                ensure_current()
            except StaleAttemptError as exc:
                _orphaned.set()
                frozen = signal_descendants(signal.SIGSTOP)
                what = ", ".join(frozen) if frozen else "no child process"
                try:
                    on_orphan(StaleAttemptError(f"orphaned job stopped at once with {what}: {exc}"))
                finally:
                    signal_descendants(signal.SIGKILL)
                    os._exit(ORPHAN_EXIT)
            except (OSError, RunLockError) as exc:  # the lock file unreadable for a moment: look again
                log.warning("cannot check the run lock: %s", exc)

    threading.Thread(target=watch, name="contimg-run-watch", daemon=True).start()
    return done


# ---------------------------------------------------------------- cleanup


def _walk_leftovers(results_dir: Path) -> Iterator[Path]:
    """Hidden leftovers (:data:`LEFTOVER`) under ``results_dir``, not descending into products."""
    for root, dirs, files in os.walk(results_dir):
        names = set(files)
        for name in [*dirs, *files]:
            if LEFTOVER.match(name):
                yield Path(root, name)
        dirs[:] = [d for d in dirs if not d.startswith(".") and f"{d}.json" not in names]


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def remove_dead_leftovers(results_dir: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """Remove the leftovers of attempts whose process is gone; returns (path, bytes) of each.

    Those under ``results_dir`` (:data:`LEFTOVER`) and those in CASA's state
    folder (:func:`dsa110_contimg.casa_env.dead_leftovers`). Only leftovers of processes that no longer exist on this host go: a live
    one may be an orphaned job still writing (it fails at its rename, see
    :func:`ensure_current`, and its own clean-up removes it).
    """
    from .casa_env import dead_leftovers

    removed = []
    candidates = [p for p in _walk_leftovers(Path(results_dir)) if not pid_alive(int(LEFTOVER.match(p.name)["pid"]))]
    for path in candidates + dead_leftovers(pid_alive):
        try:
            size = _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append((path, size))
    return removed


def start_run(config: Mapping[str, Any], say: Callable[[str], None] = print) -> Holder:
    """What a workflow run does before its first job (``onstart``): see the module docstring.

    Raises :class:`RunLockError` when another live run holds ``results_dir``.
    """
    results_dir = Path(config["results_dir"])
    holder, previous = acquire(results_dir)
    if previous is not None and previous.token != holder.token:
        say(f"WARNING: took over the lock of {results_dir} from a run that is gone: {previous.describe()}")
    removed = remove_dead_leftovers(results_dir)
    if removed:
        total = sum(size for _, size in removed)
        say(f"removed {len(removed)} leftover(s) of dead job attempts ({total / 1e6:.1f} MB): "
            + ", ".join(str(p) for p, _ in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    _reap(config, say)
    return holder


def _reap(config: Mapping[str, Any], say: Callable[[str], None]) -> None:
    from .db import Database, DatabaseError, database_url

    url = database_url(config)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return
    try:
        with Database.from_config(config) as db:
            died = db.reap_dead_jobs()
    except DatabaseError as exc:
        say(f"WARNING: could not check the job records for dead jobs: {exc}")
        return
    for run in died:
        say(f"job {run['rule']} {run['wildcards']} recorded as died: {run['message']}")


__all__ = [
    "LOCK_ENV",
    "LOCK_NAME",
    "TOKEN_ENV",
    "Holder",
    "RunLockError",
    "StaleAttemptError",
    "acquire",
    "ensure_current",
    "descendants",
    "lock_path",
    "orphaned",
    "pid_alive",
    "read_holder",
    "release",
    "remove_dead_leftovers",
    "signal_descendants",
    "start_run",
    "watch_run",
]
