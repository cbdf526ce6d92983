"""Rolling-run overhead at survey scale: `contimg run -n` with 30 days of raw files.

    .venv/bin/python benchmarks/rolling.py [--days 30] [--window-days 2] [--full]

Writes a raw/ listing of empty files (benchmarks/parse_time.py's: one
observation every 309 s, ~280 a day, files written an hour ago), then times:

- baseline: plain `snakemake -n` over a raw/ listing of the window alone
  (the window's nights as the whole survey);
- rolling:  `contimg run -n` (run.rolling: window, settle check, held-back
  query) over all ``--days`` of accumulated files;
- full (--full, slow): plain `snakemake -n` over all ``--days``.

Prints the jobs planned, wall time and peak memory of each, and the ratio of
rolling to baseline: the rolling run's cost should not grow with the survey's
age (target: within 1.3x of the baseline).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parse_time import CADENCE_S, make_raw, timed_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _age(raw: Path, seconds: float = 3600) -> None:
    stamp = time.time() - seconds
    for entry in os.scandir(raw):
        os.utime(entry.path, (stamp, stamp))


def _timed(cmd: list[str], cwd: Path) -> dict:
    """Wall time, peak RSS (the process tree: contimg waits for its snakemake) and jobs planned."""
    return timed_run(cmd, cwd)


def _workdir(root: Path, days: float, window_days: int) -> Path:
    root.mkdir(parents=True)
    n = make_raw(root / "raw", days)
    _age(root / "raw")
    (root / "site.yaml").write_text(f"raw_dir: raw\nresults_dir: results\nrun: {{window_days: {window_days}}}\n")
    print(f"{root.name}: {n} groups over {days:g} day(s)", flush=True)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=30)
    p.add_argument("--window-days", type=int, default=2)
    p.add_argument("--full", action="store_true", help="also plain snakemake -n over every day (slow)")
    args = p.parse_args(argv)
    config = str(REPO / "config" / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        # The window of the rolling run is whole UTC nights ending at the newest group's night.
        base = _workdir(Path(tmp) / "window", args.window_days - CADENCE_S / 86400, args.window_days)
        survey = _workdir(Path(tmp) / "survey", args.days, args.window_days)
        snakemake = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-n", "--cores", "2",
                     "--configfile", config, "site.yaml"]
        rows = {"baseline": _timed(snakemake, base)}
        rows["rolling"] = _timed([str(BIN / "contimg"), "run", "-n", "--snakefile", str(REPO / "Snakefile"),
                                  "--config", config, "--config", "site.yaml"], survey)
        if args.full:
            rows["full"] = _timed(snakemake, survey)
    print(f"{'run':10} {'jobs':>7} {'wall s':>8} {'peak MB':>8}")
    for name, r in rows.items():
        print(f"{name:10} {r['jobs']:7d} {r['wall_s']:8.1f} {r['peak_mb']:8.0f}")
    print(f"rolling / baseline wall time: {rows['rolling']['wall_s'] / rows['baseline']['wall_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
