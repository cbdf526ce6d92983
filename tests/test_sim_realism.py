"""The simulator's realistic sky and instrument: drifting gains, calibrator fields,
Perley-Butler 2017 standards, RFI with its mask, all recorded as truth."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.time import Time
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import geometry, telescope
from dsa110_contimg.calibration import standards
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.caltables import angular_separation
from dsa110_contimg.calibration.transits import calibrator_transits
from dsa110_contimg.sim.observation import GainModel, SimOptions, make_sky


def test_gains_random_walk_at_the_configured_rate():
    """Over 234 antenna-polarisations the rms change after 1 h is the configured 3% and 3 deg,
    and after 4 h twice that (a random walk grows as sqrt(t))."""
    n_steps = int(4 * 3600 / telescope.INTEGRATION_S)
    g = GainModel.draw(np.random.default_rng(1), 2460000.5, 1.0, True, walk_rng=np.random.default_rng(2),
                       n_steps=n_steps, amp_walk=0.03, phase_walk_deg=3.0)
    ants = np.arange(telescope.N_PADS)
    g.amp_period_h[:] = np.inf  # isolate the walk from the smooth drift
    g.phase_rate[:] = 0.0
    jd = g.walk_jd[[0, int(3600 / telescope.INTEGRATION_S), n_steps - 1]]
    gains = g.gain(ants, jd)
    ratio1, ratio4 = gains[:, 1] / gains[:, 0], gains[:, 2] / gains[:, 0]
    assert np.sqrt(np.mean(np.log(np.abs(ratio1)) ** 2)) == pytest.approx(np.log(1.03), rel=0.15)
    assert np.sqrt(np.mean(np.degrees(np.angle(ratio1)) ** 2)) == pytest.approx(3.0, rel=0.15)
    assert np.sqrt(np.mean(np.degrees(np.angle(ratio4)) ** 2)) == pytest.approx(6.0, rel=0.2)
    # Consecutive integrations differ only by a small step: continuous across observation boundaries.
    step = g.gain(ants, g.walk_jd[100:102])
    assert np.abs(np.angle(step[:, 1] / step[:, 0])).max() < np.radians(1.0)


def test_sky_around_a_calibrator_is_its_field_and_the_standard_is_perley_butler():
    opts = SimOptions(start=transit_start("3C286", 600), n_obs=2, dec_deg=30.5, n_sources=0)
    sky = make_sky(opts, np.random.default_rng(0))
    cal = sky.set_index("name").loc["3C286"]
    assert cal.kind == "calibrator" and cal.flux_standard == "Perley-Butler 2017"
    assert cal.flux_jy == pytest.approx(15.08, abs=0.01)  # PB2017 at 1.4 GHz, as setjy
    sep = np.degrees(angular_separation(np.radians(cal.ra_deg), np.radians(cal.dec_deg),
                                        np.radians(sky.ra_deg), np.radians(sky.dec_deg)))
    field = sky[(sky.kind == "field") & (sep <= 1.0)]
    assert len(field) == opts.field_sources and field.flux_jy.sum() == pytest.approx(opts.field_jy)
    assert (sep[field.index] >= 0.1).all()
    # The same field in every simulation (it is the sky, not noise) ...
    again = make_sky(replace(opts, seed=99), np.random.default_rng(5))
    pd.testing.assert_frame_equal(again[again.name.str.startswith("3C286_F")].reset_index(drop=True),
                                  field.reset_index(drop=True))
    # ... and secondaries' true fluxes are not the VLA list's approximate ones.
    secondaries = sky[(sky.kind == "calibrator") & (sky.flux_standard == "")].set_index("name")
    listed = load_calibrators().set_index("name").loc[secondaries.index, "flux_jy"]
    assert len(secondaries) and not np.allclose(secondaries.flux_jy, listed, rtol=0.01)


def test_flux_standard_has_its_perley_butler_spectrum_in_the_raw_data(tmp_path):
    """3C286 alone, at transit, pointed at its apparent dec, gains and noise off: |V| = scale^2 x PB2017(f)."""
    cal = load_calibrators().set_index("name").loc["3C286"]
    tr = calibrator_transits("2025-06-15", "2025-06-16", 30.5).set_index("name").loc["3C286"]
    start = (Time(tr.transit_jd, format="jd") - 1.5 * telescope.INTEGRATION_S * u.s).to_datetime()
    sky = pd.DataFrame([dict(name="3C286", ra_deg=cal.ra_deg, dec_deg=cal.dec_deg, flux_jy=cal.flux_jy,
                             spectral_index=cal.spectral_index, kind="calibrator",
                             flux_standard=cal.flux_standard)])
    _, dec_app = geometry.icrs_to_apparent(tr.transit_jd, np.radians(cal.ra_deg), np.radians(cal.dec_deg))
    files = simulate(tmp_path, replace(SMALL, start=start, dec_deg=np.degrees(dec_app), n_int=3, noise=False,
                                       gains=False), sky=sky)
    for path in (files[0], files[-1]):  # top and bottom of the band
        with h5py.File(path, "r") as f:
            vis = f["Data/visdata"][:, 0, :, 0]
            a1, a2 = f["Header/ant_1_array"][:], f["Header/ant_2_array"][:]
            freq = f["Header/freq_array"][0]
            n_bls = f["Header/Nbls"][()]
        mid = slice(n_bls, 2 * n_bls)  # the integration holding the transit
        cross = (a1 != a2)[mid]
        amp = np.abs(vis[mid][cross]) / SMALL.correlator_gain**2
        pb = standards.flux_density("3C286", freq)
        np.testing.assert_allclose(amp, np.broadcast_to(pb, amp.shape), rtol=2e-3)  # beam > 0.9985 within 6.4 s of transit
    power_law = cal.flux_jy * (freq / 1.4e9) ** cal.spectral_index
    assert np.abs(pb / power_law - 1).max() > 1e-4  # the curve, not the tangent power law


def test_rfi_hits_about_five_percent_and_its_mask_is_the_truth(tmp_path):
    opts = replace(SMALL, n_ants=6, n_chan=4, n_int=24, start=datetime(2025, 6, 15, 13, 20, 0))
    clean = simulate(tmp_path / "clean", opts)
    dirty = simulate(tmp_path / "dirty", opts, rfi=True)
    group = min(f.name for f in dirty)[:19]
    truth = np.load(tmp_path / "dirty" / "truth" / "rfi" / f"{group}.npz")
    mask = truth["mask"]  # (time, freq) in file order: sb00 .. sb15
    assert 0.03 <= mask.mean() <= 0.10
    assert mask.all(axis=0).any() and mask.all(axis=1).any()  # narrow-band channels and impulses
    n_f = opts.n_chan
    for k, (c, d) in enumerate(zip(clean, dirty, strict=True)):
        with h5py.File(c, "r") as fc, h5py.File(d, "r") as fd:
            vc, vd = fc["Data/visdata"][:, 0], fd["Data/visdata"][:, 0]
            freq = fd["Header/freq_array"][0]
        np.testing.assert_array_equal(freq, truth["freq_hz"][k * n_f:(k + 1) * n_f])
        m = np.repeat(mask[:, k * n_f:(k + 1) * n_f], vc.shape[0] // mask.shape[0], axis=0)  # (blt, chan)
        np.testing.assert_array_equal(vc[~m], vd[~m])  # nothing outside the mask changed
        if m.any():
            excess = np.abs(vd[m] - vc[m]) / opts.correlator_gain**2
            assert np.median(excess) > 10 * (opts.sefd_jy / np.sqrt(2 * telescope.channel_width(n_f) * 12.88))
