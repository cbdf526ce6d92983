"""Benchmark: a deep mosaic of up to 1,000 synthetic full-size images; peak memory vs inputs.

    .venv/bin/python benchmarks/mosaic.py [--workdir DIR] [--n 10 100 1000] [--npix 2048] [--keep]

The images are made here (tests/mosaic_sim.py): ``npix`` x ``npix`` SIN images
(default 2048 x 2048 at 8 arcsec, the 4.55-deg field of the pipeline's
4096 x 4096 images at ~4 arcsec, with a quarter of the pixels), 4 axes, a
32-arcsec restoring beam, point sources through a 3.4 x 3.0 deg primary beam,
beam-correlated noise of 1 mJy/beam, a 2-D primary-beam FITS and a QA sidecar
each. The sky is a deep field: 10 pointings 1.29 deg apart in RA (one
observation each, as the drift gives them) observed on 100 days; the images of
one pointing differ only in their noise. N inputs are the first N/10 days, so
every N covers the same sky and gets the same output grid: only the number of
inputs changes. (The images of one pointing share its primary-beam file, which
is identical for all of them, through symlinks, to save 16 GB of disk.)

Each N is planned and built in its own child process (plan_mosaic's and
build_mosaic's code, tier ``deep`` with ``pixel_arcsec`` set to the images'
8 arcsec and its default bicubic interpolation and 0.1 beam cut-off), which
reports its wall time and peak resident memory; then the mosaic's QA is run
against the sky model (a sanity check: noise map right, flux scale 1). Results
are printed and written to ``<workdir>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

N_POINTINGS = 10
RA_STEP_DEG = 1.29  # one observation of 309 s of drift
DEC = 33.0

CHILD = r"""
import json, logging, resource, sys, time
from dsa110_contimg.mosaic import build as mosaic_build, plan as mosaic_plan, qa as mosaic_qa, wiring as mosaic_wiring
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # progress -> the build log
images, pbs, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
pixel, interp = float(sys.argv[4]), sys.argv[5]
t0 = time.perf_counter()
sel = mosaic_wiring.Selection("deep", "bench")
opts = mosaic_wiring.TierOptions(max_images=1000, keep="lowest_rms", grades=("good",), max_rms_ratio=2.0,
                          pb_cutoff=0.1, pixel_arcsec=pixel, projection="TAN", interpolation=interp)
plan = mosaic_plan.make_plan(sel, opts, list(zip(images, pbs)))
t1 = time.perf_counter()
rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
qa = mosaic_build.build(plan, {"mosaic": out + ".fits", "mosaic_noise": out + ".noise.fits",
                         "mosaic_weights": out + ".weights.fits"})
t2 = time.perf_counter()
print(json.dumps({"n": len(plan.images), "plan_s": t1 - t0, "build_s": t2 - t1, "rss_after_plan_mb": rss_plan,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "grid": list(plan.grid.shape), "estimate_mb": mosaic_plan.memory_estimate_mb(plan),
                  "noise_min_jy": qa["noise_min_jy"], "max_images_per_pixel": qa["max_images_per_pixel"]}))
"""

QA_CHILD = r"""
import json, resource, sys, time
import pandas as pd
from dsa110_contimg.mosaic import build as mosaic_build, plan as mosaic_plan, qa as mosaic_qa, wiring as mosaic_wiring
out, cat = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
data, noise, wcs, header = mosaic_qa.read_maps(out + ".fits", out + ".noise.fits")
qa, sources, matches = mosaic_qa.measure_qa(data, noise, wcs, header, pd.read_csv(cat), mosaic_qa.QAOptions())
mosaic_qa.render_preview(out + ".qa.png", data, noise, qa, matches, "deep benchmark")
keys = ["rms_jy", "rms_min_jy", "noise_ratio", "flux_ratio", "flux_ratio_scatter", "astrometry_offset_arcsec",
        "n_sources", "n_matched", "grade"]
