"""The per-image systematic flux error estimated from reference sources (photometry.systematic)."""

from __future__ import annotations

import numpy as np
import pytest

from dsa110_contimg.config import ConfigError, validate_config
from dsa110_contimg.photometry import systematic as sm

LIMITS = dict(floor=0.0, cap=0.2, min_sources=8, fallback=0.03)


def references(n, systematic, scale=1.0, seed=0, outliers=0):
    """``n`` reference sources of 0.3-10 Jy measured at 2 mJy noise with a per-source ``systematic``
    and a common ``scale``; ``outliers`` of them at half their flux (variable sources)."""
    rng = np.random.default_rng(seed)
    cat = np.geomspace(0.3, 10.0, n)
    rng.shuffle(cat)
    err = np.full(n, 2e-3)
    flux = cat * scale * (1 + rng.normal(0, systematic, n)) + rng.normal(0, 1, n) * err
    flux[:outliers] *= 0.5
    return flux, err, cat


@pytest.mark.parametrize("injected", [0.0125, 0.03])
def test_injected_systematic_is_recovered_within_its_error(injected):
    """Over 40 independent images of 40 references: each estimate's quoted bootstrap error covers the
    injected value about as often as a 1-sigma error should, the mean is unbiased, and the quoted error
    agrees with the image-to-image scatter of the estimates."""
    est = [sm.estimate_systematic(*references(40, injected, seed=s), **LIMITS) for s in range(40)]
    values = np.array([e.fraction for e in est])
    errors = np.array([e.fraction_err for e in est])
    assert all(e.method == "estimated" and e.n_sources == 40 for e in est)
    covered = np.mean(np.abs(values - injected) <= errors)
    print(f"injected {injected}: mean {values.mean():.4f} sd {values.std():.4f} quoted err {np.median(errors):.4f} "
          f"1-sigma coverage {covered:.2f}")
    assert abs(values.mean() - injected) < 0.1 * injected
    assert 0.7 < np.median(errors) / values.std() < 1.4
    assert 0.55 <= covered <= 0.85


def test_statistical_errors_alone_give_the_floor():
    """No systematic injected: the noise explains the scatter; the estimate sits at the configured floor."""
    flux, err, cat = references(40, 0.0)
    err = err + 0.01 * cat  # sources whose statistical error is large: the scatter is all noise
    flux = cat + np.random.default_rng(1).normal(0, 1, 40) * err
    est = sm.estimate_systematic(flux, err, cat, floor=0.005, cap=0.1, min_sources=8, fallback=0.03)
    assert est.fraction == 0.005 and est.clipped == "floor"


def test_a_flux_scale_offset_counts_into_the_systematic():
    """Every source 4% high with 1% scatter: the image's scale error is an error of each of its
    measurements, so the fraction is about sqrt(1%^2 + 4%^2)."""
    est = sm.estimate_systematic(*references(60, 0.01, scale=1.04, seed=3), **LIMITS)
    assert est.scale_ratio == pytest.approx(1.04, abs=0.005)
    assert est.scatter == pytest.approx(0.01, abs=0.004)
    assert est.fraction == pytest.approx(np.hypot(0.01, 0.04), abs=0.005)


def test_a_few_variable_references_do_not_inflate_it():
    """Three of 40 references at half their catalogue flux change the robust estimate little."""
    clean = sm.estimate_systematic(*references(40, 0.015, seed=5), **LIMITS)
    dirty = sm.estimate_systematic(*references(40, 0.015, seed=5, outliers=3), **LIMITS)
    assert abs(dirty.fraction - clean.fraction) < 0.005
    assert dirty.fraction < 0.03


def test_too_few_references_fall_back_and_say_so():
    est = sm.estimate_systematic(*references(5, 0.02), floor=0.005, cap=0.1, min_sources=8, fallback=0.03)
    assert (est.method, est.fraction, est.n_sources) == ("fallback", 0.03, 5)
    assert "fewer than 8" in est.reason


def test_the_cap_bounds_a_broken_image():
    est = sm.estimate_systematic(*references(40, 0.3, seed=2), floor=0.005, cap=0.1, min_sources=8, fallback=0.03)
    assert est.fraction == 0.1 and est.clipped == "cap"


def test_reference_selection_uses_snr_and_flags():
    mask = sm.reference_mask(np.array([50.0, 50.0, 10.0, np.nan, 30.0]), np.array([0, 4, 0, 0, 64]), 20.0, 64)
    assert mask.tolist() == [True, False, False, False, True]


def test_config_takes_auto_or_a_number():
    assert validate_config({})["photometry"]["systematic_fraction"] == "auto"
    assert validate_config({"photometry": {"systematic_fraction": 0.02}})["photometry"]["systematic_fraction"] == 0.02
    for bad in ("automatic", -0.01):
        with pytest.raises(ConfigError, match="photometry.systematic_fraction"):
            validate_config({"photometry": {"systematic_fraction": bad}})


def test_forced_photometry_of_images_recovers_the_injected_per_source_error():
    """Synthetic images whose 25 sources carry a 2% per-source error (primary-beam and deconvolution
    errors) and no scale error: each image's estimate (table attrs, as in the sidecar) lies within twice
    its quoted error of the scatter actually drawn, their mean within twice its error, and a fixed
    number in the config is used as given."""
    import pandas as pd

    from dsa110_contimg.photometry import forced as ph
    from dsa110_contimg.sim import variability as sv

    offs = (np.arange(5) - 2) * 0.07
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    src = pd.DataFrame({"name": [f"S{i:03d}" for i in range(25)], "ra_deg": 150.0 + dx.ravel() / np.cos(np.radians(33.0)),
                        "dec_deg": 33.0 + dy.ravel(), "flux_jy": np.geomspace(0.05, 0.5, 25)})
    rng = np.random.default_rng(7)
    found, errors, drawn = [], [], []
    for k in range(12):
        delta = rng.normal(0, 0.02, len(src))
        img = sv.synthetic_image(src.assign(flux_jy=src.flux_jy * (1 + delta)), shape=(320, 320), noise_jy=1e-3,
                                 seed=200 + k)
        images = ph.ImageSet(img.pbcor, img.wcs, img.header, ph.Beam.from_header(img.header), img.pb, img.residual)
        m = ph.measure_catalogue(images, src, 60841.0)
        est = m.attrs["systematic"]
        assert est["method"] == "estimated" and est["n_sources"] >= 20
        assert np.allclose(m.flux_err_jy, np.hypot(m.flux_err_stat_jy, est["fraction"] * m.flux_jy.abs()))
        found.append(est["fraction"])
        errors.append(est["fraction_err"])
        drawn.append(np.std(delta))
    found, errors, drawn = map(np.array, (found, errors, drawn))
    print(f"per-image estimates of an injected 2% (drawn {drawn.mean():.4f}): mean {found.mean():.4f} "
          f"sd {found.std():.4f}, quoted errors {np.median(errors):.4f}")
    assert np.mean(np.abs(found - drawn) <= 2 * errors) >= 0.8
    assert abs(found.mean() - drawn.mean()) <= 2 * np.sqrt(np.sum(errors**2)) / len(found)
    fixed = ph.measure_catalogue(images, src, 60841.0, ph.PhotometryOptions(systematic_fraction=0.03))
    assert fixed.attrs["systematic"]["method"] == "configured" and fixed.attrs["systematic"]["fraction"] == 0.03
