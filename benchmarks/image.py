"""Benchmark: image one full-size DSA-110 observation (96 antennas, 768 channels,
24 integrations) with WSClean and with tclean, through the pipeline's stage
(inspection, imaging, primary beam, QA, thumbnail, registration).

    .venv/bin/python benchmarks/image.py [--workdir DIR] [--keep] [--imagers wsclean,tclean]
                                         [--imsize N] [--threads N] [--mem-mb N]
                                         [--set imaging.KEY=VALUE ...] [--average CHANNELS[xINTEGRATIONS]]
                                         [--drop-weight-spectrum] [--tag NAME] [--reference NAME]

The observation is simulated (calibrated: unit gains, data in Jy) and
converted once into ``DIR/results/calibrated/<group>.ms``; a later run with
the same ``--workdir`` reuses it. Each imager runs in its own child process;
the figures are the stage's wall time, its CPU time (stage and imager; on a
shared machine the CPU time is the steadier figure) and the peak resident
memory of the stage process and of the imager (WSClean, or the tclean
child), read with getrusage. Defaults are the config's (the whole primary
beam to ``pb_cutoff``, cell from the longest baseline / ``pixels_per_beam``,
Briggs 0, auto-threshold 3, auto-mask 5) and the rule's resources (2 threads,
12 GB); ``--set imaging.KEY=VALUE`` changes one option.

The imaged MS is what rule apply_calibration writes: cross-correlations only,
no SIGMA_SPECTRUM (one mstransform pass, ``DIR/results/calibrated/<group>.ms``);
``--average 2`` or ``--average 2x3`` images a copy averaged over 2 channels
(and 3 integrations), made once in ``DIR/averaged/`` (the stage is told the factors, for the
smearing correction, as apply_calibration's sidecar would); ``--drop-weight-spectrum``
a copy without its uniform WEIGHT_SPECTRUM (as apply_calibration now writes it). Each run's images go to
``DIR/results/<imager>-<tag>/`` and its fitted fluxes to ``fluxes.csv`` there;
``--reference TAG`` compares them source by source with an earlier run (e.g.
the unaveraged one): the flux ratio that the acceptance test reads (sources
above 20 sigma within 0.5% of the unaveraged result).
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
from dsa110_contimg.config import validate_config
from dsa110_contimg import naming
from dsa110_contimg.stages.image import OUTPUT_KINDS, image
ms, results, group, imager, imsize, threads, mem_mb, extra, averaged = sys.argv[1:10]
imaging = {"imager": imager, **json.loads(extra)}
if int(imsize):
    imaging["imsize"] = int(imsize)
config = validate_config({"raw_dir": results, "results_dir": results, "imaging": imaging})
t = time.perf_counter()
outputs = {k: v for k, v in naming.rule_outputs(results, "image", group=group).items() if k in OUTPUT_KINDS}
qa = image(ms, outputs, group, config, threads=int(threads), mem_mb=int(mem_mb),
           log=results + "/image-" + imager + ".log", averaged=tuple(json.loads(averaged)))
wall = time.perf_counter() - t
sidecar = json.loads(open(outputs["image"] + ".json").read())
self_ru, child_ru = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print("RESULT=" + json.dumps({
    "wall_s": wall,
    "cpu_s": self_ru.ru_utime + self_ru.ru_stime + child_ru.ru_utime + child_ru.ru_stime,
    "stage_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "imager_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "imager_cpu_s": child_ru.ru_utime + child_ru.ru_stime,
    "timings": sidecar.get("timings", {}),
    "qa": {k: qa[k] for k in ("rms_jy", "thermal_rms_jy", "rms_over_thermal", "peak_jy", "dynamic_range",
                              "beam_major_arcsec", "beam_minor_arcsec", "n_sources_5sigma", "grade",
                              "cell_arcsec", "imsize", "smearing_edge_loss", "smearing_corrected")},
}))
"""


