"""Benchmark: sky-model calibration of one full-size calibrator transit on a realistic sky.

    python benchmarks/calibration_sky.py [--calibrator 3C286 --dec 30.5] [--workdir DIR]
    python benchmarks/calibration_sky.py --calibrator J0014+612 --dec 60 --compare bandpass --no-ft

Simulates a full-size observation (96 antennas, 768 channels, 24 integrations)
centred on a calibrator's transit, with its field (~10 Jy within 1 deg), gains
that random-walk 3% / 3 deg per hour and RFI in ~5% of the data, converts it,
then prints:

* the time to predict the sky model into MODEL_DATA with our exact numpy
  predict and with CASA ``ft`` of the same component list (no beam), and
  their ratio;
* for the sky model and for the calibrator alone (``--compare bandpass``: for a
  per-channel and the smoothed bandpass of a faint calibrator): solve time and the rms
  amplitude / phase error of bandpass x gains against the simulated truth
  (the 1% / 1 deg target of issue 14), and the median amplitude error (the
  flux scale).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from dataclasses import replace
from pathlib import Path
from dsa110_contimg.calibration import caltables
from dsa110_contimg.calibration.skymodel import SkyModelOptions
from dsa110_contimg.photometry.catalogue import CatalogueOptions, load_catalogue
ms, caldir, sky_csv, with_sky, target_snr = sys.argv[1:6]
cat = load_catalogue(CatalogueOptions(path=sky_csv))
opts = caltables.SolveOptions(refant=("24", "31"),
    skymodel=SkyModelOptions(0.05, 4.0, -0.7) if with_sky == "1" else None)
if target_snr != "default":
    opts = replace(opts, bandpass_target_snr=float(target_snr))
Path(caldir).mkdir()
t = time.perf_counter()
qa = caltables.solve(ms, Path(caldir), opts, catalogue=cat)
qa.pop("gain_amplitudes", None)
print(json.dumps({"wall_s": time.perf_counter() - t, "qa": qa}, default=str))
"""

PREDICT = """
import json, shutil, sys, time
import numpy as np, pandas as pd
from dsa110_contimg import casa_env
from dsa110_contimg.calibration import caltables, skymodel
from dsa110_contimg.photometry.catalogue import CatalogueOptions, load_catalogue
ms, work, sky_csv, cal_name = sys.argv[1:5]
ct, cta = casa_env.casatools(), casa_env.casatasks()
info = caltables.read_ms_info(ms)
cat = load_catalogue(CatalogueOptions(path=sky_csv))
cal = caltables.calibrator_in_group(info)
model = skymodel.build_model(cal, cat, info.times_jd, info.pointing_dec_app, skymodel.SkyModelOptions(0.05, 4.0, -0.7))
for name in ("np.ms", "ft.ms"):
    shutil.rmtree(f"{work}/{name}", ignore_errors=True)
    shutil.copytree(ms, f"{work}/{name}")
cta.clearcal(vis=f"{work}/np.ms", addmodel=True)
t = time.perf_counter()
skymodel.write_model(f"{work}/np.ms", model, info.pointing_dec_app, beam_on=False)
t_np = time.perf_counter() - t
cl = ct.componentlist(); shutil.rmtree(f"{work}/m.cl", ignore_errors=True)
for r in model.itertuples():
    cl.addcomponent(dir=f"ICRS {r.ra_deg}deg {r.dec_deg}deg", flux=float(r.flux_jy), fluxunit="Jy", freq="1.4GHz",
                    shape="point", spectrumtype="spectral index", index=float(r.spectral_index))
cl.rename(f"{work}/m.cl"); cl.close()
t = time.perf_counter()
cta.ft(vis=f"{work}/ft.ms", complist=f"{work}/m.cl", usescratch=True)
t_ft = time.perf_counter() - t
print(json.dumps({"n_components": len(model), "numpy_s": t_np, "ft_s": t_ft}))
"""


