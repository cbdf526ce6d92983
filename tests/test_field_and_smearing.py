"""Image geometry from the primary and synthesised beams, and the smearing budget of averaging.

Checked against hand computation (the Airy radius solved here independently,
FFT-friendly sizes listed by hand) and against the analytic smearing formulas
of Bridle & Schwab (1999) for a Gaussian uv taper.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import j1

from dsa110_contimg.imaging import field, primary_beam, smearing

C = 299792458.0
ARCSEC = np.pi / 180 / 3600
D = 4.65


def airy(theta, freq):
    x = np.maximum(np.pi * D * np.abs(np.sin(theta)) * freq / C, 1e-9)
    return (2 * j1(x) / x) ** 2


@pytest.mark.parametrize("cutoff", [0.1, 0.2, 0.5])
def test_airy_cutoff_radius_by_hand(cutoff):
    freq = 1.3114e9
    # x where [2 J1(x)/x]^2 = cutoff, then sin(theta) = x lambda / (pi D)
    x = brentq(lambda x: (2 * j1(x) / x) ** 2 - cutoff, 0.1, 3.83)
    expected = np.arcsin(x * C / freq / (np.pi * D))
    assert field.airy_cutoff_radius_rad(freq, cutoff) == pytest.approx(expected, rel=1e-6)
    if cutoff == 0.5:  # the half-power radius is half the FWHM, 1.029 lambda / D
        assert 2 * expected == pytest.approx(1.02899 * C / freq / D, rel=1e-3)


def test_smooth_sizes():
    assert field.smooth_size(1021) == 1024
    assert field.smooth_size(1025) == 1050  # 2 3 5^2 7; 1026..1048 all have a prime factor > 7
    assert field.smooth_size(629.6) == 630
    assert field.smooth_size(5881) == 6000


def test_cell_is_the_fringe_over_pixels_per_beam():
    # lambda at 1.4986 GHz over 4500 m = 9.17" -> / 3 = 3.057" -> 3.05 (3 significant figures, down)
    assert field.cell_arcsec(1.4986e9, 4500.0, 3) == 3.05
    assert field.cell_arcsec(1.4986e9, 521.0, 3) == 26.3  # 79.199" / 3 = 26.3997, rounded down


def _pointing(ra, dec, freq, weights=None):
    ra = np.atleast_1d(ra)
    w = np.ones((ra.size, 1)) if weights is None else np.asarray(weights, float).reshape(ra.size, 1)
    return primary_beam.DriftPointing(jd=np.full(ra.size, 2460842.5), ra_rad=ra, dec_rad=np.full(ra.size, dec),
                                      freq_hz=np.array([freq]), weights=w, dec_app_rad=dec)


def test_half_width_of_one_pointing_is_the_airy_radius():
    p = _pointing(1.0, 0.3, 1.4e9)
    half = field.beam_half_width_rad(p, 1.0, 0.3, 0.1)
    assert half == pytest.approx(field.airy_cutoff_radius_rad(1.4e9, 0.1), rel=2e-3)


def test_half_width_of_a_drift_by_hand():
    """Two pointings +-s on the equator: the RA half width solves (A(d - s) + A(d + s)) / 2 = cut-off."""
    s = np.radians(0.55)
    p = _pointing(np.array([1.0 - s, 1.0 + s]), 0.0, 1.4e9)
    expected = brentq(lambda d: (airy(d - s, 1.4e9) + airy(d + s, 1.4e9)) / 2 - 0.1, s, np.radians(4))
    assert field.beam_half_width_rad(p, 1.0, 0.0, 0.1) == pytest.approx(expected, rel=2e-3)
    # the Dec extent is smaller, so the RA extent sets the field
    assert expected > field.airy_cutoff_radius_rad(1.4e9, 0.1)


def test_field_size_by_hand():
    half = np.radians(2.3)
    size = field.field_size(half, 1.4986e9, 4500.0, 3)
    n_hand = 2 * 2.3 * 3600 / 3.05  # 5429.5 -> next 2,3,5,7-smooth even number
    assert size.cell_arcsec == 3.05 and size.imsize == field.smooth_size(n_hand) == 5488
    assert size.field_deg >= 4.6
    assert field.field_size(half, 1.4986e9, 4500.0, 3, cell=10.0).imsize == field.smooth_size(2 * 2.3 * 360)


# ------------------------------------------------------------------ smearing

SIGMA_U_M = 800.0  # Gaussian uv taper (m)
FREQ = 1.4e9


def _gaussian_uv(n=400_000, seed=3):
    rng = np.random.default_rng(seed)
    uvw = np.zeros((n, 3))
    uvw[:, :2] = rng.normal(0, SIGMA_U_M, (n, 2))
    return uvw


def _theta_b():
    """FWHM of the PSF of a Gaussian uv taper sigma_u (wavelengths): 2 sqrt(2 ln 2) / (2 pi sigma_u)."""
    sigma_l = 1 / (2 * np.pi * SIGMA_U_M * FREQ / C)
    return 2 * np.sqrt(2 * np.log(2)) * sigma_l


@pytest.mark.parametrize("theta_deg", [0.5, 1.5, 2.5])
def test_bandwidth_smearing_matches_bridle_schwab(theta_deg):
    uvw = _gaussian_uv()
    theta = np.radians(theta_deg)
    dnu = 3.0e6
    got = smearing.peak_fraction(uvw, np.ones(len(uvw)), FREQ, 0.5, theta, 0.0, dnu, 0.0)
    expected = smearing.bandwidth_smearing_gaussian(dnu / FREQ, theta, _theta_b())
    assert 0.5 < expected < 0.999
    assert got == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("tau_s", [10.0, 30.0])
def test_time_smearing_at_the_pole_matches_bridle_schwab(tau_s):
    uvw = _gaussian_uv()
    theta = np.radians(1.0)
    got = smearing.peak_fraction(uvw, np.ones(len(uvw)), FREQ, np.pi / 2, theta, 0.0, 0.0, tau_s)
    expected = smearing.time_smearing_gaussian_pole(tau_s, theta, _theta_b())
    assert 0.9 < expected < 0.999
    assert 1 - got == pytest.approx(1 - expected, rel=0.05)


def test_plan_takes_the_most_averaging_within_the_budget():
    uvw = _gaussian_uv(100_000)
    w = np.ones(len(uvw))
    radius = np.radians(2.0)
    dnu, tau = 244140.625, 12.884901888
    plan = smearing.plan_averaging(uvw, w, FREQ, np.radians(30), radius, dnu, tau, 768, 24, budget=0.01)

    def extra(m, k):
        worst = 0.0
        for pa in np.linspace(0, np.pi, 12, endpoint=False):
            l_, m_ = radius * np.sin(pa), radius * np.cos(pa)
            r = smearing.peak_fraction(uvw, w, FREQ, np.radians(30), l_, m_, m * dnu, k * tau)
            r0 = smearing.peak_fraction(uvw, w, FREQ, np.radians(30), l_, m_, dnu, tau)
            worst = max(worst, 1 - r / r0)
        return worst

    assert plan.channels * plan.integrations > 1
    assert extra(plan.channels, plan.integrations) == pytest.approx(plan.extra_loss, abs=1e-9)
    assert plan.extra_loss <= 0.01
    # the next larger averaging in either direction breaks the budget (or is not a candidate)
    bigger_m = [m for m in smearing.divisors(768, 16) if m > plan.channels]
    bigger_k = [k for k in smearing.divisors(24, 8) if k > plan.integrations]
    if bigger_m:
        assert extra(bigger_m[0], plan.integrations) > 0.01
    if bigger_k:
        assert extra(plan.channels, bigger_k[0]) > 0.01
    assert 0 < plan.native_loss < 1


def test_fixed_factors_are_kept_and_a_bad_budget_is_refused():
    uvw = _gaussian_uv(10_000)
    w = np.ones(len(uvw))
    plan = smearing.plan_averaging(uvw, w, FREQ, 0.5, 0.04, 244e3, 12.9, 768, 24, channels=4, integrations=1)
    assert (plan.channels, plan.integrations) == (4, 1)
    with pytest.raises(ValueError, match="budget"):
        smearing.plan_averaging(uvw, w, FREQ, 0.5, 0.04, 244e3, 12.9, 768, 24, budget=0)


def _uvw_3d(n=200_000, seed=5):
    """An anisotropic coverage with w, so bandwidth and time smearing both depend on the direction."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(0, 900, n), rng.normal(0, 300, n), rng.normal(0, 200, n)])


