"""Benchmarks of forced photometry and the light-curve fan-in, and the ESE injection-recovery study.

    .venv/bin/python benchmarks/photometry.py forced     [--size 4096] [--n 10000]
    .venv/bin/python benchmarks/photometry.py fanin      [--images 1000] [--sources 5000] [--memory-mb 256]
    .venv/bin/python benchmarks/photometry.py injection  [--days 240] [--ese 2000] [--steady 5000]
    .venv/bin/python benchmarks/photometry.py endtoend   [--e2e-days 21] [--workdir DIR]
    .venv/bin/python benchmarks/photometry.py all

forced: one full-size synthetic image set (4096 x 4096, 4" cells, SIN, restoring
beam 18" x 14", 1 mJy/beam beam-correlated noise, Airy primary beam of FWHM
2.7 deg) with ``--n`` sources at random positions within 1.9 deg of the centre
(primary beam above ~12%; log-uniform 2 mJy - 1 Jy), written as
4-D FITS with an image sidecar; the photometry stage measures them in a child
process (wall time and peak memory of that process; forced and blind parts
from the sidecar), then the accuracy against the truth is printed.

fanin: ``--images`` synthetic photometry tables of ``--sources`` sources each
(steady plus ESE dips, 2% per-image flux-scale errors); the fan-in runs in a
child process with a memory budget (``--memory-mb``) small enough that it
must spill to disk, then again with a budget that holds everything in memory.

injection: a population of ESE-like dips (depth 0.5-0.8 point-source, FWHM
14-90 days), steady, flaring and scintillating sources, observed once a
sidereal day for ``--days`` days with 1 mJy noise and 3% per-epoch flux-scale
errors, written as photometry tables and run through the real fan-in with each
ESE preset. Prints the fraction of dips recovered (a candidate covering the
dip's centre) by depth and SNR, and the fraction of steady sources flagged.

endtoend: the same strip on ``--e2e-days`` sidereal days (24 antennas, 8
channels per subband, one 77 s observation a day in which 3C286 transits and
calibrates it), with 8 steady sources, an ESE-like dip (depth 0.7, FWHM a third
of the span) and a flare: simulate -> convert -> solve and apply calibration ->
image (WSClean or tclean) -> photometry -> light curves, through the stage
functions (about 40 s a day on 2 cores). Prints each source's measured / true
flux, its metrics and the ESE candidates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD_FORCED = """
import json, resource, sys, time
from dsa110_contimg.stages.photometry import photometry
from dsa110_contimg.config import validate_config
d = sys.argv[1]
cfg = validate_config({"results_dir": d + "/results", "database": {"url": "sqlite:///" + d + "/p.sqlite"},
                       "catalogue": {"path": d + "/sky.csv"}})
g = "2025-06-15T08:00:03"
img = d + "/results/images/" + g
t = time.perf_counter()
qa = photometry(img + ".pbcor.fits", img + ".pb.fits", img + ".residual.fits", img + ".image.fits.json",
                       d + "/results/photometry/" + g + ".parquet", d + "/results/photometry/" + g + ".new_sources.csv",
                       g, cfg, log=d + "/photometry.log", register=False)
wall = time.perf_counter() - t
side = json.load(open(d + "/results/photometry/" + g + ".parquet.json"))
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timings": side["timings"], "qa": {k: qa[k] for k in ("n_sources", "n_measured", "n_flagged",
                  "flag_counts", "noise_correlation", "n_new_sources", "n_islands")}}))
"""

CHILD_FANIN = """
import json, logging, resource, sys, time
from dsa110_contimg import naming
from dsa110_contimg.stages import photometry as stage

outs = {k: v for k, v in naming.rule_outputs(sys.argv[2], "lightcurves", name="all").items()
        if not k.endswith("_sidecar")}
d, out, mem = sys.argv[1], sys.argv[2], float(sys.argv[3])
files = sorted(str(p) for p in __import__("pathlib").Path(d).glob("*.parquet"))
opts = stage.LightcurveOptions(memory_mb=mem)
t = time.perf_counter()
qa = stage.build_lightcurves(files, outs, opts, logging.getLogger("bench"))
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "read_s": qa["read_s"], "lightcurves_s": qa["lightcurves_s"], "n_buckets": qa["n_buckets"],
                  "spilled": qa["spilled"], "n_sources": qa["n_sources"], "n_epochs": qa["n_epochs"],
                  "n_used": qa["n_used"], "n_ese_candidates": qa["n_ese_candidates"]}))
