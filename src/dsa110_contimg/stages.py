"""One function per workflow rule: run the science, write the product atomically
with its sidecar, register it in the database.

The Snakemake scripts only call these, so every stage can be run and tested
without Snakemake.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import provenance
from .convert import ConvertOptions, convert_group
from .db import Database

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


def convert(
    subbands: Sequence[str],
    ms: str,
    group: str,
    config: Mapping[str, Any],
    log: str | None = None,
) -> dict:
    """Rule ``convert``: one group's subband files -> ``ms`` + sidecar + database row."""
    opts = ConvertOptions(
        telescope_name=config["convert"]["telescope_name"],
        flag_autocorrelations=config["convert"]["flag_autocorrelations"],
    )
    with logged(log, "convert", group) as logger:
        logger.info("%d subbands -> %s", len(subbands), ms)
        t0 = time.perf_counter()
        with provenance.atomic_output(ms) as tmp:
            qa = convert_group(subbands, tmp, opts, group)
        wall = time.perf_counter() - t0
        logger.info(
            "wrote %s: %d rows, %d channels, %.1f%% flagged, %.1f s",
            ms, qa["n_rows"], qa["n_channels"], 100 * qa["flagged_fraction"], wall,
        )
        provenance.write_sidecar(
            ms, kind="ms", group=group, inputs=subbands, config=dict(config), qa=qa,
            timings={"wall_s": wall},
        )
        with Database.from_config(config) as db:
            db.register_product(ms)
        logger.info("registered %s in the product database", ms)
    return qa
