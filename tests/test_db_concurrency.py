"""Many jobs registering at once, and a job killed in the middle of a registration.

On SQLite (WAL, busy timeout, retries) and on a real PostgreSQL server. The
workers are forked, not spawned: 32 interpreters importing SQLAlchemy and
numpy would cost more than the test.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import traceback
from pathlib import Path

import sqlalchemy as sa
from db_products import (
    CALGROUP,
    group_at,
    make_calibrated,
    make_caltable,
    make_image,
    make_ms,
    make_photometry,
    make_raw,
)

from dsa110_contimg.db import Database, kinds, record_job

N_WORKERS = 32
N_ROWS = 200  # photometry rows per worker

ctx = multiprocessing.get_context("fork")


def worker(config: dict, products: list[str], group: str, barrier, errors) -> None:
    """One job: wait for the others, then register its products and its job run."""
    try:
        barrier.wait(timeout=60)
        with Database.from_config(config) as db:  # the first ones race to create the schema
            for product in products:
                db.register_product(product)
        record_job(config, "photometry", {"group": group}, "success")
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_32_parallel_jobs_register_every_row_exactly_once(db_url, dirs):
    raw, results = dirs
    cal_ms = make_ms(results, CALGROUP, make_raw(raw, CALGROUP, subbands=range(2)))
    caltable = make_caltable(results, CALGROUP, cal_ms)
    jobs = []
    for i in range(N_WORKERS):
        group = group_at(8 * 60 + 5.15 * i)
        ms = make_ms(results, group, make_raw(raw, group, subbands=range(2)))
        calibrated = make_calibrated(results, group, ms, caltable)
        image = make_image(results, group, calibrated)
        photometry = make_photometry(results, group, image, n=N_ROWS, seed=i)
        # every job also registers the shared calibration: same rows, raced for
        products = [cal_ms, caltable, ms, calibrated, image, photometry]
        jobs.append((group, [str(p) for p in products]))
    config = {"results_dir": str(results), "database": {"url": db_url}}

    barrier, errors = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(config, p, g, barrier, errors)) for g, p in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [p.exitcode for p in procs] == [0] * N_WORKERS, "\n".join(failures)

    with Database(db_url) as db:
        rows = db.list_products()
        assert len(rows) == 2 + 4 * N_WORKERS
        assert len({r["path"] for r in rows}) == len(rows)
        assert len(db.measurements()) == N_WORKERS * N_ROWS
        assert len(db.list_raw_files()) == 2 * (N_WORKERS + 1)
        assert len(db.group_summary()) == N_WORKERS + 1
        assert len(db.job_runs()) == N_WORKERS
        for _group, products in jobs[:3]:
            tree = db.provenance(products[-1])
            assert [n.kind for n in tree.walk()][:4] == ["photometry", "image", "calibrated", "ms"]
        assert not db.sync(results, raw).changed


def stall_inside(url: str, product: str, inside) -> None:
    """Register ``product``, but stop for good once its rows are written, before the commit."""
    bulk_insert = kinds.bulk_insert

    def insert_then_stall(*args, **kwargs):
        bulk_insert(*args, **kwargs)
        inside.set()
        signal.pause()  # until killed

    kinds.bulk_insert = insert_then_stall  # in this forked child only
    with Database(url) as db:
        db.register_product(product)


def test_job_killed_mid_registration_leaves_nothing_half_done(db_url, dirs):
    raw, results = dirs
    group = group_at(8 * 60)
    ms = make_ms(results, group, make_raw(raw, group))
    cal_ms = make_ms(results, CALGROUP, make_raw(raw, CALGROUP))
    caltable = make_caltable(results, CALGROUP, cal_ms)
    calibrated = make_calibrated(results, group, ms, caltable)
    image = make_image(results, group, calibrated)
    photometry = make_photometry(results, group, image, n=5000)
    with Database(db_url) as db:
        for product in (cal_ms, caltable, ms, calibrated, image):
            db.register_product(product)
        before = db.list_products()

    inside = ctx.Event()
    proc = ctx.Process(target=stall_inside, args=(db_url, str(photometry), inside))
    proc.start()
    assert inside.wait(timeout=60), "the registration never reached the measurements"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL

    if db_url.startswith("sqlite"):
        path = Path(sa.make_url(db_url).database)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with Database(db_url, busy_timeout_s=5) as db:  # the killed job's lock is gone
        assert db.list_products() == before  # no photometry row, nothing changed
        assert db.measurements() == []
        assert db.derived(image).children == []  # no link from a half-made product
        assert db.register_product(photometry) == "added"
        assert len(db.measurements()) == 5000
        assert not db.sync(results, raw).changed
