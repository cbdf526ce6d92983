"""The faint-calibrator bandpass rule and smoother (:mod:`dsa110_contimg.calibration.bandpass`), on
arrays with a known truth: the simulator's kind of bandpass (ripple of 20-80 MHz period, delay)
plus the noise the radiometer equation predicts."""

from __future__ import annotations

import numpy as np
import pytest

from dsa110_contimg.calibration import bandpass

FREQ = 1.3114e9 + np.arange(768) * 244140.625
WIDTH = 244140.625


def test_predicted_snr_is_the_radiometer_equation():
    # Full size: 96 antennas, 24 integrations of 12.88 s, 244 kHz, SEFD 5800 Jy: ~20.7 per Jy.
    snr = bandpass.channel_snr(1.0, 96, 24, WIDTH, 12.884901888, 5800.0)
    assert snr == pytest.approx(np.sqrt(95 * 24) * np.sqrt(2 * WIDTH * 12.884901888) / 5800.0)
    assert 20 < snr < 21.5
    # Components add in quadrature, averaged over time.
    assert bandpass.effective_flux(np.array([[3.0, 3.0], [4.0, 4.0]])) == pytest.approx(5.0)


@pytest.mark.parametrize(("snr", "window"), [(200.0, 1), (150.0, 1), (100.0, 7), (37.0, 39), (10.0, 39)])
def test_window_is_the_fewest_channels_reaching_the_target_within_the_span(snr, window):
    choice = bandpass.choose_window(snr, 150.0, WIDTH, 10e6)
    assert choice.window == window
    assert choice.window * WIDTH <= 10e6
    if window == 1:
        assert choice.snr_smoothed == snr
    elif choice.snr_smoothed >= 150.0:
        assert 150.0 > snr / bandpass.noise_factor(window - 2), "the fewest channels"
    else:
        assert (window + 2) * WIDTH > 10e6, "capped by the span"
    # Channels wider than a third of the span: nothing to smooth with.
    assert bandpass.choose_window(snr, 150.0, 2.93e6, 10e6).window == 1
    assert bandpass.choose_window(snr, 150.0, WIDTH, 0.0).window == 1


def test_noise_factor_is_the_local_quadratic_centre_variance():
    for w in (5, 9, 21):
        x = np.arange(w) - w // 2
        centre = np.linalg.pinv(np.vstack([x**0, x, x**2]).T)[0]
        assert bandpass.noise_factor(w) == pytest.approx(np.sqrt(np.sum(centre**2)))


def test_smoothing_reaches_the_predicted_noise_keeps_the_ripple_and_fills_rfi_channels():
    rng = np.random.default_rng(3)
    true = (1 + 0.1 * np.sin(2 * np.pi * (FREQ - 1.4e9) / 20e6)) * np.exp(2j * np.pi * 2e-9 * (FREQ - 1.4e9))
    true = np.tile(true[None, :, None], (2, 1, 40))  # (pol, chan, antenna)
    snr = 37.0
    noisy = true + (rng.standard_normal(true.shape) + 1j * rng.standard_normal(true.shape)) / snr
    flags = np.zeros(true.shape, bool)
    flags[:, 300:305] = True  # narrow-band RFI on the calibrator
    flags[:, :2, 0] = True  # band edge of one antenna
    choice = bandpass.choose_window(snr, 150.0, WIDTH, 10e6)
    smoothed, new_flags = bandpass.smooth(noisy, flags, FREQ, choice.window)
    err = np.abs(smoothed / true) - 1
    before = np.sqrt(np.mean((np.abs(noisy / true) - 1)[~flags] ** 2))
    after = np.sqrt(np.mean(err[~new_flags] ** 2))
    assert before == pytest.approx(1 / snr, rel=0.05)
    assert after == pytest.approx(1 / choice.snr_smoothed, rel=0.15)
    assert not new_flags[:, 300:305].any(), "RFI channels inside the band are filled"
    assert np.sqrt(np.mean(err[:, 300:305] ** 2)) < 2 / choice.snr_smoothed
    assert new_flags[:, :2, 0].all() and not new_flags[:, :2, 1:].any(), "no extrapolation past the edge"
    noiseless, _ = bandpass.smooth(true, flags, FREQ, choice.window)
    bias = np.abs(noiseless / true - 1)
    # A 10% ripple of the shortest period over a 9.5 MHz window keeps ~98%: 0.12% rms, far below the noise.
    assert bias.max() < 0.004 and np.sqrt(np.mean(bias**2)) < 0.0015, "the 20 MHz ripple and the delay survive"