def test_response_matches_peak_fraction_at_every_direction():
    uvw = _uvw_3d()
    rng = np.random.default_rng(1)
    w = rng.uniform(0.2, 1.0, len(uvw))
    w[::7] = 0.0  # flagged samples carry no weight
    freq = rng.uniform(1.31e9, 1.49e9, len(uvw))
    dec = np.radians(55.0)
    l, m = np.array([0.0, 0.03, -0.02, 0.01]), np.array([0.0, 0.01, 0.035, -0.04])  # noqa: E741
    got = smearing.response(uvw, w, freq, dec, l, m, 488e3, 25.8)
    ratio = smearing.response(uvw, w, freq, dec, l, m, 488e3, 25.8, native=(2, 2))
    for i in range(l.size):
        total = smearing.peak_fraction(uvw, w, freq, dec, l[i], m[i], 488e3, 25.8)
        native = smearing.peak_fraction(uvw, w, freq, dec, l[i], m[i], 244e3, 12.9)
        assert got[i] == pytest.approx(total, abs=2e-6)
        assert ratio[i] == pytest.approx(total / native, abs=2e-6)
    assert got[0] == pytest.approx(1.0, abs=1e-6) and got[1:].max() < 0.99  # the test sees real smearing


def test_response_image_interpolates_the_exact_response():
    """The map on an image's pixels (computed on a coarse grid, splined) against R computed at those pixels."""
    from types import SimpleNamespace

    from astropy.wcs import WCS

    from dsa110_contimg.imaging import smearing_map

    rng = np.random.default_rng(2)
    uvw = _uvw_3d(60_000)
    freq = np.linspace(1.311e9, 1.499e9, 64)
    info = SimpleNamespace(uvw=uvw, freq_hz=freq, chan_width_hz=np.full(64, 2 * 244140.625),
                           exposure_s=np.full(len(uvw), 12.884901888), field_ra_rad=1.0, field_dec_rad=np.radians(60),
                           path="synthetic")
    noise = SimpleNamespace(sample_channels=np.array([4, 20, 36, 52]),
                            sample_weights=rng.uniform(0.5, 1.0, (len(uvw), 4)))
    n, cell = 2000, 8.0 / 3600
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [np.degrees(1.0), 60.0]
    wcs.wcs.crpix = [n / 2 + 1, n / 2 + 1]
    wcs.wcs.cdelt = [-cell, cell]
    for averaged in (None, (2, 1)):
        image = smearing_map.response_image(wcs, (n, n), info, noise, averaged=averaged)
        ys, xs = rng.integers(0, n, 12), rng.integers(0, n, 12)
        ra, dec = wcs.all_pix2world(xs, ys, 0)
        l, m = smearing_map.direction_cosines(np.radians(ra), np.radians(dec), 1.0, np.radians(60))  # noqa: E741
        exact = smearing.response(**smearing_map.samples(info, noise), l=l, m=m, native=averaged)
        assert 1 - exact.min() > 0.003  # the pixels lose a measurable fraction
        np.testing.assert_allclose(image[ys, xs], exact, atol=1e-3 * (1 - exact.min()))
    assert np.all(smearing_map.response_image(wcs, (n, n), info, noise, averaged=(1, 1)) == 1.0)


