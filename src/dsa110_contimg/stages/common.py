"""The one wrapper every rule's stage runs in.

``with stage_run(rule, config, wildcards, log) as run:`` gives a stage, in one
place and always in the same order:

1. logging to the rule's log file (and stderr), start and end lines; CASA's
   log, if the job uses CASA, beside it (``<log>.casa.log``);
2. a job record in the product database: running, then success, or failed
   with the reason (the exception, re-raised);
3. atomic outputs: ``run.output(path)`` yields a temporary sibling that is
   renamed into place only when the block succeeds;
4. a watch on the run (:func:`dsa110_contimg.runlock.watch_run`): when the
   Snakemake that started the job is gone, the job, with its imager, stops
   within seconds, recorded as a failed stale attempt;
5. sidecars: ``run.publish(product, kind=..., qa=...)`` writes the JSON
   sidecar after the product is complete and queues the product ...
6. ... for registration in the database, all at once when the stage's work
   has succeeded, before the job is recorded as a success.

A stage is then a short function: build typed options from the validated
config, call pure science functions, write through ``run``. Nothing here
knows any science.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from .. import casa_env, provenance, runlock

LOGGER = logging.getLogger("dsa110_contimg")


def describe(wildcards: Mapping[str, Any]) -> str:
    """A job's name in log lines: its wildcard values (``all`` for a fan-in)."""
    return "/".join(str(v) for v in wildcards.values()) or "all"


class StageRun:
    """What a stage writes through: atomic outputs, sidecars, products to register."""

    def __init__(self, rule: str, config: Mapping[str, Any], wildcards: Mapping[str, Any], logger: logging.Logger,
                 left_out: Mapping[str, str] | None = None):
        self.rule = rule
        self.left_out = dict(sorted((left_out or {}).items()))
        self.config = config
        self.wildcards = dict(wildcards)
        self.logger = logger
        self.started = time.perf_counter()
        self.published: list[str] = []

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @contextmanager
    def output(self, path: str | os.PathLike) -> Iterator[Path]:
        """A temporary sibling of ``path`` to write; renamed into place on success."""
        with provenance.atomic_output(path) as tmp:
            yield tmp

    def publish(
        self,
        product: str | os.PathLike,
        *,
        kind: str,
        inputs: Sequence[str | os.PathLike],
        qa: Mapping[str, Any] | None = None,
        timings: Mapping[str, float] | None = None,
        status: str = "ok",
        group: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``product``'s sidecar (the product is complete) and queue it for registration."""
        if group is None and kind != "calflux":
            group = self.wildcards.get("group") or self.wildcards.get("calgroup")
        extra = dict(extra or {})
        if self.left_out:
            extra["left_out"] = [{"group": g, "reason": why} for g, why in self.left_out.items()]
        provenance.write_sidecar(
            product, kind=kind, group=group, inputs=[os.fspath(p) for p in inputs], config=dict(self.config),
            qa=dict(qa or {}), timings=dict(timings or {"wall_s": self.elapsed_s}), status=status,
            extra=extra or None,
        )
        self.published.append(os.fspath(product))


def _orphaned(rule: str, what: str, config: Mapping[str, Any], wildcards: Mapping[str, Any],
              run_id: int | None, exc: runlock.StaleAttemptError) -> None:
    """What a job does when :func:`runlock.watch_run` finds its run gone: say so, record it."""
    LOGGER.error("%s %s failed: %s", rule, what, exc)
    if run_id is not None:
        from ..db.jobs import record_failure

        record_failure(config, rule, wildcards, run_id, exc)


@contextmanager
def stage_run(
    rule: str,
    config: Mapping[str, Any],
    wildcards: Mapping[str, Any] | None = None,
    log: str | os.PathLike | None = None,
    record: bool = True,
    left_out: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """Run one job of ``rule`` (see the module docstring).

    ``record=False`` neither records the job nor registers its products (a
    stage run by hand or by a benchmark, without a database). ``left_out``
    (fan-ins) maps the groups the workflow went without (held back by a
    failure, incomplete) to why: logged, and listed in every sidecar the run
    publishes (``left_out``), so one bad observation withholds nothing and
    hides nothing.
    """
    wildcards = dict(wildcards or {})
    what = describe(wildcards)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    casa_log = os.environ.get(casa_env.JOB_LOG_ENV)
    if log:
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        handlers.append(logging.FileHandler(log, mode="w"))
        own = Path(log).with_suffix(".casa.log").absolute()
        own.unlink(missing_ok=True)  # an earlier attempt's
        os.environ[casa_env.JOB_LOG_ENV] = str(own)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        LOGGER.addHandler(h)
    logger = LOGGER
    logger.setLevel(logging.INFO)
    logger.info("%s %s: start", rule, what)
    run = StageRun(rule, config, wildcards, logger, left_out)
    for group, why in run.left_out.items():
        logger.warning("left out %s: %s", group or "everything", why)
    watch = None
    try:
        with ExitStack() as stack:
            run_id = None
            if record:
                from ..db import job_run

                run_id = stack.enter_context(job_run(config, rule, wildcards, log=log))
            watch = runlock.watch_run(partial(_orphaned, rule, what, config, wildcards, run_id))
            yield run
            if record and run.published:
                from ..db import Database

                with Database.from_config(config) as db:
                    for product in run.published:
                        db.register_product(product)
                logger.info("registered %s in the product database", ", ".join(run.published))
    except Exception as exc:
        logger.error("%s %s failed: %s", rule, what, exc)
        raise
    else:
        logger.info("%s %s: done in %.1f s", rule, what, run.elapsed_s)
    finally:
        if watch is not None:
            watch.set()
        if casa_log is None:
            os.environ.pop(casa_env.JOB_LOG_ENV, None)
        else:
            os.environ[casa_env.JOB_LOG_ENV] = casa_log
        for h in handlers:
            logger.removeHandler(h)
            h.close()
