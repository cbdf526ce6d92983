"""Offline CASA set-up.

casatools reads its configuration once, at import, from the file named by
``CASASITECONFIG``. Without one it tries to download measures data into
``~/.casa`` and writes ``casa-*.log`` into the working directory. We write a
site config that points at the data of the installed ``casadata`` wheel, turns
every network update off and sends the log to a file we choose, so CASA runs
offline and never touches the user's home directory.

Every module that needs casatools calls :func:`casatools` / :func:`casatasks`
instead of importing them directly, so the environment is always set first.

A workflow job sends CASA's log (megabytes for a calibration) beside its own
log (:data:`JOB_LOG_ENV`, set by :func:`dsa110_contimg.stages.common.stage_run`)
instead of into the state folder, where a killed job's share could never be
told apart or removed; :func:`dead_leftovers` finds what processes that are
gone left in the state folder (per-process CASA logs and site configs of
earlier versions, half-written site configs), for the next run to remove.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

_SITE_CONFIG = """\
# Written by dsa110_contimg.casa_env: offline CASA from the casadata wheel.
measurespath = {measures!r}
datapath = [{measures!r}]
measures_auto_update = False
data_auto_update = False
skipnetworkcheck = True
nologger = True
nogui = True
log2term = False
logfile = {logfile!r}
cachedir = {cachedir!r}
startupfile = ''
"""


#: Site configs unused for this long are removed when a new one is written.
SITE_CONFIG_MAX_AGE_S = 86400.0

#: Where CASA's log goes in this process, once casatasks is imported (a job's own file).
JOB_LOG_ENV = "CONTIMG_CASA_LOG"

#: Files of one process in the state folder, named after its id.
_PER_PROCESS = re.compile(r"^(?:casa-(?P<log>\d+)\.log|casasiteconfig-(?P<site>\d+)\.py"
                          r"|\.casasiteconfig-[0-9a-f]+\.py\.tmp-(?P<tmp>\d+))$")


class CasaEnvError(RuntimeError):
    """The CASA state folder is not safe to use (not ours, not a folder, or open to others)."""


def _state_path() -> Path:
    """Where the state folder is: ``CONTIMG_CASA_DIR``, else ``dsa110_contimg-casa-<uid>`` in the temp folder."""
    base = os.environ.get("CONTIMG_CASA_DIR")
    return Path(base) if base else Path(tempfile.gettempdir()) / f"dsa110_contimg-casa-{os.getuid()}"


def _state_dir() -> Path:
    """Private per-user folder for the site config and CASA's cache (never ``~``).

    CASA executes the site config it is pointed at, so the folder must be
    this user's alone: created with mode 0700, and an existing one must be a
    real folder (not a symlink) owned by this user, or it is refused; its
    mode is tightened to 0700 if looser.
    """
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CasaEnvError(f"CASA state folder {path} is not a folder (a symlink or a file): refusing to use it")
    if st.st_uid != os.getuid():
        raise CasaEnvError(
            f"CASA state folder {path} belongs to uid {st.st_uid}, not to this user ({os.getuid()}): "
            "refusing to run a site config from it (remove it, or set CONTIMG_CASA_DIR)"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def _prune(state: Path, keep: Path) -> None:
    """Remove site configs nobody has used for :data:`SITE_CONFIG_MAX_AGE_S`."""
    cutoff = time.time() - SITE_CONFIG_MAX_AGE_S
    for old in state.glob("casasiteconfig-*.py"):
        try:
            if old != keep and old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            continue


def configure(logfile: str | os.PathLike | None = None) -> Path:
    """Write the offline site config and point ``CASASITECONFIG`` at it.

    Must run before casatools is first imported in this process; later calls
    only matter for child processes. ``logfile`` is where CASA writes its log
    (default: ``casa.log`` in the state folder). The site config is named
    after its content, so every process with the same settings shares one
    file; configs unused for a day are removed.
    """
    import casadata  # the wheel that carries the measures data

    state = _state_dir()
    if logfile is None:
        logfile = state / "casa.log"
    logfile = Path(logfile).resolve()
    logfile.parent.mkdir(parents=True, exist_ok=True)
    text = _SITE_CONFIG.format(
        measures=casadata.datapath, logfile=str(logfile), cachedir=str(state)
    )
    site = state / f"casasiteconfig-{hashlib.sha256(text.encode()).hexdigest()[:16]}.py"
    if site.exists():
        os.utime(site)  # in use: keep it from being pruned
    else:
        tmp = state / f".{site.name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, site)
        _prune(state, site)
    os.environ["CASASITECONFIG"] = str(site)
    # casatasks imports matplotlib, which would cache fonts under ~/.cache.
    os.environ.setdefault("MPLCONFIGDIR", str(state / "matplotlib"))
    return site


def casatools() -> ModuleType:
    """Import casatools with the offline configuration."""
    if not os.path.exists(os.environ.get("CASASITECONFIG", "")):
        configure()
    return importlib.import_module("casatools")


def casatasks() -> ModuleType:
    """Import casatasks with the offline configuration; its log goes to :data:`JOB_LOG_ENV` when set."""
    casatools()
    module = importlib.import_module("casatasks")
    job_log = os.environ.get(JOB_LOG_ENV)
    if job_log and module.casalog.logfile() != job_log:
        module.casalog.setlogfile(job_log)
    return module


def dead_leftovers(alive: Callable[[int], bool]) -> list[Path]:
    """Files in the state folder that belong to processes for which ``alive`` is false."""
    state = _state_path()
    try:
        names = os.listdir(state)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _PER_PROCESS.match(name)
        if match and not alive(int(next(pid for pid in match.groups() if pid))):
            found.append(state / name)
    return found