def check_fluxes(results: Path, group: str, truth_dir: Path, rms: float):
    """Fit every simulated source above 20 sigma inside the corrected image; print how it compares."""
    import numpy as np
    import pandas as pd
    from astropy.io import fits
    from astropy.time import Time
    from astropy.wcs import WCS

    from dsa110_contimg import beam, geometry, naming, telescope
    from dsa110_contimg.imaging import qa as image_qa
    from dsa110_contimg.sim.observation import REFERENCE_FREQ_HZ

    sim = json.loads((truth_dir / "simulation.json").read_text())
    sky = pd.read_csv(truth_dir / "sky.csv")
    jd = Time(sim["start"][:19]).jd + (np.arange(sim["n_int"]) + 0.5) * telescope.INTEGRATION_S / 86400
    lst = geometry.lst(jd)
    f = np.concatenate([telescope.subband_frequencies(k, sim["n_chan"]) for k in sim["subbands"]])
    ra, dec = np.radians(sky.ra_deg.to_numpy()), np.radians(sky.dec_deg.to_numpy())
    a_ra, a_dec = geometry.icrs_to_apparent(jd[None, :], ra[:, None], dec[:, None])
    _, _, n = geometry.direction_cosines(a_ra, a_dec, lst[None, :], np.radians(sim["dec_deg"]))
    a = beam.airy_power(np.arccos(np.clip(n, -1, 1))[:, :, None], f[None, None, :])
    s = sky.flux_jy.to_numpy()[:, None] * (f / REFERENCE_FREQ_HZ)[None, :] ** sky.spectral_index.to_numpy()[:, None]
    apparent = (s[:, None, :] * a).mean(axis=(1, 2))
    true = apparent / a.mean(axis=(1, 2))
    path = naming.product_path(results, "pbcor", group)
    header, data = fits.getheader(path), fits.getdata(path).astype(float)
    wcs = WCS(header)
    rows = {}
    for i in np.flatnonzero(apparent / rms > 20):
        x, y = wcs.all_world2pix([[sky.ra_deg[i], sky.dec_deg[i]]], 0)[0]
        if not (20 < x < data.shape[1] - 20 and 20 < y < data.shape[0] - 20):
            continue
        fit = image_qa.fit_point_source(data, wcs, sky.ra_deg[i], sky.dec_deg[i],
                                        (header["BMAJ"], header["BMIN"], header["BPA"]), free_shape=False)
        rows[i] = {"flux_jy": fit.flux_jy, "ratio": fit.flux_jy / true[i], "offset_arcsec": fit.offset_arcsec}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        print(f"         {len(out)} sources > 20 sigma in the image: flux / truth median {out.ratio.median():.4f}, "
              f"range {out.ratio.min():.4f}-{out.ratio.max():.4f}; position offsets <= "
              f"{out.offset_arcsec.max():.2f}\" (beam minor / 10 = {header['BMIN'] * 360:.2f}\")", flush=True)
    return out


MSTRANSFORM = """
import sys
from dsa110_contimg import casa_env
src, dst, width, timebin, drop_ws = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
casa_env.configure(logfile=dst + ".casa.log")
cta = casa_env.casatasks()
params = dict(vis=src, outputvis=dst, datacolumn="data", antenna="*&", chanaverage=width > 1,
              timeaverage=timebin > 1)
if width > 1:
    params["chanbin"] = width
if timebin > 1:
    params["timebin"] = f"{12.884901888 * timebin * 1.0001:.4f}s"
assert cta.mstransform(**params) is not False
tb = casa_env.casatools().table()
tb.open(dst, nomodify=False)
if "SIGMA_SPECTRUM" in tb.colnames():
    tb.removecols("SIGMA_SPECTRUM")
if drop_ws:
    from dsa110_contimg.calibration.caltables import drop_uniform_weight_spectrum
    print("dropped WEIGHT_SPECTRUM:", drop_uniform_weight_spectrum(tb))
tb.close()
"""


def transformed(src: Path, dst: Path, width: int = 1, timebin: int = 1, drop_weight_spectrum: bool = False) -> Path:
    """``src`` as rule apply_calibration writes it (cross-correlations, no SIGMA_SPECTRUM, optionally no uniform
    WEIGHT_SPECTRUM), averaged; made once."""
    if (dst / "table.dat").exists():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MSTRANSFORM, str(src), str(tmp), str(width), str(timebin),
                           str(int(drop_weight_spectrum))], check=True, capture_output=True, text=True)
    if drop_weight_spectrum:
        print(proc.stdout.strip())
    tmp.rename(dst)
    print(f"wrote {dst.name} ({width} channels x {timebin} integrations averaged) in {time.perf_counter() - t:.0f} s",
          flush=True)
    return dst


def _settings(assignments: list[str]) -> dict:
    import yaml

    out = {}
    for a in assignments:
        key, value = a.split("=", 1)
        if not key.startswith("imaging."):
            raise SystemExit(f"--set takes imaging.KEY=VALUE, got {a!r}")
        out[key[len("imaging."):]] = yaml.safe_load(value)
    return out


