"""Benchmark: the product database with a night's worth of products, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/db.py [--groups 280] [--rows 100000] [--backend sqlite|postgresql|both]
                                      [--pg-url URL] [--workdir DIR]

Writes one night of products the way the stages do (file + sidecar): for each
of ``--groups`` observations 16 raw files, an MS, a calibrated MS, an image
and a photometry table, ``--rows`` photometry rows in all (about 280
observations a night). Then, per back end, on an empty database:

- registers one photometry product of ``--rows`` rows (one bulk insert);
- registers the whole night, product by product, as the jobs would;
- ``db sync`` with nothing changed;
- queries: the night's summary, listing the images, one source's light curve,
  one image's provenance tree.

PostgreSQL is a throwaway server (tests/pg.py, Debian's binaries) unless
``--pg-url`` names one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the product writers of the tests, and pg.py

import db_products as dp  # noqa: E402
from pg import PostgresServer  # noqa: E402

from dsa110_contimg import provenance  # noqa: E402
from dsa110_contimg.db import Database  # noqa: E402

NIGHT = "2025-06-15"


def timed(what: str, work: Callable[[], Any], figures: dict[str, float]) -> Any:
    t = time.perf_counter()
    result = work()
    figures[what] = time.perf_counter() - t
    return result


def write_night(work: Path, n_groups: int, n_rows: int) -> tuple[list[dict[str, Path]], Path]:
    """The night's products, plus one photometry table holding all ``n_rows`` rows."""
    raw, results = work / "raw", work / "results"
    raw.mkdir(parents=True)
    results.mkdir()
    chains = []
    per_group = [n_rows // n_groups + (i < n_rows % n_groups) for i in range(n_groups)]
    for i, rows in enumerate(per_group):
        group = dp.group_at(5 + 5.15 * i, day=NIGHT)
        chain = dp.make_chain(raw, results, group, calgroup=dp.group_at(0.0, day=NIGHT))
        dp.make_photometry(results, group, chain["image"], n=rows, seed=i)
        chains.append(chain)
    big = dp.make_photometry(work / "single", "2025-06-14T23:00:00", chains[0]["image"], n=n_rows)
    return chains, big


def run_backend(url: str, chains: list[dict[str, Path]], big: Path, results: Path, raw: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    with Database(url) as db:
        timed("register one photometry product of all rows", lambda: db.register_product(big), figures)

        def register_night() -> None:
            seen = set()
            for chain in chains:
                for key in ("cal_ms", "caltable", "ms", "calibrated", "image", "photometry"):
                    if chain[key] not in seen:
                        seen.add(chain[key])
                        db.register_product(chain[key])

        timed("register the night, product by product", register_night, figures)
        report = timed("db sync, nothing changed", lambda: db.sync(results, raw), figures)
        assert not report.changed, str(report)
        summary = timed("night summary", lambda: db.night(NIGHT), figures)
        timed("list the night's images", lambda: db.list_products("image", since=NIGHT), figures)
        curve = timed("one source's light curve", lambda: db.measurements(source="NVSS J000007"), figures)
        timed("provenance of one photometry table", lambda: db.provenance(chains[-1]["photometry"]), figures)
        figures["_products"] = len(db.list_products())
        figures["_measurements"] = len(db.measurements())
        figures["_groups_seen"] = summary["totals"]["seen"]
        figures["_epochs"] = len(curve)
    return figures


def report(name: str, figures: dict[str, float], n_rows: int, n_products: int) -> None:
    print(f"\n{name}: {figures['_products']} products, {figures['_measurements']} measurements, "
          f"night summary of {figures['_groups_seen']} groups, light curve of {figures['_epochs']} epochs")  # fmt: skip
    for what, seconds in figures.items():
        if what.startswith("_"):
            continue
        line = f"  {what:<48} {seconds:8.3f} s"
        if what.startswith("register one"):
            line += f"   ({n_rows / seconds:,.0f} rows/s)"
        elif what.startswith("register the night"):
            line += f"   ({n_products / seconds:,.1f} products/s, {1000 * seconds / n_products:.1f} ms each)"
        print(line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=280, help="observations in the night (default: %(default)s)")
    p.add_argument("--rows", type=int, default=100_000, help="photometry rows in all (default: %(default)s)")
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--pg-url", help="an existing PostgreSQL database (default: a throwaway server)")
    p.add_argument("--workdir", help="where to write the products (default: a temporary folder, removed)")
    args = p.parse_args()

    versions = provenance.software_versions()
    provenance.software_versions = lambda: versions  # one metadata scan, not one per sidecar
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-dbbench-"))
    t = time.perf_counter()
    chains, big = write_night(work, args.groups, args.rows)
    n_products = 4 * len(chains) + 2  # per group ms, calibrated, image, photometry; one caltable
    print(f"wrote {args.groups} groups ({n_products} products, {args.rows} photometry rows, and one table of as many) "
          f"in {time.perf_counter() - t:.1f} s")  # fmt: skip

    server = None
    try:
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{work}/products.sqlite"
            figures = run_backend(url, chains, big, work / "results", work / "raw")
            size = (work / "products.sqlite").stat().st_size / 1e6
            report(f"SQLite ({size:.0f} MB)", figures, args.rows, n_products)
        if args.backend in ("postgresql", "both"):
            url = args.pg_url
            if url is None:
                server = PostgresServer().start()
                url = server.create_database()
            figures = run_backend(url, chains, big, work / "results", work / "raw")
            report("PostgreSQL" + ("" if args.pg_url else " (throwaway server, fsync off)"),
                   figures, args.rows, n_products)  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        if not args.workdir:
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