"""


def _child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"child failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def forced(args) -> None:
    from dsa110_contimg.provenance import write_sidecar
    from dsa110_contimg.sim import variability as sv

    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-bench-phot-"))
    rng = np.random.default_rng(1)
    n = args.n
    cell = 4.0
    half = args.size / 2 * cell / 3600 * 0.98
    ra0, dec0 = 150.0, 33.0
    from dsa110_contimg.sim.variability import sin_wcs

    wcs = sin_wcs((args.size, args.size), cell, ra0, dec0)
    # uniform within 1.9 deg of the centre, where the 2.7 deg (FWHM) primary beam is above ~12%
    r_px = min(1.9 * 3600 / cell, args.size / 2 - 10)
    rad = r_px * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    ra, dec = wcs.all_pix2world(args.size / 2 + rad * np.cos(phi), args.size / 2 + rad * np.sin(phi), 0)
    src = pd.DataFrame({"name": [f"B{i:05d}" for i in range(n)], "ra_deg": ra, "dec_deg": dec,
                        "flux_jy": np.exp(rng.uniform(np.log(0.002), np.log(1.0), n))})
    src.to_csv(work / "sky.csv", index=False)
    t = time.perf_counter()
    img = sv.synthetic_image(src, shape=(args.size, args.size), cell_arcsec=cell, noise_jy=1e-3, pb_fwhm_deg=2.7,
                             ra0=ra0, dec0=dec0, seed=2)
    group = "2025-06-15T08:00:03"
    paths = sv.write_synthetic_fits(img, work / "results" / "images" / group, four_d=True)
    write_sidecar(paths["image"], kind="image", group=group, inputs=[],
                  qa={"grade": "good", "mid_time": "2025-06-15T08:02:38", "rms_jy": 1e-3})
    truth = img.sources.set_index("name")
    del img
    print(f"synthesised a {args.size}x{args.size} image set with {n} sources in {time.perf_counter() - t:.1f} s "
          f"({half:.2f} deg half-width)")
    res = _child(CHILD_FORCED, str(work))
    meas = pd.read_parquet(work / "results" / "photometry" / f"{group}.parquet").set_index("source")
    true = truth.loc[meas.index, "flux_jy"]
    ok = meas["flags"] == 0
    pull = ((meas.flux_jy - true) / meas.flux_err_jy)[ok]
    snr = (true / meas.flux_err_jy)[ok]
    ratio = (meas.flux_jy / true)[ok]
    print(f"forced photometry of {res['qa']['n_sources']} positions: wall {res['wall_s']:.1f} s "
          f"(read {res['timings']['read_s']:.1f} s, forced fits {res['timings']['forced_s']:.1f} s, "
          f"blind detection {res['timings']['blind_s']:.1f} s), peak memory {res['peak_rss_mb']:.0f} MB")
    print(f"  flags: {res['qa']['flag_counts']}; noise correlation {res['qa']['noise_correlation']}; "
          f"{res['qa']['n_new_sources']} new-source candidates of {res['qa']['n_islands']} islands")
    print(f"  unflagged: {ok.sum()}; pull mean {pull.mean():+.3f}, width {pull.std():.3f}; "
          f">= 20 sigma: {int((snr >= 20).sum())}, median flux ratio {ratio[snr >= 20].median():.4f}, "
          f"68% of |ratio - 1| within {np.percentile(np.abs(ratio[snr >= 20] - 1), 68):.4f}")
    blended = meas["flags"] == 4
    bp = ((meas.flux_jy - true) / meas.flux_err_jy)[blended]
    print(f"  blended (jointly fitted, no other flag): {blended.sum()}, pull width {bp.std():.3f}")


def fanin(args) -> None:
    from dsa110_contimg.sim import variability as sv

    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-bench-fanin-"))
    phot = work / "results" / "photometry"
    if len(list(phot.glob("*.parquet"))) != args.images:
        n_ese = args.sources // 50
        mjds = sv.epoch_mjds(60800.0, args.images // 3 + 1, per_day=3)[: args.images]
        pop = sv.draw_population(args.sources - n_ese, n_ese, mjd_range=(mjds[0], mjds[-1]),
                                 flux_range=(0.005, 1.0), seed=3)
        t = time.perf_counter()
        sv.synthetic_photometry(work / "results", pop, mjds, noise_jy=1e-3, scale_rms=0.02, seed=4, sidecars=False)
        print(f"wrote {args.images} photometry tables of {args.sources} sources in {time.perf_counter() - t:.1f} s")
    size = sum(p.stat().st_size for p in phot.glob("*.parquet")) / 2**20
    for mem in (args.memory_mb, 8000):
        res = _child(CHILD_FANIN, str(phot), str(work / f"out-{mem}"), str(mem))
        print(f"fan-in over {res['n_epochs']} tables ({size:.0f} MB of parquet, {res['n_used']} measurements, "
              f"{res['n_sources']} sources), memory budget {mem} MB: wall {res['wall_s']:.1f} s "
              f"(read {res['read_s']:.1f} s, light curves + metrics + ESE {res['lightcurves_s']:.1f} s), "
              f"peak memory {res['peak_rss_mb']:.0f} MB, {res['n_buckets']} bucket(s)"
              f"{' spilled to disk' if res['spilled'] else ' in memory'}, {res['n_ese_candidates']} ESE candidates")


def injection(args) -> None:
    import logging

    from dsa110_contimg import naming
    from dsa110_contimg.photometry import ese
    from dsa110_contimg.sim import variability as sv
    from dsa110_contimg.stages import photometry as stage
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-bench-inj-"))
    mjds = sv.epoch_mjds(60800.0, args.days)
    pop = sv.draw_population(args.steady, args.ese, args.ese // 10, args.ese // 4, mjd_range=(mjds[0], mjds[-1]),
                             flux_range=(0.003, 1.0), depth_range=(0.3, 0.8), duration_range=(14, 90), seed=21)
    t = time.perf_counter()
    files, _ = sv.synthetic_photometry(work / "results", pop, mjds, noise_jy=1e-3, scale_rms=0.03, seed=22,
                                       sidecars=False)
    print(f"population: {args.steady} steady, {args.ese} ESE (point-source depth 0.3-0.8, FWHM 14-90 d), "
          f"{args.ese // 10} flares, {args.ese // 4} scintillating (2%); {args.days} daily epochs, 1 mJy noise, "
          f"3% per-epoch flux-scale errors; tables written in {time.perf_counter() - t:.1f} s")
    pop["snr"] = pop.flux_jy / 1e-3
    for preset in ese.PRESETS:
        opts = stage.LightcurveOptions(ese_preset=preset, ese=ese.PRESETS[preset])
        outs = {k: v for k, v in naming.rule_outputs(work / f"out-{preset}", "lightcurves", name="all").items()
                if not k.endswith("_sidecar")}
        t = time.perf_counter()
        qa = stage.build_lightcurves([str(f) for f in files], outs, opts, logging.getLogger("bench"))
        wall = time.perf_counter() - t
        cands = pd.read_csv(outs["ese_candidates"])
        hit = pop.merge(cands, left_on="name", right_on="source", how="left")
        hit["covers"] = (hit.start_mjd <= hit.t0_mjd) & (hit.end_mjd >= hit.t0_mjd)
        found = pop.name.map(hit.groupby("name").covers.any())
        flagged = pop.name.isin(set(cands.source))
        var = pd.read_parquet(outs["variability"]).set_index("source").loc[pop.name]
        e = pop.kind == "ese"
        target = e & (pop.depth >= 0.5) & (pop.snr >= 20)
        print(f"\n[{preset}] {ese.PRESETS[preset]}  ({wall:.1f} s, {qa['n_ese_candidates']} candidates)")
        print(f"  REQUIREMENT  depth >= 0.5 and SNR >= 20: recovered {found[target].mean():.3f} of {target.sum()}; "
              f"steady sources flagged {flagged[pop.kind == 'steady'].mean():.4f} of {(pop.kind == 'steady').sum()}")
        for lo, hi in ((0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.8)):
            for slo, shi in ((3, 10), (10, 20), (20, 1e9)):
                sel = e & (pop.depth >= lo) & (pop.depth < hi) & (pop.snr >= slo) & (pop.snr < shi)
                if sel.sum():
                    print(f"    depth {lo:.1f}-{hi:.1f}, SNR {slo:>3}-{'inf' if shi > 1e8 else int(shi):>3}: "
                          f"{found[sel].mean():.3f} of {sel.sum()}")
        for kind in ("steady", "scintillating", "flare"):
            sel = pop.kind == kind
            print(f"  {kind:>13}: flagged as ESE {flagged[sel].mean():.4f}, 'variable' {var.is_variable[sel.to_numpy()].mean():.4f} "
                  f"of {sel.sum()}")
        low = (pop.kind == "steady") & (pop.snr < 20)
        print(f"  steady below SNR 20 flagged {flagged[low].mean():.4f} of {low.sum()}; "
              f"ESE marked variable {var.is_variable[e.to_numpy()].mean():.3f}")


def endtoend(args) -> None:
    """Raw data of the same strip on --e2e-days days -> convert -> calibrate -> image -> photometry -> fan-in."""
    from datetime import datetime

    from dsa110_contimg import naming
    from dsa110_contimg.config import validate_config
    from dsa110_contimg.raw import grouping
    from dsa110_contimg.sim import variability as sv
    from dsa110_contimg.sim.observation import SimOptions
    from dsa110_contimg.stages import calibrate, convert, image
    from dsa110_contimg.stages import photometry as phot_stage
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-e2e-"))
    raw, results = work / "raw", work / "results"
    opts = SimOptions(start=datetime(2025, 6, 16, 3, 45, 0), n_obs=1, dec_deg=30.5, n_ants=24, n_chan=8, n_int=6, seed=1)
    days = args.e2e_days
    start_mjd = sv.mjd_of(opts.start)
    # A small strip around the meridian at the observation (3C286 transits in it and calibrates each day):
    # bright steady references, an ESE-like dip and a flare.
    lst_ra = 202.8
    pop = sv.draw_population(8, 1, 1, mjd_range=(start_mjd, start_mjd + days), ra_range=(lst_ra - 0.4, lst_ra + 0.4),
                             dec_range=(30.2, 30.8), flux_range=(0.3, 1.0), seed=7, prefix="E2E")
    ese_row = pop.index[pop.kind == "ese"][0]
    pop.loc[ese_row, ["t0_mjd", "duration_days", "alpha", "source_size", "flux_jy"]] = [
        start_mjd + days / 2, args.e2e_days / 3, sv.alpha_for_depth(0.7), 0.05, 0.6]
    pop.loc[ese_row, "depth"] = sv.ese_depth(sv.alpha_for_depth(0.7), 0.05)
    flare = pop.index[pop.kind == "flare"][0]
    pop.loc[flare, ["t0_mjd", "amplitude", "rise_days", "decay_days"]] = [start_mjd + days / 4, 1.5, 0.5, 2.0]
    if not raw.exists():
        t = time.perf_counter()
        sv.simulate_days(raw, opts, pop, days, truth_dir=work / "truth")
        print(f"simulated {days} days of the strip in {time.perf_counter() - t:.0f} s")
    config = validate_config({
        "raw_dir": str(raw), "results_dir": str(results), "pointing": {"dec_deg": 30.5},
        "catalogue": {"path": str(work / "truth" / "sky.csv")},
        "imaging": {"imsize": args.e2e_imsize},
        # Every image holds 3C286 (~14 Jy) and one 77 s snapshot of 24 antennas: its sidelobes make the
        # image QA grade them bad (rms several times thermal), the same way every day; keep them.
        "variability": {"ese": {"preset": args.e2e_preset}, "skip_bad_images": False, "reference_min_snr": 20.0},
    })
    groups = grouping.group_files(sorted(p.name for p in raw.iterdir()), tolerance_s=60, n_subbands=16)
    tables = []
    for group in sorted(g.id for g in groups.groups):
        files = [str(raw / f) for f in groups.by_id[group].ordered_files()]
        ms = naming.ms_path(results, group)
        cal = naming.product_path(results, "caltable", group)
        calibrated = naming.product_path(results, "calibrated", group)
        outs = naming.rule_outputs(results, "image", group=group)
        table = naming.product_path(results, "photometry", group)
        t = time.perf_counter()
        if not Path(table).exists():
            logs = results / "logs"
            if not Path(ms).exists():
                convert.convert(files, ms, group, config, log=str(logs / f"convert-{group}.log"))
            if not Path(cal).exists():
                calibrate.solve_calibration(ms, cal, group, config, log=str(logs / f"solve-{group}.log"))
            if not Path(calibrated).exists():
                calibrate.apply_calibration(ms, [cal], calibrated, group, config, log=str(logs / f"apply-{group}.log"))
            if not Path(outs["pbcor"]).exists():
                image.image(calibrated, {k: outs[k] for k in image.OUTPUT_KINDS}, group, config, log=str(logs / f"image-{group}.log"))
            phot_stage.photometry(outs["pbcor"], outs["pb"], outs["residual"], outs["image"] + ".json", table,
                                  naming.product_path(results, "new_sources", group), group, config,
                                  log=str(logs / f"photometry-{group}.log"))
            print(f"{group}: convert, calibrate, image, photometry in {time.perf_counter() - t:.0f} s", flush=True)
        tables.append(table)
    lc = {k: v for k, v in naming.rule_outputs(results, "lightcurves", name="all").items()
          if not k.endswith("_sidecar")}
    qa = phot_stage.lightcurves(tables, lc, config, log=str(results / "logs" / "lightcurves.log"))
    truth = pop.set_index("name")
    lcs = pd.read_parquet(lc["lightcurves"]).astype({"source": str})
    print(f"\nend to end over {len(tables)} days ({qa['n_sources']} sources, {qa['n_reference_sources']} references, "
          f"flux-scale rms {qa['scale_rms']})")
    for name, row in truth.iterrows():
        got = lcs[lcs.source == name].sort_values("mjd")
        want = sv.fluxes(truth.loc[[name]], got.mjd.to_numpy())[0]
        pull = (got.flux_jy.to_numpy() - want) / got.flux_err_jy.to_numpy()
        print(f"  {name} {row.kind:>7}: {len(got)} epochs, measured / true median {np.median(got.flux_jy / want):.3f}, "
              f"pull rms {np.sqrt(np.mean(pull ** 2)):.2f}")
    var = pd.read_parquet(lc["variability"]).set_index("source")
    cands = pd.read_csv(lc["ese_candidates"])
    print(var.reindex(truth.index)[["n_epochs", "eta", "v", "vs_max", "m_max", "chi2_red", "is_variable"]].round(3).to_string())
    print(f"ESE candidates ({args.e2e_preset}):\n{cands.to_string() if len(cands) else 'none'}")
    print(f"injected ESE: {truth.index[truth.kind == 'ese'][0]} depth {truth.depth[truth.kind == 'ese'].iloc[0]:.2f}, "
          f"centre MJD {truth.t0_mjd[truth.kind == 'ese'].iloc[0]:.1f}, FWHM {truth.duration_days[truth.kind == 'ese'].iloc[0]:.1f} d")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["forced", "fanin", "injection", "endtoend", "all"])
    p.add_argument("--workdir", default=None)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--sources", type=int, default=5000)
    p.add_argument("--memory-mb", type=int, default=256)
    p.add_argument("--days", type=int, default=240)
    p.add_argument("--ese", type=int, default=2000)
    p.add_argument("--steady", type=int, default=5000)
    p.add_argument("--e2e-days", type=int, default=21)
    p.add_argument("--e2e-imsize", type=int, default=2048)
    p.add_argument("--e2e-preset", default="moderate")
    args = p.parse_args()
    for name, fn in (("forced", forced), ("fanin", fanin), ("injection", injection), ("endtoend", endtoend)):
        if args.what in (name, "all"):
            fn(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
