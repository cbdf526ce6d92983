"""How right a demo run comes out against its simulated truth: field fluxes, pulls, image noise.

    .venv/bin/python benchmarks/demo_accuracy.py demo/            [--min-snr 20] [--csv out.csv]

Reads ``<run>/truth/sky.csv`` (the simulator's sky: flux at 1.4 GHz and
spectral index), every ``<run>/results/photometry/*.parquet`` and the image
sidecars, and prints, for the measurements above ``--min-snr`` (noise alone)
with no flag other than the image grade:

- field sources (all but 3C286): median measured/true, robust scatter, the
  lowest, how many fall below 0.95 of the truth, and how many the quoted
  errors predict there (sum over sources of P(flux < 0.95 true) for a normal
  error of flux_err_jy: at 20 sigma a 0.95 cut is a 1-sigma cut), the Poisson
  probability of at least the count seen, and the count above 100 sigma,
  where 0.95 is a cut at 3 sigma or more;
- 3C286's ratio in each image;
- pulls (measured - true) / flux_err_jy: median and robust width
  (1.4826 MAD), and with the statistical error alone;
- per image: grade, rms / thermal, the systematic fraction used and how
  it was found (photometry sidecar), the image's field median.

The truth is taken at each image's frequency (FREQ keyword) through the
spectral index. Exit status 0; this reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm, poisson

GRADE_BITS = 64 | 128  # marginal_image, bad_image: the image's grade, not a defect of the measurement


def angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance in degrees."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def width(x) -> float:
    x = np.asarray(x, float)
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def measurements(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every catalogue measurement with its truth, per-image records)."""
    from astropy.io import fits

    res = run / "results"
    sky = pd.read_csv(run / "truth" / "sky.csv").set_index("name")
    rows, images = [], []
    for table in sorted((res / "photometry").glob("*.parquet")):
        group = table.name[: -len(".parquet")]
        image = res / "images" / f"{group}.image.fits"
        freq = float(fits.getheader(image).get("FREQ", 1.4e9))
        iqa = json.loads(Path(f"{image}.json").read_text())["qa"]
        pqa = json.loads(Path(f"{table}.json").read_text())["qa"]
        p = pd.read_parquet(table)
        p = p[p.source.isin(sky.index)]
        s = sky.loc[p.source]
        true = s.flux_jy.to_numpy() * (freq / 1.4e9) ** s.spectral_index.fillna(0).to_numpy()
        rows.append(p.assign(group=group, true=true, ratio=p.flux_jy / true, pull=(p.flux_jy - true) / p.flux_err_jy,
                             pull_stat=(p.flux_jy - true) / p.flux_err_stat_jy))
        sysrec = pqa.get("systematic") or {}
        images.append({"group": group, "grade": iqa.get("grade"), "rms_mjy": 1e3 * iqa["rms_jy"],
                       "thermal_mjy": 1e3 * iqa["thermal_rms_jy"], "rms_over_thermal": iqa["rms_over_thermal"],
                       "beam_arcsec": f'{iqa["beam_major_arcsec"]:.1f}x{iqa["beam_minor_arcsec"]:.1f}',
                       "systematic": sysrec.get("fraction"), "sys_err": sysrec.get("fraction_err"),
                       "sys_method": sysrec.get("method"), "sys_n": sysrec.get("n_sources")})
    if not rows:
        raise SystemExit(f"{res / 'photometry'}: no photometry tables")
    return pd.concat(rows, ignore_index=True), pd.DataFrame(images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="demo directory (holding truth/ and results/)")
    ap.add_argument("--min-snr", type=float, default=20.0)
    ap.add_argument("--csv", type=Path, help="write every measurement with its truth here")
    args = ap.parse_args(argv)
    m, images = measurements(args.run)
    if args.csv:
        m.to_csv(args.csv, index=False)
    bright = m[(m.snr > args.min_snr) & ((m["flags"].to_numpy() & ~GRADE_BITS) == 0)]
    field = bright[bright.source != "3C286"]
    # Expected number below 0.95 from the quoted errors: P(flux < 0.95 true) for each.
    expected = norm.cdf((0.95 * field.true - field.true) / field.flux_err_jy).sum()
    expected_stat = norm.cdf((0.95 * field.true - field.true) / field.flux_err_stat_jy).sum()
    low = field[field.ratio < 0.95]
    p_low = float(poisson.sf(len(low) - 1, expected)) if len(low) else 1.0
    strong = field[field.snr > 100]  # there 0.95 is a cut at >= 3 sigma of the quoted error
    cal = m[m.source == "3C286"].iloc[0] if (m.source == "3C286").any() else None
    if cal is not None:
        field = field.assign(dist_3c286_arcmin=60 * angular_distance(field.ra_deg, field.dec_deg, cal.ra_deg, cal.dec_deg))
        low = field[field.ratio < 0.95]
    print(f"{args.run}: {len(bright)} measurements above {args.min_snr:g} sigma, {len(field)} of field sources")
    print(f"field median {field.ratio.median():.4f}  robust scatter {width(field.ratio):.4f}  "
          f"lowest {field.ratio.min():.3f}  below 0.95: {len(low)} (expected from the quoted errors "
          f"{expected:.1f}; from the statistical errors alone {expected_stat:.1f}; P(>= {len(low)} | "
          f"{expected:.1f}) = {p_low:.2f}); above 100 sigma {(strong.ratio < 0.95).sum()} of {len(strong)} below 0.95")
    for _, r in low.sort_values("ratio").iterrows():
        print(f"  low: {r.group} {r.source} ratio {r.ratio:.3f} snr {r.snr:.0f} pb {r.pb:.2f} pull {r.pull:+.2f}"
              + (f" {r.dist_3c286_arcmin:.0f}' from 3C286" if "dist_3c286_arcmin" in r else ""))
    for lo, hi in ((args.min_snr, 40), (40, 80), (80, 160), (160, np.inf)):
        sel = field[(field.snr > lo) & (field.snr <= hi)]
        if len(sel):
            print(f"  snr {lo:g}-{hi:g}: n {len(sel)} median ratio {sel.ratio.median():.4f}")
    cal = bright[bright.source == "3C286"]
    print("3C286 ratio:", ", ".join(f"{g} {r:.4f}" for g, r in zip(cal.group, cal.ratio)))
    print(f"pulls: median {bright.pull.median():+.3f} width {width(bright.pull):.3f} (std {bright.pull.std():.3f}); "
          f"statistical error alone: median {bright.pull_stat.median():+.2f} width {width(bright.pull_stat):.2f}")
    images["field_median"] = [field[field.group == g].ratio.median() for g in images.group]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(images.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
