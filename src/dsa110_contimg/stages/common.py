"""Shared helpers of the stage functions: logging to the rule's log file."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

log = logging.getLogger("dsa110_contimg")


@contextmanager
def logged(
    logfile: str | os.PathLike | None,
    stage: str,
    what: str,
    config: Mapping[str, Any] | None = None,
    wildcards: Mapping[str, Any] | None = None,
):
    """Log to ``logfile`` (and stderr) for one stage; the failure reason ends the log.

    With ``config``, the run is also recorded in the product database's job
    runs (running, then success or failed with the reason), so operators can
    see what failed and why without reading logs.
    """
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
        with ExitStack() as stack:
            if config is not None:
                from ..db import job_run

                stack.enter_context(job_run(config, stage, wildcards or {"group": what}, log=logfile))
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
