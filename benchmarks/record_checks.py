"""What the checks behind "the record never lies" cost at survey scale.

    .venv/bin/python benchmarks/record_checks.py [--days 30] [--rows 5000000] [--keep DIR]

- raw:  parse-time readability of raw files (one stat per file,
        ``grouping.check_readable``) over ``--days`` of raw listings (empty
        files, ~280 observations a day), against listing + grouping alone.
- db:   SQLite ``quick_check`` (run by ``contimg status``, ``db sync`` and
        snakemake's parse) and ``integrity_check`` (``contimg db check``) on a
        database of ``--rows`` photometry-like rows with two indexes, against
        one full scan of the table (``SELECT sum(...)``).

Prints seconds and the ratio to each baseline.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from dsa110_contimg.raw import grouping

CADENCE_S = 309.237645


def _timed(func, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def raw_listing(folder: Path, days: int) -> int:
    start = datetime(2025, 6, 1)
    n_obs = int(days * 86400 / CADENCE_S)
    rng = np.random.default_rng(1)
    for i in range(n_obs):
        t0 = start + timedelta(seconds=i * CADENCE_S)
        for sb in range(16):
            t = t0 + timedelta(seconds=int(rng.integers(0, 3)))
            (folder / f"{t:%Y-%m-%dT%H:%M:%S}_sb{sb:02d}.hdf5").touch()
    return n_obs * 16


def bench_raw(folder: Path, days: int) -> None:
    n = raw_listing(folder, days)
    group = lambda: grouping.group_files(grouping.raw_names(folder))  # noqa: E731
    base = _timed(group)
    checked = _timed(lambda: grouping.check_readable(group(), folder))
    print(f"raw: {days} days, {n} files: list+group {base:.2f} s, with readability check {checked:.2f} s "
          f"(check alone {checked - base:.2f} s, ratio {checked / base:.2f})")


def bench_db(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, product INTEGER, source TEXT, mjd REAL, flux REAL, err REAL)")
    rng = np.random.default_rng(2)
    chunk = 500_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        con.executemany("INSERT INTO m (product, source, mjd, flux, err) VALUES (?, ?, ?, ?, ?)", zip(
            (start + np.arange(n)) // 5000, (f"S{k}" for k in rng.integers(0, 5000, n)),
            60800 + rng.random(n) * 30, rng.random(n), rng.random(n) * 0.01, strict=True))
    con.execute("CREATE INDEX m_source ON m (source)")
    con.execute("CREATE INDEX m_product ON m (product)")
    con.commit()
    size = os.path.getsize(path) / 1e6

    def pragma(name: str) -> None:
        assert con.execute(f"PRAGMA {name}").fetchall() == [("ok",)]

    scan = _timed(lambda: con.execute("SELECT sum(flux) FROM m").fetchone(), 1)
    quick = _timed(lambda: pragma("quick_check"), 1)
    full = _timed(lambda: pragma("integrity_check"), 1)
    con.close()
    print(f"db: {rows} rows, {size:.0f} MB: full scan {scan:.2f} s, quick_check {quick:.2f} s "
          f"(x{quick / scan:.1f}), integrity_check {full:.2f} s (x{full / scan:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        (work / "raw").mkdir(parents=True, exist_ok=True)
        bench_raw(work / "raw", args.days)
        bench_db(work / "bench.sqlite", args.rows)


if __name__ == "__main__":
    main()