def _imager_breakdown(log: Path) -> str:
    """WSClean's own split of its time and the number of major cycles, from the stage log."""
    if not log.exists():
        return ""
    text = log.read_text(errors="replace")
    parts = [ln.strip() for ln in text.splitlines() if "major iterations were performed" in ln or ln.startswith(
        "Inversion:")]
    return "; ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=None, help="where to simulate (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the simulated data and the images")
    p.add_argument("--imagers", default="wsclean,tclean")
    p.add_argument("--imsize", type=int, default=0, help="image size (default: the config's, the whole beam)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mem-mb", type=int, default=12000)
    p.add_argument("--set", action="append", default=[], metavar="imaging.KEY=VALUE")
    p.add_argument("--average", default="1", help="CHANNELS or CHANNELSxINTEGRATIONS averaged before imaging")
    p.add_argument("--drop-weight-spectrum", action="store_true",
                   help="image a copy without WEIGHT_SPECTRUM when it equals WEIGHT (as apply_calibration writes it)")
    p.add_argument("--tag", default="", help="name of this run (its images go to results/<imager>-<tag>)")
    p.add_argument("--reference", default=None, help="compare fluxes with the run of this tag")
    args = p.parse_args()

    from dsa110_contimg import naming

    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-bench-image-"))
    start = datetime(2025, 6, 15, 13, 0, 0)
    group = naming.format_timestamp(start)
    results = work / "results"
    ms = Path(naming.product_path(results, "calibrated", group))
    converted = work / "converted" / ms.name
    if not (ms / "table.dat").exists():
        if not (converted / "table.dat").exists():
            from dsa110_contimg.raw.convert import convert_group
            from dsa110_contimg.sim.observation import SimOptions, simulate_span

            t = time.perf_counter()
            opts = SimOptions(start=start, n_obs=1, n_sources=30, calibrators=True, gains=False,
                              correlator_gain=1.0, seed=3)
            files = sorted(simulate_span(work / "raw", opts, work / "truth"))
            print(f"simulated one full-size observation in {time.perf_counter() - t:.0f} s", flush=True)
            t = time.perf_counter()
            converted.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(converted, ignore_errors=True)
            convert_group(files, converted)
            print(f"converted it in {time.perf_counter() - t:.0f} s", flush=True)
            if not args.keep:
                shutil.rmtree(work / "raw")
        transformed(converted, ms)
        shutil.rmtree(converted)
    width, _, timebin = args.average.partition("x")
    width, timebin = int(width), int(timebin or 1)
    if width > 1 or timebin > 1 or args.drop_weight_spectrum:
        variant = f"c{width}t{timebin}" + ("-nows" if args.drop_weight_spectrum else "")
        ms = transformed(ms, work / "averaged" / variant / ms.name, width, timebin, args.drop_weight_spectrum)
    size = sum(f.stat().st_size for f in ms.rglob("*") if f.is_file())
    print(f"imaged MS: {ms} ({size / 1e9:.2f} GB)")
    extra = _settings(args.set)

    rows = []
    for imager in args.imagers.split(","):
        out = results / (f"{imager}-{args.tag}" if args.tag else imager)
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(ms), str(out), group, imager, str(args.imsize), str(args.threads),
             str(args.mem_mb), json.dumps(extra), json.dumps([width, timebin])],
            capture_output=True, text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")]
        if proc.returncode or not lines:
            print(f"{imager} FAILED:\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1][len("RESULT="):])
        rows.append((imager, r))
        q = r["qa"]
        tm = r.get("timings", {})
        print(f"{imager:8s} {args.tag} {extra or ''} average {width}x{timebin}: wall {r['wall_s']:7.1f} s, "
              f"CPU {r['cpu_s']:.0f} s (imager {r['imager_cpu_s']:.0f} s; stage wall: inspect+noise "
              f"{tm.get('inspect_s', float('nan')):.1f} s, imager {tm.get('imager_s', float('nan')):.1f} s)   "
              f"peak memory: stage {r['stage_peak_mb'] / 1024:.2f} GB, imager {r['imager_peak_mb'] / 1024:.2f} GB   "
              f"({q['imsize']} px of {q['cell_arcsec']}\", rms {q['rms_jy'] * 1e3:.3f} mJy = "
              f"{q['rms_over_thermal']:.3f} x thermal, DR {q['dynamic_range']:.0f}, "
              f"beam {q['beam_major_arcsec']:.1f}\" x {q['beam_minor_arcsec']:.1f}\", "
              f"{q['n_sources_5sigma']} islands > 5 sigma, grade {q['grade']}; smearing at the edge "
              f"{100 * q['smearing_edge_loss']:.2f}%, correction {q['smearing_corrected']})", flush=True)
        print(f"         {_imager_breakdown(out / ('image-' + imager + '.log'))}", flush=True)
        fluxes = check_fluxes(out, group, work / "truth", r["qa"]["rms_jy"])
        fluxes.to_csv(out / "fluxes.csv", index_label="source")
        rows[-1][1]["fluxes"] = fluxes
        if args.reference:
            ref_file = results / f"{imager}-{args.reference}" / "fluxes.csv"
            if ref_file.exists():
                import pandas as pd

                ref = pd.read_csv(ref_file, index_col="source")
                common = fluxes.index.intersection(ref.index)
                ratio = fluxes.loc[common, "flux_jy"] / ref.loc[common, "flux_jy"]
                worst = (ratio - 1).abs().idxmax() if len(ratio) else None
                print(f"         vs {args.reference}: {common.size} sources, flux ratio median {ratio.median():.4f}, "
                      f"range {ratio.min():.4f}-{ratio.max():.4f}"
                      + (f" (worst: source {worst})" if worst is not None else ""), flush=True)
            else:
                print(f"         no reference run {ref_file}")
    if len(rows) == 2:
        a, b = rows[0][1]["fluxes"], rows[1][1]["fluxes"]
        common = a.index.intersection(b.index)
        ratio = a.loc[common, "flux_jy"] / b.loc[common, "flux_jy"]
        print(f"{rows[0][0]} / {rows[1][0]} flux of the same {common.size} sources: median {ratio.median():.4f}, "
              f"range {ratio.min():.4f}-{ratio.max():.4f}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if len(rows) == len(args.imagers.split(",")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