def _child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gain_errors(caldir: Path, truth_npz: Path, refant_number: int) -> tuple[float, float, float]:
    from casacore import tables

    truth = np.load(truth_npz)
    order = np.argsort(truth["freq_hz"])
    true = truth["bandpass"][:, order, None, :] * truth["gain"][:, None, :, :]
    with tables.table(str(caldir / "bandpass.B"), ack=False) as t:
        b, b_ant, b_flag = t.getcol("CPARAM"), t.getcol("ANTENNA1"), t.getcol("FLAG")
    with tables.table(str(caldir / "gains.G"), ack=False) as t:
        g_raw, g_ant, g_flag_raw = t.getcol("CPARAM"), t.getcol("ANTENNA1"), t.getcol("FLAG")
        g_time = t.getcol("TIME") / 86400.0 + 2400000.5
    n_ant, n_t = len(truth["antennas"]), truth["jd"].size
    g = np.ones((n_ant, n_t, 2), complex)
    g_flag = np.zeros((n_ant, n_t, 2), bool)
    for k, a in enumerate(truth["antennas"]):
        sel = g_ant == a
        for p in range(2):
            good = ~g_flag_raw[sel][:, 0, p]
            if not good.any():
                g_flag[k, :, p] = True
                continue
            tt, v = g_time[sel][good], g_raw[sel][good, 0, p]
            g[k, :, p] = np.interp(truth["jd"], tt, np.abs(v)) * np.exp(
                1j * np.interp(truth["jd"], tt, np.unwrap(np.angle(v))))
    sol = np.stack([b[b_ant == a][0][:, None, :] * g[k][None] for k, a in enumerate(truth["antennas"])])
    flag = np.stack([b_flag[b_ant == a][0][:, None, :] | g_flag[k][None] for k, a in enumerate(truth["antennas"])])
    ratio = sol / np.conj(true)
    ref = list(truth["antennas"]).index(refant_number)
    ratio /= (ratio[ref] / np.abs(ratio[ref]))[None]
    ok = ~flag & ~flag[ref][None]
    amp, ph = np.abs(ratio[ok]) - 1, np.degrees(np.angle(ratio[ok]))
    return float(np.sqrt(np.mean(amp**2))), float(np.sqrt(np.mean(ph**2))), float(np.median(amp))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calibrator", default="3C286")
    p.add_argument("--dec", type=float, default=30.5)
    p.add_argument("--workdir", default=None)
    p.add_argument("--compare", choices=("model", "bandpass"), default="model",
                   help="model: sky model vs the calibrator alone (default); bandpass: per-channel vs "
                   "smoothed bandpass (the faint-calibrator rule), both with the sky model")
    p.add_argument("--no-ft", action="store_true", help="skip the numpy vs CASA ft predict timing")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="contimg-calsky-"))

    from astropy import units as u
    from astropy.time import Time

    from dsa110_contimg.calibration.transits import calibrator_transits
    from dsa110_contimg.raw.convert import convert_group
    from dsa110_contimg.raw.grouping import group_files
    from dsa110_contimg.sim.observation import SimOptions, simulate_span

    tr = calibrator_transits("2025-06-15", "2025-06-16", args.dec, 2.0, min_apparent_jy=0).set_index("name")
    start = Time(tr.loc[args.calibrator, "transit_jd"], format="jd") - 12 * 12.884901888 * u.s
    raw = work / "raw"
    if len(list(raw.glob("*.hdf5"))) != 16:
        t = time.perf_counter()
        opts = SimOptions(start=start.to_datetime().replace(microsecond=0), n_obs=1, dec_deg=args.dec, n_sources=0,
                          rfi=True)
        simulate_span(raw, opts, work / "truth")
        print(f"simulated one full-size group in {time.perf_counter() - t:.0f} s")
    (group,) = group_files([f.name for f in raw.glob("*.hdf5")]).groups
    ms = work / f"{group.id}.ms"
    if not ms.exists():
        t = time.perf_counter()
        convert_group([raw / n for n in group.ordered_files()], ms)
        print(f"converted in {time.perf_counter() - t:.0f} s")
    sky_csv = work / "truth" / "sky.csv"
    if not args.no_ft:
        pred = _child(PREDICT, ms, work, sky_csv, args.calibrator)
        print(f"predict {pred['n_components']} components into MODEL_DATA: numpy {pred['numpy_s']:.1f} s, "
              f"CASA ft {pred['ft_s']:.1f} s (ft / numpy = {pred['ft_s'] / pred['numpy_s']:.2f})")
        for name in ("np.ms", "ft.ms", "m.cl"):
            shutil.rmtree(work / name, ignore_errors=True)
    truth = work / "truth" / "gains" / f"{group.id}.npz"
    variants = ((("sky model", "1", "default"), ("calibrator alone", "0", "default")) if args.compare == "model"
                else (("per-channel bandpass", "1", "0"), ("smoothed bandpass", "1", "default")))
    for label, flag, target in variants:
        caldir = work / f"cal_{flag}_{target}"
        shutil.rmtree(caldir, ignore_errors=True)
        res = _child(CHILD, ms, caldir, sky_csv, flag, target)
        qa = res["qa"]
        amp, ph, med = gain_errors(caldir, truth, int(qa["refant"]) - 1)
        bp = qa.get("bandpass_smoothing", {})
        print(f"{label}: solve {res['wall_s']:.0f} s ({qa['skymodel']['n_components']} components, gains every "
              f"{qa['gain_solint']}, bandpass over {bp.get('window_channels', 1)} channels, predicted SNR "
              f"{bp.get('snr_channel', float('nan')):.0f} per channel -> {bp.get('snr_smoothed', float('nan')):.0f}), "
              f"QA {qa['reason']}; gains vs truth: rms amplitude {100 * amp:.2f}%, "
              f"rms phase {ph:.2f} deg, median amplitude {100 * med:+.2f}% (target 1% / 1 deg)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
