"""Offline CASA set-up.

casatools reads its configuration once, at import, from the file named by
``CASASITECONFIG``. Without one it tries to download measures data into
``~/.casa`` and writes ``casa-*.log`` into the working directory. We write a
site config that points at the data of the installed ``casadata`` wheel, turns
every network update off and sends the log to a file we choose, so CASA runs
offline and never touches the user's home directory.

Every module that needs casatools calls :func:`casatools` / :func:`casatasks`
instead of importing them directly, so the environment is always set first.
"""

from __future__ import annotations

import importlib
import os
import tempfile
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


def _state_dir() -> Path:
    """Per-user folder for the site config and CASA's cache (never ``~``)."""
    base = os.environ.get("CONTIMG_CASA_DIR")
    if base:
        path = Path(base)
    else:
        path = Path(tempfile.gettempdir()) / f"dsa110_contimg-casa-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure(logfile: str | os.PathLike | None = None) -> Path:
    """Write the offline site config and point ``CASASITECONFIG`` at it.

    Must run before casatools is first imported in this process; later calls
    only matter for child processes. ``logfile`` is where CASA writes its log
    (default: a per-process file in the state folder).
    """
    import casadata  # the wheel that carries the measures data

    state = _state_dir()
    if logfile is None:
        logfile = state / f"casa-{os.getpid()}.log"
    logfile = Path(logfile).resolve()
    logfile.parent.mkdir(parents=True, exist_ok=True)
    text = _SITE_CONFIG.format(
        measures=casadata.datapath, logfile=str(logfile), cachedir=str(state)
    )
    site = state / f"casasiteconfig-{os.getpid()}.py"
    site.write_text(text)
    os.environ["CASASITECONFIG"] = str(site)
    # casatasks imports matplotlib, which would cache fonts under ~/.cache.
    os.environ.setdefault("MPLCONFIGDIR", str(state / "matplotlib"))
    return site


def casatools() -> ModuleType:
    """Import casatools with the offline configuration."""
    if "CASASITECONFIG" not in os.environ:
        configure()
    return importlib.import_module("casatools")


def casatasks() -> ModuleType:
    """Import casatasks with the offline configuration."""
    casatools()
    return importlib.import_module("casatasks")
