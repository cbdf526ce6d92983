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
- accuracy, per image (the calibrator transit's and the targets'): for every
  simulated source above 20 sigma in forced photometry, flux / true flux at
  the image frequency (S_1.4 (nu/1.4 GHz)^alpha; Perley-Butler 2017 for the
  standards): median, spread, worst and the number outside 2%; the pulls
  (flux - truth) / error; the offset of a Gaussian of the restoring beam's
  shape fitted in the image from the true position, in beams (median,
  worst, the number over 0.1); rms / thermal, grade and the number of
  new-source candidates; then every source outside 2% or 0.1 beam.

The load of the machine is printed with the figures. ``--report-only``
re-reads an earlier run in ``--workdir``, also one that failed part-way
(it reports the products that exist). The workdir is kept (it is large:
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


def true_flux(sky: pd.DataFrame, freq_hz: float) -> pd.Series:
    """Each truth source's flux at ``freq_hz``: a power law, Perley-Butler 2017 for the flux standards
    (the simulator's own spectra, :func:`dsa110_contimg.calibration.standards.spectra`)."""
    from dsa110_contimg.calibration import standards

    std = [n if k == "calibrator" and standards.is_standard(n) else "" for n, k in zip(sky.index, sky["kind"],
                                                                                         strict=True)]
    table = sky.reset_index().assign(flux_standard=std)
    return pd.Series(standards.spectra(table, np.array([freq_hz]))[:, 0], index=sky.index)


def _fit_position(image: np.ndarray, x: float, y: float, beam_pix: tuple[float, float, float], half: int = 6):
    """Peak position (x, y pixels) of a point source near (x, y): a Gaussian of the restoring beam's
    shape (sigma_major, sigma_minor pixels, PA rad from +y towards -x) with free amplitude, centre
    and background, fitted to a (2 half + 1)^2 cutout; None when the cutout leaves the image or the fit fails."""
    from scipy.optimize import curve_fit

    ix, iy = int(round(x)), int(round(y))
    if not (half <= ix < image.shape[1] - half and half <= iy < image.shape[0] - half):
        return None
    cut = np.asarray(image[iy - half:iy + half + 1, ix - half:ix + half + 1], float)
    if not np.all(np.isfinite(cut)):
        return None
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    smaj, smin, pa = beam_pix
    c, s = np.cos(pa), np.sin(pa)

    def model(_, amp, x0, y0, bg):
        dx, dy = xx - x0, yy - y0
        along = -dx * s + dy * c  # along the major axis (PA from north through east; east is -x)
        across = dx * c + dy * s
        return (amp * np.exp(-0.5 * ((along / smaj) ** 2 + (across / smin) ** 2)) + bg).ravel()

    j, i = np.unravel_index(np.argmax(cut), cut.shape)
    try:
        p, _ = curve_fit(model, None, cut.ravel(), p0=[cut.max(), i - half, j - half, 0.0])
    except (RuntimeError, ValueError):
        return None
    if abs(p[1]) > half or abs(p[2]) > half:
        return None
    return ix + p[1], iy + p[2]


def accuracy(results: Path, truth_dir: Path, groups: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per imaged observation (``groups``: group -> role) the image QA and, for every truth source above
    20 sigma in its forced photometry, flux / truth, pull and the fitted position's offset from truth.

    Returns (per source, per image); reads whatever products exist, so a partly failed run reports
    what it made.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    from dsa110_contimg.photometry.forced import Flag

    sky = pd.read_csv(truth_dir / "sky.csv").set_index("name")
    rows, images = [], []
    for g, role in groups.items():
        path = results / "images" / f"{g}.image.fits"
        sidecar = Path(f"{path}.json")
        if not (path.exists() and sidecar.exists()):
            continue
        qa = json.loads(sidecar.read_text())["qa"]
        beam_arcsec = float(np.sqrt(qa["beam_major_arcsec"] * qa["beam_minor_arcsec"]))
        new = results / "photometry" / f"{g}.new_sources.csv"
        info = {"group": g, "role": role, "rms_mjy": qa["rms_jy"] * 1e3, "rms_over_thermal": qa["rms_over_thermal"],
                "grade": qa["grade"], "beam_arcsec": beam_arcsec,
                "new_candidates": len(pd.read_csv(new)) if new.exists() else np.nan}
        images.append(info)
        phot = results / "photometry" / f"{g}.parquet"
        if not phot.exists():
            continue
        p = pd.read_parquet(phot)
        # The image's grade flags every measurement on it; judge the measurements by their own flags.
        own = p["flags"].astype(int) & ~int(Flag.MARGINAL_IMAGE | Flag.BAD_IMAGE)
        p = p[(own == 0) & (p["snr"] > 20) & p["source"].isin(sky.index)]
        true = true_flux(sky, float(qa["freq_hz"])).loc[p.source].to_numpy()
        with fits.open(path, memmap=True) as hdul:
            header = hdul[0].header
            wcs = WCS(header).celestial
            data = hdul[0].data
            image = data.reshape(data.shape[-2:])
            cell = abs(float(header["CDELT2"])) * 3600
            fwhm_to_sigma = 1 / np.sqrt(8 * np.log(2))
            beam_pix = (float(header["BMAJ"]) * 3600 / cell * fwhm_to_sigma,
                        float(header["BMIN"]) * 3600 / cell * fwhm_to_sigma, np.radians(float(header["BPA"])))
            xs, ys = wcs.world_to_pixel_values(sky.loc[p.source, "ra_deg"].to_numpy(float),
                                               sky.loc[p.source, "dec_deg"].to_numpy(float))
            for (_, r), t, x, y in zip(p.iterrows(), true, xs, ys, strict=True):
                fit = _fit_position(image, x, y, beam_pix)
                offset = np.hypot(fit[0] - x, fit[1] - y) * cell if fit else np.nan
                rows.append({"group": g, "source": r.source, "pb": r.pb, "snr": r.snr, "ratio": r.flux_jy / t,
                             "pull": (r.flux_jy - t) / r.flux_err_jy, "offset_arcsec": offset,
                             "offset_beam": offset / beam_arcsec})
    return pd.DataFrame(rows), pd.DataFrame(images)


def accuracy_summary(fluxes: pd.DataFrame, images: pd.DataFrame, tolerance: float = 0.02,
                     max_offset_beam: float = 0.1) -> pd.DataFrame:
    """One row per image: the acceptance figures (sources > 20 sigma within ``tolerance`` of truth and
    ``max_offset_beam`` of their true position; rms / thermal; new-source candidates)."""
    out = []
    for info in images.to_dict("records"):
        f = fluxes[fluxes.group == info["group"]] if not fluxes.empty else fluxes
        row = {k: info[k] for k in ("group", "role", "rms_over_thermal", "grade", "new_candidates")}
        if len(f):
            dev = f.ratio - 1
            row.update(n_20sigma=len(f), ratio_median=f.ratio.median(), ratio_std=f.ratio.std(),
                       ratio_worst=f.ratio.iloc[int(np.argmax(np.abs(dev)))],
                       n_outside_2pct=int((np.abs(dev) > tolerance).sum()), pull_median=f.pull.median(),
                       pull_std=f.pull.std(), offset_median_beam=f.offset_beam.median(),
                       offset_worst_beam=f.offset_beam.max(),
                       n_offset_over=int((f.offset_beam > max_offset_beam).sum()),
                       n_position_fit_failed=int(f.offset_beam.isna().sum()))
        out.append(row)
    return pd.DataFrame(out)


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


def _groups(results: Path, table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(every observation, the calibrator transits): from the products on disk and the benchmark files,
    so a run that failed part-way still lists what it made."""
    found = {p.name.removesuffix(".ms") for p in (results / "ms").glob("*.ms")}
    found |= {p.name.removesuffix(".image.fits") for p in (results / "images").glob("*.image.fits")}
    calgroups = {p.name for p in (results / "caltables").glob("*") if p.is_dir()}
    if not table.empty:
        found |= set(table[table.rule == "convert"].job)
        calgroups |= set(table[table.rule == "solve_calibration"].job)
    return sorted(found), sorted(calgroups)


def report(work: Path, config_path: Path, cores: int) -> None:
    import yaml

    from dsa110_contimg.config import validate_config

    if not config_path.exists():
        print(f"{config_path}: no config: nothing to report")
        return
    config = validate_config(yaml.safe_load(config_path.read_text()))
    results = Path(config["results_dir"])
    table = rule_table(results) if (results / "benchmarks").exists() else pd.DataFrame()
    groups, calgroups = _groups(results, table)
    targets = [g for g in groups if g not in calgroups and (results / "images" / f"{g}.image.fits").exists()]
    if table.empty:
        print("no benchmark files: no timings (reporting the products that exist)")
    else:
        _timings(table, config, cores, targets, calgroups)
    if groups:
        _kept(results, config, groups)
    roles = {g: "calibrator" if g in calgroups else "target" for g in groups}
    _check_truth(work / "truth")
    fluxes, images = accuracy(results, work / "truth", roles)
    if not images.empty:
        print("\nimages:\n" + images.round(3).to_string(index=False))
        summary = accuracy_summary(fluxes, images)
        print("\naccuracy per image (sources above 20 sigma in forced photometry, no flag but the image's grade; "
              "flux / truth at the "
              "image frequency; pull = (flux - truth) / error; offset of a beam-shaped Gaussian fit from the true "
              "position, in restoring beams (sqrt(bmaj bmin)); new = new-source candidates):")
        print(summary.round(4).to_string(index=False))
        if not fluxes.empty:
            bad = fluxes[((fluxes.ratio - 1).abs() > 0.02) | (fluxes.offset_beam > 0.1) | fluxes.offset_beam.isna()]
            if len(bad):
                print(f"\nsources outside 2% or 0.1 beam ({len(bad)}):\n" + bad.round(4).to_string(index=False))
        recovery = hidden_source_recovery(results, config, targets)
        if not recovery.empty:
            print("\nnew sources: each target image searched again with one catalogue source hidden (real signal "
                  "the vetting does not know); found = that source is a candidate, others = any other candidate:\n"
                  + recovery.round(3).to_string(index=False))
    else:
        print("no image sidecars: no accuracy figures")
    run_file = work / "run.json"
    if run_file.exists():
        r = json.loads(run_file.read_text())
        n = max(1, len(groups))
        print(f"\nworkflow: wall {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s (every process, all rules incl. solve, "
              f"mosaics, report) for {len(groups)} observations with --cores {cores}: CPU {r['cpu_s'] / n:.0f} "
              f"s per observation; load after the run {tuple(round(x, 1) for x in r['load_after'])}; "
              f"snakemake exit {r.get('exit')}")
    print(f"machine load (1/5/15 min) now: {os.getloadavg()}")


def hidden_source_recovery(results: Path, config: dict, targets: list[str],
                           n_hidden: int = 6) -> pd.DataFrame:
    """Per target image, ``n_hidden`` catalogue sources (those measured unflagged above 20 sigma nearest the
    brightest, where the sidelobe vetting is hardest) each hidden from the catalogue in turn: is it found as a new source, and
    is anything else?"""
    from dsa110_contimg.photometry import catalogue as catmod
    from dsa110_contimg.photometry import forced as ph

    cat = catmod.load_catalogue(catmod.CatalogueOptions.from_config(config))
    opts = ph.PhotometryOptions.from_config(config)
    bright = cat.loc[cat.flux_jy.idxmax()]
    rows = []
    for g in targets:
        img = results / "images" / g
        side = results / "images" / f"{g}.image.fits.json"
        phot = results / "photometry" / f"{g}.parquet"
        if not (side.exists() and phot.exists()):
            continue
        envelope = json.loads(side.read_text())["qa"].get("psf_envelope")
        images = ph.load_images(f"{img}.pbcor.fits", f"{img}.pb.fits", f"{img}.residual.fits")
        meas = pd.read_parquet(phot)
        own = meas["flags"].astype(int) & ~int(ph.Flag.MARGINAL_IMAGE | ph.Flag.BAD_IMAGE)  # as accuracy()
        meas = meas[(meas.snr >= 20) & (own == 0) & (meas.source != bright["name"])].copy()
        meas["d"] = catmod.separation_deg(meas.ra_deg, meas.dec_deg, bright.ra_deg, bright.dec_deg)
        for src in meas.nsmallest(n_hidden, "d").itertuples():
            new, _ = ph.find_new_sources(images, cat[cat.name != src.source], 0.0, opts, None, envelope)
            sep = catmod.separation_deg(new.ra_deg, new.dec_deg, src.ra_deg, src.dec_deg) * 3600
            rows.append({"group": g, "hidden": src.source, "from_brightest_arcmin": src.d * 60,
                         "snr": src.snr, "found": bool((sep < 10).any()), "others": int((sep >= 10).sum())})
    return pd.DataFrame(rows)


def _check_truth(truth_dir: Path) -> None:
    """Warn when the truth's flux standards are not at their Perley-Butler 2017 flux (data simulated by an
    older simulator): the pipeline sets its flux scale from Perley-Butler, so every ratio moves by as much."""
    from dsa110_contimg.calibration import standards

    sky = pd.read_csv(truth_dir / "sky.csv")
    for row in sky[sky["kind"] == "calibrator"].itertuples():
        if standards.is_standard(row.name):
            pb = float(standards.flux_density(row.name, 1.4e9))
            if abs(row.flux_jy / pb - 1) > 0.005:
                print(f"WARNING: {truth_dir / 'sky.csv'}: flux standard {row.name} is {row.flux_jy:.3f} Jy at 1.4 GHz, "
                      f"Perley-Butler 2017 gives {pb:.3f}: the pipeline's flux scale is Perley-Butler's, so every "
                      f"flux / truth below is {pb / row.flux_jy:.4f} x too high (data from an older simulator)")


def _timings(table: pd.DataFrame, config: dict, cores: int, targets: list[str], calgroups: list[str]) -> None:
    per_rule = table.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean"),
                                         peak_mb=("peak_mb", "max"), written_mb=("written_mb", "mean"),
                                         load=("load", "mean"))
    print("\nper rule (mean per job; peak memory the largest):")
    print(per_rule.round(1).to_string())
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


def _kept(results: Path, config: dict, groups: list[str]) -> None:
    kept = {
        "ms": np.mean([_size(results / "ms" / f"{g}.ms") for g in groups]),
        "calibrated": np.mean([_size(results / "calibrated" / f"{g}.ms") for g in groups]),
        "images": np.mean([sum(_size(f) for f in (results / "images").glob(f"{g}*")) for g in groups]),
        "photometry": np.mean([sum(_size(f) for f in (results / "photometry").glob(f"{g}*")) for g in groups]),
    }
    print("bytes kept per observation: " + ", ".join(f"{k} {v / 1e9:.3f} GB" for k, v in kept.items()))
    raw_dir = Path(config["raw_dir"])
    if raw_dir.exists():
        raw = np.mean([raw_bytes(raw_dir, g, config["grouping"]["tolerance_s"]) for g in groups])
        print(f"  raw per observation {raw / 1e9:.2f} GB")


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