def test_plan_with_the_correction_bounds_the_residual():
    """With the image correcting smearing, the budget bounds model_error x loss: more averaging than without."""
    uvw = _gaussian_uv(100_000)
    w = np.ones(len(uvw))
    radius = np.radians(2.0)
    dnu, tau = 244140.625, 12.884901888
    args = (uvw, w, FREQ, np.radians(30), radius, dnu, tau, 768, 24)
    plain = smearing.plan_averaging(*args, budget=0.01)
    corrected = smearing.plan_averaging(*args, budget=0.01, correction="averaging", model_error=0.4)
    total = smearing.plan_averaging(*args, budget=0.01, correction="total", model_error=0.4)
    assert corrected.channels * corrected.integrations > plain.channels * plain.integrations
    assert corrected.residual == pytest.approx(0.4 * corrected.extra_loss) and corrected.residual <= 0.01
    assert total.residual == pytest.approx(0.4 * total.total_loss) and total.residual <= 0.01
    assert total.total_loss > total.extra_loss  # the total includes the native channels' own loss
    bigger = [m for m in smearing.divisors(768, 16) if m > corrected.channels]
    if bigger:
        again = smearing.plan_averaging(*args, budget=0.01, correction="averaging", model_error=0.4,
                                        channels=bigger[0], integrations=corrected.integrations)
        assert again.residual > 0.01
    with pytest.raises(ValueError, match="correction"):
        smearing.plan_averaging(*args, correction="peak")