print(json.dumps({"qa_s": time.perf_counter() - t0, **{k: qa[k] for k in keys},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_images(folder: Path, n_days: int, npix: int, cell: float, seed: int = 1):
    """The deep field's images, day-major (day d's 10 pointings are images 10d .. 10d+9)."""
    from astropy.io import fits
    from mosaic_sim import ImageSpec, random_sources, render
    from scipy import ndimage

    from dsa110_contimg import naming, provenance

    spec = ImageSpec(npix=npix, cell_arcsec=cell, beam_arcsec=4 * cell, pb_fwhm_deg=(3.4, 3.0), rms_jy=1e-3)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ras = [140.0 + RA_STEP_DEG * k for k in range(N_POINTINGS)]
    half = npix * cell / 3600 / 2
    sky = random_sources(rng, (ras[0] - half, ras[-1] + half), (DEC - half, DEC + half), 300,
                         flux=(0.02, 2.0), min_sep_deg=0.1)
    sky.to_csv(folder / "sky.csv", index=False)
    s_pix = spec.beam_arcsec / np.sqrt(8 * np.log(2)) / spec.cell_arcsec
    models = []
    for k, ra in enumerate(ras):
        model, pb, w = render(ra, DEC, sky, spec, seed=0, noise=False)
        header = w.to_header()
        header["BMAJ"] = header["BMIN"] = spec.beam_arcsec / 3600
        header["BPA"], header["BUNIT"] = 0.0, "Jy/beam"
        pbfile = folder / f"pointing{k}.pb.fits"
        fits.PrimaryHDU(pb.astype(np.float32), w.celestial.to_header()).writeto(pbfile, overwrite=True)
        models.append((model.astype(np.float32), header, pbfile, ra))
    images, pbs = [], []
    t0 = time.perf_counter()
    day0 = naming.parse_timestamp("2025-03-01T00:00:00").timestamp()
    for d in range(n_days):
        for k, (model, header, pbfile, ra) in enumerate(models):
            # Day d's observation of pointing k: one sidereal day later each day, 309 s apart.
            g = naming.format_timestamp(
                datetime.fromtimestamp(day0 + d * 86164.1 + k * 309.2 + 8 * 3600, UTC))
            image = folder / f"{g}.image.fits"
            pb = folder / f"{g}.pb.fits"
            if not (image.exists() and Path(str(image) + ".json").exists()):
                noise = ndimage.gaussian_filter(rng.standard_normal((npix, npix), np.float32), s_pix / np.sqrt(2))
                noise *= spec.rms_jy / noise.std()
                fits.PrimaryHDU((model + noise)[None, None], header).writeto(image, overwrite=True)
                qa = {"rms_jy": spec.rms_jy * float(rng.uniform(0.9, 1.1)), "grade": "good",
                      "beam_major_arcsec": spec.beam_arcsec, "beam_minor_arcsec": spec.beam_arcsec,
                      "beam_pa_deg": 0.0, "freq_hz": spec.freq_hz, "ra_deg": ra, "dec_deg": DEC}
                provenance.write_sidecar(image, kind="image", group=g, qa=qa)
            if not pb.is_symlink():
                pb.unlink(missing_ok=True)
                pb.symlink_to(pbfile.name)
            images.append(str(image))
            pbs.append(str(pb))
        if (d + 1) % 10 == 0:
            print(f"  {len(images)} images made ({time.perf_counter() - t0:.0f} s)", flush=True)
    return images, pbs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None, help="where to write the images (default: a temporary folder)")
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="numbers of inputs (multiples of 10)")
    p.add_argument("--npix", type=int, default=2048, help="image size (pixels a side)")
    p.add_argument("--cell", type=float, default=8.0, help="image pixel (arcsec); the mosaic uses the same")
    p.add_argument("--interpolation", default="bicubic", choices=["bilinear", "bicubic"])
    p.add_argument("--keep", action="store_true", help="keep the images and mosaics")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-mosaic-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    n_days = max(args.n) // N_POINTINGS
    t = time.perf_counter()
    print(f"making {n_days * N_POINTINGS} images of {args.npix}x{args.npix} in {work}", flush=True)
    images, pbs = make_images(work / "images", n_days, args.npix, args.cell)
    make_s = time.perf_counter() - t
    size = sum(Path(i).stat().st_size for i in images)
    print(f"made {len(images)} images ({size / 1e9:.1f} GB) in {make_s:.0f} s", flush=True)
    results = {"npix": args.npix, "cell_arcsec": args.cell, "interpolation": args.interpolation,
               "images_gb": size / 1e9, "make_s": make_s, "runs": []}
    for n in sorted(args.n):
        out = str(work / f"deep{n}")
        t = time.perf_counter()
        with open(out + ".log", "w") as logfile:  # the build's progress, to follow it
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(images[:n]), json.dumps(pbs[:n]), out,
                                   str(args.cell), args.interpolation], stdout=subprocess.PIPE, stderr=logfile,
                                  text=True)
        if proc.returncode:
            print(f"N={n}: the build failed ({proc.returncode}); see {out}.log", file=sys.stderr)
            return 1
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["wall_s"] = time.perf_counter() - t
        qa = subprocess.run([sys.executable, "-c", QA_CHILD, out, str(work / "images" / "sky.csv")],
                            capture_output=True, text=True)
        if qa.returncode == 0:
            run["qa"] = json.loads(qa.stdout.strip().splitlines()[-1])
        else:
            print(qa.stderr[-2000:], file=sys.stderr)
        results["runs"].append(run)
        print(f"N={n:5d}: plan {run['plan_s']:.1f} s, build {run['build_s']:.0f} s "
              f"({run['build_s'] / n:.2f} s per image), peak memory {run['peak_rss_mb']:.0f} MB "
              f"(estimate {run['estimate_mb']:.0f} MB), grid {run['grid']}, best noise "
              f"{run['noise_min_jy'] * 1e3:.3f} mJy/beam, up to {run['max_images_per_pixel']} images a pixel"
              + (f"; QA {run['qa']['qa_s']:.0f} s: noise ratio {run['qa']['noise_ratio']:.3f}, flux ratio "
                 f"{run['qa']['flux_ratio']:.4f}, offset {run['qa']['astrometry_offset_arcsec']:.2f}\", "
                 f"{run['qa']['n_matched']} matched, grade {run['qa']['grade']}" if "qa" in run else ""),
              flush=True)
        (work / "results.json").write_text(json.dumps(results, indent=1))
    runs = results["runs"]
    if len(runs) > 1:  # the baseline is the smallest N: memory must stay flat, time grow ~linearly
        base = runs[0]
        for run in runs[1:]:
            print(f"N={run['n']} vs N={base['n']}: peak memory ratio {run['peak_rss_mb'] / base['peak_rss_mb']:.2f} "
                  f"(target: flat, ~1), time per image ratio "
                  f"{run['build_s'] / run['n'] / (base['build_s'] / base['n']):.2f}, noise ratio "
                  f"{run['noise_min_jy'] / base['noise_min_jy']:.3f} (1/sqrt(N) gives "
                  f"{(base['max_images_per_pixel'] / run['max_images_per_pixel']) ** 0.5:.3f})", flush=True)
    if not args.keep:
        shutil.rmtree(work / "images", ignore_errors=True)
        for f in work.glob("deep*"):
            if not f.name.endswith((".log", ".png")):
                f.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
