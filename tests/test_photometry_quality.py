"""Honest errors and quality carried forward: photometry pulls with the systematic term,
image grades as measurement flags through to the light curves."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsa110_contimg import naming
from dsa110_contimg.config import validate_config
from dsa110_contimg.photometry import forced as ph
from dsa110_contimg.photometry.forced import Flag
from dsa110_contimg.provenance import read_sidecar, write_sidecar
from dsa110_contimg.sim import variability as sv
from dsa110_contimg.stages import photometry as stage

RA0, DEC0 = 150.0, 33.0


def grid(n_side=5, spacing_deg=0.07, fluxes=None):
    offs = (np.arange(n_side) - (n_side - 1) / 2) * spacing_deg
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    flux = np.geomspace(0.01, 0.5, n_side**2) if fluxes is None else np.asarray(fluxes)
    return pd.DataFrame({"name": [f"S{i:03d}" for i in range(n_side**2)],
                         "ra_deg": RA0 + dx.ravel() / np.cos(np.radians(DEC0)), "dec_deg": DEC0 + dy.ravel(),
                         "flux_jy": flux})


def imperfect_epochs(src, n_images=24, scale_rms=0.02, direction_rms=0.02, seed=0):
    """Images of ``src`` whose calibration is imperfect the way real ones are.

    Every image has a flux-scale error common to all its sources (``scale_rms``,
    a gain amplitude error) and a per-source error (``direction_rms``: primary-beam
    model and deconvolution errors); the truth is the catalogue flux. Returns
    (ImageSet, truth) pairs.
    """
    rng = np.random.default_rng(seed)
    for k in range(n_images):
        seen = src.copy()
        seen["flux_jy"] = src.flux_jy * (1 + rng.normal(0, scale_rms)) * (1 + rng.normal(0, direction_rms, len(src)))
        img = sv.synthetic_image(seen, shape=(320, 320), noise_jy=1e-3, seed=100 + k)
        yield ph.ImageSet(img.pbcor, img.wcs, img.header, ph.Beam.from_header(img.header), img.pb, img.residual)


def pulls(systematic_fraction):
    src = grid()
    opts = ph.PhotometryOptions(systematic_fraction=systematic_fraction)
    out = []
    for images in imperfect_epochs(src):
        m = ph.measure_catalogue(images, src, 60841.0, opts)
        true = src.set_index("name").loc[m.source, "flux_jy"].to_numpy()
        out.append(pd.DataFrame({"pull": (m.flux_jy - true) / m.flux_err_jy, "snr": true / m.flux_err_stat_jy}))
    return pd.concat(out, ignore_index=True)


def test_pulls_of_bright_sources_have_unit_width_with_the_systematic_term():
    """Sources above 20 sigma on images with 2% scale and 2% per-source errors: the schema's
    systematic term gives pulls of width 1 +- 0.2 and median within 0.2; without it they are far too wide."""
    default = validate_config({})["photometry"]["systematic_fraction"]
    with_sys = pulls(default)
    bright = with_sys[with_sys.snr > 20]
    width = 1.4826 * np.median(np.abs(bright.pull - bright.pull.median()))
    print(f"systematic {default}: {len(bright)} pulls above 20 sigma, median {bright.pull.median():+.3f}, "
          f"width {width:.3f} (std {bright.pull.std():.3f})")
    assert len(bright) > 300
    assert abs(width - 1) <= 0.2 and abs(bright.pull.std() - 1) <= 0.2
    assert abs(bright.pull.median()) <= 0.2
    no_sys = pulls(0.0)
    bright0 = no_sys[no_sys.snr > 20]
    assert bright0.pull.std() > 1.5  # the statistical error alone misses the systematic part
    # faint sources keep their statistical errors: the term changes little below 20 sigma
    faint = with_sys[with_sys.snr < 10]
    assert abs(faint.pull.std() - 1) < 0.2


def test_total_error_is_the_quadrature_sum():
    err = ph.total_error(np.array([1.0, -2.0, 0.0]), np.array([0.03, 0.0, 0.01]), 0.04)
    assert err == pytest.approx([0.05, 0.08, 0.01])


def test_grade_flags():
    assert ph.grade_flag("good") == 0 and ph.grade_flag(None) == 0
    assert ph.grade_flag("marginal") == Flag.MARGINAL_IMAGE and ph.grade_flag("bad") == Flag.BAD_IMAGE
    assert ph.flag_mask(["bad_image", "marginal_image"]) == Flag.BAD_IMAGE | Flag.MARGINAL_IMAGE


def _grade(path, grade):
    side = read_sidecar(f"{path}.json")
    side["qa"]["image_grade"] = grade
    write_sidecar(path, kind="photometry", group=side["group"], inputs=[], qa=side["qa"])


def test_bad_and_marginal_images_are_flagged_in_the_light_curves_not_dropped(tmp_path):
    mjds = 60841.0 + np.arange(6)
    pop = sv.draw_population(8, mjd_range=(mjds[0], mjds[-1]), flux_range=(0.1, 0.5), seed=2)
    mjds = 60841.0 + np.arange(6)
    files, _ = sv.synthetic_photometry(tmp_path / "results", pop, mjds, noise_jy=1e-3, scale_rms=0.0, seed=3)
    _grade(files[1], "bad")
    _grade(files[2], "marginal")
    for f in files[3:]:  # the rest bad too: a night where calibration went wrong
        _grade(f, "bad")

    def run(**variability):
        cfg = validate_config({"variability": variability})
        outs = {k: v for k, v in naming.rule_outputs(tmp_path / "results", "lightcurves", name=f"lc{len(variability)}").items() if not k.endswith("_sidecar")}
        qa = stage.build_lightcurves([str(f) for f in files], outs, stage.LightcurveOptions.from_config(cfg),
                                     logging.getLogger("test_photometry_quality"))
        return qa, pq.read_table(outs["lightcurves"]).to_pandas(), pd.read_parquet(outs["variability"])

    qa, lc, var = run()
    assert qa["n_files_skipped"] == 0 and qa["n_epochs"] == 6
    assert qa["n_epochs_bad_image"] == 4 and qa["n_epochs_marginal_image"] == 1
    assert len(lc) == 6 * 8 and (var.n_epochs == 6).all()
    grade_bits = int(Flag.BAD_IMAGE | Flag.MARGINAL_IMAGE)
    per_epoch = lc.assign(g=lc["group"].astype(str), bits=lc["flags"].to_numpy() & grade_bits).groupby("g")["bits"]
    assert sorted(sorted(set(v)) for _, v in per_epoch) == sorted([[0]] + [[int(Flag.BAD_IMAGE)]] * 4 + [[int(Flag.MARGINAL_IMAGE)]])
    # excluding bad images from the metrics is a choice in the config, named
    qa2, lc2, var2 = run(exclude_flags=["edge", "nan_pixels", "no_data", "no_rms", "bad_image"])
    assert len(lc2) == 2 * 8 and (var2.n_epochs == 2).all()
    # the old behaviour, a whole table left out, still exists and says so
    qa3, _, _ = run(skip_bad_images=True)
    assert qa3["n_files_skipped"] == 4 and all(s["reason"] == "image graded bad" for s in qa3["skipped"])
