"""Benchmark: convert one full-size DSA-110 group (96 antennas, 768 channels,
24 integrations) and compare with copying the same bytes with ``cp``.

    .venv/bin/python benchmarks/convert.py [--workdir DIR] [--keep]

Prints wall time and peak memory of the conversion (in a child process, so the
simulator's memory does not count), the time of ``cp`` of the 16 files, and
the ratio. Targets (issue 2): peak memory < 3 GB, time < 3x the copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

CHILD = """
import json, resource, sys, time
from dsa110_contimg.raw.convert import convert_group
files, ms = sys.argv[1:-1], sys.argv[-1]
t = time.perf_counter()
qa = convert_group(files, ms)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds_metadata": qa["seconds_metadata"], "seconds_data": qa["seconds_data"]}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None, help="where to simulate (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the simulated files and the MS")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-bench-"))
    raw = work / "raw"
    files = sorted(raw.glob("*.hdf5"))
    if len(files) != 16:
        from dsa110_contimg.sim.observation import SimOptions, simulate_span

        t = time.perf_counter()
        opts = SimOptions(start=datetime(2025, 6, 15, 13, 0, 0), n_obs=1, n_sources=5, calibrators=False)
        files = sorted(simulate_span(raw, opts, work / "truth"))
        print(f"simulated one full-size group in {time.perf_counter() - t:.1f} s")
    size = sum(f.stat().st_size for f in files)

    copy = work / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    t = time.perf_counter()
    subprocess.run(["cp", *map(str, files), str(copy)], check=True)
    subprocess.run(["sync"], check=True)
    cp_s = time.perf_counter() - t
    shutil.rmtree(copy)

    ms = work / "bench.ms"
    shutil.rmtree(ms, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, files), str(ms)],
                         check=True, capture_output=True, text=True)
    t = time.perf_counter()
    subprocess.run(["sync"], check=True)
    sync_s = time.perf_counter() - t
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["wall_s"] += sync_s  # like cp + sync: the bytes are on disk
    print(f"input: 16 subbands, {size / 1e9:.2f} GB")
    print(f"cp + sync of the 16 files:   {cp_s:6.1f} s")
    print(f"convert + sync (metadata {r['seconds_metadata']:.1f} s, data {r['seconds_data']:.1f} s, "
          f"sync {sync_s:.1f} s): "
          f"{r['wall_s']:6.1f} s, peak memory {r['peak_rss_mb'] / 1024:.2f} GB")
    print(f"ratio convert / cp: {r['wall_s'] / cp_s:.2f}  (target < 3)")
    print(f"peak memory: {r['peak_rss_mb'] / 1024:.2f} GB (target < 3 GB)")
    if not args.keep:
        shutil.rmtree(ms, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
