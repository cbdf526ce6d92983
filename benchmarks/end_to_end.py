"""Benchmark: can one 2-core node keep up with the telescope? The whole workflow on full-size data.

    python benchmarks/end_to_end.py [--workdir DIR] [--n-obs 3] [--cores 2] [--set imaging.imager=tclean ...]
                                    [--n-ants 96 --n-chan 48 --n-int 24] [--report-only]

Simulates ``--n-obs`` consecutive full-size observations (96 antennas, 768
channels, 24 integrations) at declination +30.5 with ``contimg simulate``, the
first centred on the transit of 3C286 (the calibrator), writes a config
(catalogue: the simulator's truth; ``--set key.sub=value`` adds to it), runs
the real workflow (``snakemake --cores N``) and prints:

- per rule: jobs, wall, CPU and peak memory (mean over jobs, from the
  ``benchmark:`` TSVs; CPU is the steadier figure on a shared machine) and the
  MB each job wrote;
- per target observation: the sum of the per-observation rules (convert,
  apply_calibration, image, photometry) plus solve_calibration amortised over
  the observations one transit serves (2 x ``calibration.max_separation_h``
  of 309.2 s observations), wall and CPU, and the ratios to the 309.2 s
  cadence (wall / 309.2; CPU / (cores x 309.2));
- bytes kept per observation (MS, calibrated MS, images, photometry);
- accuracy: for every simulated source above 20 sigma in a target image,
  forced-photometry flux / true flux at the image frequency (S_1.4 (nu/1.4
  GHz)^alpha), median and spread, and each image's rms / thermal and grade.

The load of the machine is printed with the figures. ``--report-only``
re-reads an earlier run in ``--workdir``. The workdir is kept (it is large:
~2.7 GB of raw data per observation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CADENCE_S = 24 * 12.884901888
PER_OBS_RULES = ("convert", "apply_calibration", "image", "photometry")
# 3C286 transits 2025-06-16T03:46:46 at the pointing declination used here.
START = "2025-06-16T03:44:10"
DEC = 30.5


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _set(config: dict, assignment: str) -> None:
    import yaml

    key, value = assignment.split("=", 1)
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)


def prepare(work: Path, args) -> Path:
    import yaml

    raw = work / "raw"
    if not (raw.exists() and any(raw.iterdir())):
        cmd = [_bin("contimg"), "simulate", "--out", str(raw), "--start", START, "--dec", str(DEC),
               "--n-obs", str(args.n_obs), "--n-ants", str(args.n_ants), "--n-chan", str(args.n_chan),
               "--n-int", str(args.n_int), "--seed", "1"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"simulated {args.n_obs} observations in {time.perf_counter() - t:.0f} s")
    config = {"raw_dir": str(raw), "results_dir": str(work / "results"), "pointing": {"dec_deg": DEC},
              "catalogue": {"path": str(work / "truth" / "sky.csv")}}
    for a in args.set:
        _set(config, a)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(work: Path, config: Path, cores: int) -> tuple[float, float]:
    """Run the workflow; (wall, CPU) seconds, the CPU of every process it started (getrusage of children)."""
    import resource

    env = os.environ | {"PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [_bin("snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", str(cores), "--configfile", str(config), "--keep-going", "--rerun-incomplete"]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        print(f"WARNING: snakemake exit {proc.returncode}; see {work / 'snakemake.log'}")
    (work / "run.json").write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "exit": proc.returncode,
                                               "load_after": os.getloadavg()}))
    return wall, cpu


def rule_table(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").glob("*/**/*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0]
        b = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append({"rule": rule, "job": tsv.stem, "wall_s": float(b["s"]), "cpu_s": float(b["cpu_time"]),
                     "peak_mb": float(b["max_rss"]), "written_mb": float(b["io_out"]),
                     "load": float(b["mean_load"])})
    return pd.DataFrame(rows)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def accuracy(results: Path, truth_dir: Path, targets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    from astropy.io import fits

    sky = pd.read_csv(truth_dir / "sky.csv").set_index("name")
    rows, images = [], []
    for g in targets:
        sidecar = results / "images" / f"{g}.image.fits.json"
        if not sidecar.exists():
            continue
        qa = json.loads(sidecar.read_text())["qa"]
        freq = fits.getheader(results / "images" / f"{g}.image.fits").get("FREQ", 1.4e9)
        images.append({"group": g, "rms_mjy": qa["rms_jy"] * 1e3, "rms_over_thermal": qa["rms_over_thermal"],
                       "grade": qa["grade"], "imsize": qa["imsize"], "cell_arcsec": qa["cell_arcsec"],
                       "n_sources_5sigma": qa["n_sources_5sigma"]})
        phot = results / "photometry" / f"{g}.parquet"
        if not phot.exists():
            continue
        p = pd.read_parquet(phot)
        p = p[(p["flags"] == 0) & (p["snr"] > 20) & p["source"].isin(sky.index)]
        s = sky.loc[p.source]
        true = s.flux_jy.to_numpy() * (freq / 1.4e9) ** s.spectral_index.to_numpy()
        for (_, r), t in zip(p.iterrows(), true, strict=True):
            rows.append({"group": g, "source": r.source, "pb": r.pb, "snr": r.snr, "ratio": r.flux_jy / t})
    return pd.DataFrame(rows), pd.DataFrame(images)


def raw_bytes(raw_dir: Path, group: str, tolerance_s: float) -> int:
    """Bytes of the raw files of ``group`` (names within tolerance_s after the group id)."""
    from dsa110_contimg import naming

    start = naming.parse_timestamp(group)
    total = 0
    for f in raw_dir.iterdir():
        try:
            t, _ = naming.parse_raw_filename(f.name)
        except naming.RawNameError:
            continue
        if 0 <= (t - start).total_seconds() <= tolerance_s:
            total += f.stat().st_size
    return total


def report(work: Path, config_path: Path, cores: int) -> None:
    import yaml

    from dsa110_contimg.config import validate_config

    config = validate_config(yaml.safe_load(config_path.read_text()))
    results = Path(config["results_dir"])
    table = rule_table(results)
    if table.empty:
        print("no benchmark files: nothing ran")
        return
    per_rule = table.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean"),
                                         peak_mb=("peak_mb", "max"), written_mb=("written_mb", "mean"),
                                         load=("load", "mean"))
    print("\nper rule (mean per job; peak memory the largest):")
    print(per_rule.round(1).to_string())
    groups = sorted(table[table.rule == "convert"].job)
    calgroups = sorted(table[table.rule == "solve_calibration"].job)
    imaged = set(table[table.rule == "image"].job)
    targets = [g for g in groups if g not in calgroups and g in imaged]
    served = 2 * config["calibration"]["max_separation_h"] * 3600 / CADENCE_S
    per_obs = table[table.rule.isin(PER_OBS_RULES) & table.job.isin(targets)].groupby("job")[["wall_s", "cpu_s"]].sum()
    solve = table[table.rule == "solve_calibration"][["wall_s", "cpu_s"]].mean()
    if not per_obs.empty:
        w = per_obs.wall_s.mean() + (solve.wall_s / served if len(calgroups) else 0)
        c = per_obs.cpu_s.mean() + (solve.cpu_s / served if len(calgroups) else 0)
        print(f"\nper target observation ({len(per_obs)} imaged targets; solve amortised over {served:.0f} "
              "observations; CPU from the benchmark files, which sample the job's processes: a lower bound):"
              f"\n  wall {w:.0f} s ({w / CADENCE_S:.2f} x the {CADENCE_S:.1f} s cadence), "
              f"CPU {c:.0f} s ({c / (cores * CADENCE_S):.2f} of {cores} cores for {CADENCE_S:.1f} s)")
        for rule in PER_OBS_RULES:
            sub = table[(table.rule == rule) & table.job.isin(targets)]
            if len(sub):
                print(f"  {rule:18s} wall {sub.wall_s.mean():6.1f} s  CPU {sub.cpu_s.mean():6.1f} s  "
                      f"peak {sub.peak_mb.max() / 1024:.2f} GB  written {sub.written_mb.mean() / 1024:.2f} GB")
    kept = {
        "ms": np.mean([_size(results / "ms" / f"{g}.ms") for g in groups]),
        "calibrated": np.mean([_size(results / "calibrated" / f"{g}.ms") for g in groups]),
        "images": np.mean([sum(_size(f) for f in (results / "images").glob(f"{g}*")) for g in groups]),
        "photometry": np.mean([sum(_size(f) for f in (results / "photometry").glob(f"{g}*")) for g in groups]),
    }
    print("bytes kept per observation: " + ", ".join(f"{k} {v / 1e9:.3f} GB" for k, v in kept.items()))
    raw = np.mean([raw_bytes(Path(config["raw_dir"]), g, config["grouping"]["tolerance_s"]) for g in groups])
    print(f"  raw per observation {raw / 1e9:.2f} GB")
    fluxes, images = accuracy(results, work / "truth", targets)
    if not images.empty:
        print("\nimages of the targets:\n" + images.round(3).to_string(index=False))
    if not fluxes.empty:
        r = fluxes.ratio
        print(f"\nflux / truth, {len(r)} measurements above 20 sigma: median {r.median():.4f}, "
              f"mean {r.mean():.4f}, std {r.std():.4f}, min {r.min():.4f}, max {r.max():.4f}")
        print(fluxes.round(3).to_string(index=False))
    run_file = work / "run.json"
    if run_file.exists():
        r = json.loads(run_file.read_text())
        print(f"\nworkflow: wall {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s (every process, all rules incl. solve, "
              f"mosaics, report) for {len(groups)} observations with --cores {cores}: CPU {r['cpu_s'] / len(groups):.0f} "
              f"s per observation; load after the run {tuple(round(x, 1) for x in r['load_after'])}")
    print(f"machine load (1/5/15 min) now: {os.getloadavg()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="/tmp/contimg-end-to-end")
    p.add_argument("--n-obs", type=int, default=3)
    p.add_argument("--n-ants", type=int, default=96)
    p.add_argument("--n-chan", type=int, default=48)
    p.add_argument("--n-int", type=int, default=24)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="config key=value (dotted key), e.g. imaging.imager=tclean")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "src"))
    if args.report_only:
        report(work, work / "config.yaml", args.cores)
        return 0
    config = prepare(work, args)
    run(work, config, args.cores)
    report(work, config, args.cores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
