"""Stage of rule ``convert``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dsa110_contimg.raw.convert import ConvertOptions, convert_group

from .. import provenance
from ..db import Database
from .common import logged


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
    with logged(log, "convert", group, config) as logger:
        with Database.from_config(config) as db:
            db.register_raw_files(group, subbands)
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
