"""Bytes kept per observation, by product, against the raw size.

    .venv/bin/python benchmarks/disk.py RESULTS_DIR RAW_DIR     # a run's folders (e.g. make demo's)
    .venv/bin/python benchmarks/disk.py --full-size             # the full-size figures from the formats

Measured: every file under RESULTS_DIR by product class
(dsa110_contimg.monitoring.disk.kept_by_product), per imaged observation,
and the ratio to the raw bytes per observation (target <= 0.10).

--full-size computes what one full-size observation keeps from the sizes the
formats fix (96 antennas, 4,656 baselines with autos, 24 integrations, 768
channels, 2 polarisations; 4096^2 float32 images) under the retention policy
(retention.intermediates: temp removes both Measurement Sets), for today's
five images per observation and for one primary beam per declination with a
cropped PSF (both still to do in imaging/, issue 17).
"""

from __future__ import annotations

import argparse
import json
import sys

N_BLT = 4656 * 24
N_FREQ_SB, N_SB, N_POL = 48, 16, 2
IMSIZE = 4096
FITS_BLOCK = 2880


def _fits_bytes(n_pix: int, bytes_per_pix: int = 4) -> int:
    data = n_pix * bytes_per_pix
    return FITS_BLOCK * (1 + -(-data // FITS_BLOCK))


def full_size() -> dict:
    # UVH5 per subband: visdata complex64 + flags bool + nsamples float32, plus uvw/time/ant arrays (small).
    raw = N_SB * N_BLT * N_FREQ_SB * N_POL * (8 + 1 + 4)
    image = _fits_bytes(IMSIZE * IMSIZE)
    psf_crop = _fits_bytes(512 * 512)
    today = {"image": image, "residual": image, "pbcor": image, "psf": image, "pb": image,
             "thumbnail": 200_000, "photometry+sidecars": 300_000}
    planned = dict(today, psf=psf_crop, pb=image / 280)  # one primary beam per declination (~280 obs/day)
    return {"raw_per_observation": raw,
            "kept_today": sum(today.values()), "kept_fraction_today": sum(today.values()) / raw,
            "kept_planned": sum(planned.values()), "kept_fraction_planned": sum(planned.values()) / raw,
            "by_product_today": today, "by_product_planned": planned}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir", nargs="?")
    p.add_argument("raw_dir", nargs="?")
    p.add_argument("--full-size", action="store_true")
    args = p.parse_args(argv)
    if args.full_size:
        f = full_size()
        print(f"raw per observation: {f['raw_per_observation'] / 1e9:.3f} GB")
        for key in ("today", "planned"):
            print(f"kept ({key}): {f['kept_' + key] / 1e6:.0f} MB = {f['kept_fraction_' + key]:.3f} of raw")
            for k, v in f["by_product_" + key].items():
                print(f"  {k:22} {v / 1e6:9.1f} MB")
        return 0
    if not (args.results_dir and args.raw_dir):
        p.error("give RESULTS_DIR RAW_DIR, or --full-size")
    from dsa110_contimg.monitoring.disk import kept_by_product

    out = kept_by_product(args.results_dir, args.raw_dir)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
