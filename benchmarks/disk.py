"""Bytes kept per observation, by product, against the raw size.

    .venv/bin/python benchmarks/disk.py RESULTS_DIR RAW_DIR     # a run's folders (e.g. make demo's)
    .venv/bin/python benchmarks/disk.py --full-size             # the full-size figures from the formats

Measured: every file under RESULTS_DIR by product class
(dsa110_contimg.monitoring.disk.kept_by_product), per imaged observation,
and the ratio to the raw bytes per observation (target <= 0.10).

--full-size computes what one full-size observation keeps from the sizes the
formats fix (96 antennas, 4,656 baselines with autos, 24 integrations, 768
channels, 2 polarisations; images of the whole primary beam, 5600^2 float32
at 3.09", imaging/field.py) under the retention policy: both Measurement
Sets removed (retention.intermediates: temp), the PSF cropped to
retention.psf_pixels, and with retention.compress_images the images
tile-compressed at the ratios measured on pipeline images (``--measure
IMAGE_PREFIX`` measures them again on one observation's images).
"""

from __future__ import annotations

import argparse
import json
import sys

N_BLT = 4656 * 24
N_FREQ_SB, N_SB, N_POL = 48, 16, 2
IMSIZE = 5600
PSF_PIXELS = 512
FITS_BLOCK = 2880
#: Compression ratios of retention.compress_images, measured with --measure on the demo's images
#: (2025-06-16T03:45:00): restored, residual and pbcor 4.7 (1/16 of the noise), beam 5.9 (1e-4 steps).
RATIOS = {"image": 4.7, "residual": 4.7, "pbcor": 4.7, "pb": 5.9}


def _fits_bytes(n_pix: int, bytes_per_pix: int = 4) -> int:
    data = n_pix * bytes_per_pix
    return FITS_BLOCK * (1 + -(-data // FITS_BLOCK))


def full_size() -> dict:
    # UVH5 per subband: visdata complex64 + flags bool + nsamples float32, plus uvw/time/ant arrays (small).
    raw = N_SB * N_BLT * N_FREQ_SB * N_POL * (8 + 1 + 4)
    image = _fits_bytes(IMSIZE * IMSIZE)
    plain = {"image": image, "residual": image, "pbcor": image, "pb": image, "psf": _fits_bytes(PSF_PIXELS**2),
             "thumbnail": 200_000, "photometry+sidecars": 300_000}
    packed = dict(plain, **{k: plain[k] / r for k, r in RATIOS.items()})
    return {"raw_per_observation": raw,
            "kept_plain": sum(plain.values()), "kept_fraction_plain": sum(plain.values()) / raw,
            "kept_compressed": sum(packed.values()), "kept_fraction_compressed": sum(packed.values()) / raw,
            "by_product_plain": plain, "by_product_compressed": packed}


def measure(prefix: str) -> dict:
    """Compression ratio of each image kind of one observation (``<prefix>.<kind>.fits``)."""
    import os
    import shutil
    import tempfile

    from dsa110_contimg import fitsimage

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, level in fitsimage.QUANTIZE.items():
            src, dst = f"{prefix}.{kind}.fits", os.path.join(tmp, f"{kind}.fits")
            shutil.copy(src, dst)
            fitsimage.compress(dst, level)
            out[kind] = os.path.getsize(src) / os.path.getsize(dst)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir", nargs="?")
    p.add_argument("raw_dir", nargs="?")
    p.add_argument("--full-size", action="store_true")
    p.add_argument("--measure", metavar="IMAGE_PREFIX", help="compression ratios of one observation's images")
    args = p.parse_args(argv)
    if args.measure:
        for kind, ratio in measure(args.measure).items():
            print(f"{kind:10} {ratio:5.2f}x")
        return 0
    if args.full_size:
        f = full_size()
        print(f"raw per observation: {f['raw_per_observation'] / 1e9:.3f} GB")
        for key in ("plain", "compressed"):
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
