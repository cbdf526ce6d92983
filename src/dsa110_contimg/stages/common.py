"""Shared helpers of the stage functions: logging to the rule's log file."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

log = logging.getLogger("dsa110_contimg")


@contextmanager
def logged(logfile: str | os.PathLike | None, stage: str, what: str):
    """Log to ``logfile`` (and stderr) for one stage; the failure reason ends the log."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if logfile:
        os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.info("%s %s: start", stage, what)
    try:
        yield log
    except Exception as exc:
        log.error("%s %s failed: %s", stage, what, exc)
        raise
    else:
        log.info("%s %s: done", stage, what)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
