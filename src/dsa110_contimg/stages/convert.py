"""Stage of rule ``convert``: one group's 16 subband files -> one Measurement Set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..raw.convert import ConvertOptions, convert_group
from .common import stage_run


def convert(
    subbands: Sequence[str],
    ms: str,
    group: str,
    config: Mapping[str, Any],
    log: str | None = None,
) -> dict:
    """Rule ``convert``: one group's subband files -> ``ms`` + sidecar + database row.

    The group's raw files are registered first, so a group that fails to
    convert is known with its files.
    """
    opts = ConvertOptions.from_config(config)
    with stage_run("convert", config, {"group": group}, log) as run:
        from ..db import Database

        with Database.from_config(config) as db:
            db.register_raw_files(group, subbands)
        run.logger.info("%d subbands -> %s", len(subbands), ms)
        with run.output(ms) as tmp:
            qa = convert_group(subbands, tmp, opts, group)
        run.logger.info("wrote %s: %d rows, %d channels, %.1f%% flagged, %.1f s",
                        ms, qa["n_rows"], qa["n_channels"], 100 * qa["flagged_fraction"], run.elapsed_s)
        run.publish(ms, kind="ms", inputs=subbands, qa=qa)
    return qa
