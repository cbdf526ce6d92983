"""The simulator writes the telescope's file format, and its physics is right."""

from __future__ import annotations

from datetime import UTC, timedelta

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from simdata import SMALL, point_sky, simulate

from dsa110_contimg import naming, telescope
from dsa110_contimg.beam import airy_power, fwhm_rad
from dsa110_contimg.sim.observation import noise_sigma_jy


def test_file_format_is_the_correlators(tmp_path):
    files = simulate(tmp_path, n_chan=48, subbands=(0, 15))
    with h5py.File(files[0], "r") as f:
        h = f["Header"]
        assert h["phase_type"][()] == b"drift"
        assert h["phase_center_app_dec"].shape == ()
        for absent in ("phase_center_catalog", "phase_center_app_ra", "vis_units", "lst_array"):
            assert absent not in h
        assert h["telescope_name"][()] == b"OVRO_MMA" and h["instrument"][()] == b"DSA"
        assert h["latitude"][()] == pytest.approx(37.2334051)
        assert h["longitude"][()] == pytest.approx(-118.283)
        assert h["altitude"][()] == pytest.approx(1188.0519)
        assert h["Nants_telescope"][()] == 117
        assert [n.decode() for n in h["antenna_names"][()]] == [str(i) for i in range(1, 118)]
        assert np.array_equal(h["antenna_numbers"][()], np.arange(117))
        assert np.allclose(h["antenna_diameters"][()], 4.65)
        n_ants, n_t = h["Nants_data"][()], h["Ntimes"][()]
        assert h["Nbls"][()] == n_ants * (n_ants + 1) // 2  # autos included
        a1, a2 = h["ant_1_array"][()], h["ant_2_array"][()]
        assert np.any(a1 > a2), "correlator order is not sorted"
        uvw = h["uvw_array"][()]
        assert uvw.dtype == np.float32
        assert np.array_equal(uvw.reshape(n_t, -1, 3)[0], uvw.reshape(n_t, -1, 3)[-1])
        t = h["time_array"][()].reshape(n_t, -1)
        assert np.all(t == t[:, :1]), "time-major"
        assert np.diff(t[:, 0]) * 86400 == pytest.approx(12.884901888, abs=1e-4)
        assert h["integration_time"].dtype == np.float64
        freq = h["freq_array"][()]
        assert freq.shape == (1, 48) and np.all(np.diff(freq[0]) < 0)
        assert freq[0, 0] == 1498643188.4765625
        assert h["channel_width"][()] == 244140.625
        assert list(h["spw_array"][()]) == [1]
        assert list(h["polarization_array"][()]) == [-5, -6]
        ek = h["extra_keywords"]
        assert ek["phase_center_dec"][()] == pytest.approx(np.radians(SMALL.dec_deg))
        assert ek["ha_phase_center"][()] == 0.0
        assert ek["phase_center_epoch"][()] == b"HADEC"
        assert isinstance(ek["fs_table"][()], bytes) and isinstance(ek["applied_delays_ns"][()], bytes)
        d = f["Data"]
        assert d["visdata"].dtype == np.complex64 and d["visdata"].shape == (a1.size, 1, 48, 2)
        assert d["flags"].dtype == bool and d["nsamples"].dtype == np.float32
        assert d["visdata"].compression is None
    with h5py.File(files[1], "r") as f:
        last = f["Header/freq_array"][()][0, -1]
    assert last == pytest.approx(1.53e9 - (1024 + 384 * 15 + 8 * 47 + 3.5) * 30517.578125)


def test_file_names_are_jittered_wall_clock_times(tmp_path):
    files = simulate(tmp_path, n_obs=3, n_int=6)
    stamps = {}
    for f in files:
        ts, sb = naming.parse_raw_filename(f.name)
        stamps.setdefault(sb, []).append(ts)
    assert sorted(stamps) == list(range(16))
    for k in range(3):
        times = [sorted(v)[k] for v in stamps.values()]
        start = SMALL.start + timedelta(seconds=k * 6 * telescope.INTEGRATION_S)
        start = start.replace(microsecond=0, tzinfo=UTC)
        assert all(timedelta(0) <= t - start <= timedelta(seconds=3) for t in times)


def test_pyuvdata_default_checks_reject_the_raw_file(tmp_path):
    """The real files need run_check=False; our simulated ones must too."""
    from pyuvdata import UVData

    files = simulate(tmp_path, subbands=(0,))
    with pytest.raises(ValueError, match="uvw_array"):
        UVData.from_file(str(files[0]), file_type="uvh5")
    uv = UVData.from_file(str(files[0]), file_type="uvh5", run_check=False, strict_uvw_antpos_check=False)
    assert uv.Nfreqs == SMALL.n_chan


def _truth_gains(tmp_path, group):
    g = np.load(tmp_path / "truth" / "gains" / f"{group}.npz")
    return g["antennas"], g["freq_hz"], g["bandpass"], g["gain"]


def test_source_at_phase_centre_has_its_flux_and_zero_phase_once_gains_are_divided_out(tmp_path):
    sky = point_sky(SMALL, flux_jy=2.0, spectral_index=-0.7)
    files = simulate(tmp_path, sky=sky, noise=False, calibrators=False)
    group = naming.format_timestamp(min(naming.parse_raw_filename(f.name)[0] for f in files))
    ants, freq_all, bp, gain = _truth_gains(tmp_path, group)
    row = {a: i for i, a in enumerate(ants)}
    mid = SMALL.n_int // 2
    offset = 0
    for f in files:
        with h5py.File(f, "r") as h:
            n_bls = h["Header/Nbls"][()]
            a1 = h["Header/ant_1_array"][()][:n_bls]
            a2 = h["Header/ant_2_array"][()][:n_bls]
            freq = h["Header/freq_array"][()][0]
            vis = h["Data/visdata"][mid * n_bls:(mid + 1) * n_bls, 0]
        sl = slice(offset, offset + freq.size)
        offset += freq.size
        assert np.allclose(freq_all[sl], freq)
        i, j = np.array([row[a] for a in a1]), np.array([row[a] for a in a2])
        g = bp[:, sl, :] * gain[:, mid, None, :]  # (ants, freq, pol)
        true = vis / (g[i] * np.conj(g[j]))
        cross = a1 != a2
        expected = 2.0 * (freq / 1.4e9) ** -0.7
        # The source sits on the phase centre at mid time: flux x beam(0) = flux, phase 0.
        assert np.allclose(np.abs(true[cross]), expected[None, :, None], rtol=2e-4)
        assert np.abs(np.angle(true[cross])).max() < np.radians(0.05)


def test_thermal_noise_follows_the_sefd(tmp_path):
    empty = pd.DataFrame(columns=["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "kind"])
    files = simulate(tmp_path, sky=empty, gains=False, n_int=6, n_ants=16)
    scale = SMALL.correlator_gain**2
    parts = []
    for f in files:
        with h5py.File(f, "r") as h:
            a1, a2 = h["Header/ant_1_array"][()], h["Header/ant_2_array"][()]
            parts.append(h["Data/visdata"][()][a1 != a2].ravel() / scale)
    vis = np.concatenate(parts)
    sigma = noise_sigma_jy(SMALL)
    assert np.std(vis.real) == pytest.approx(sigma, rel=0.03)
    assert np.std(vis.imag) == pytest.approx(sigma, rel=0.03)
    assert abs(np.mean(vis.real)) < 5 * sigma / np.sqrt(vis.size)


def test_airy_beam():
    f = 1.4e9
    assert airy_power(0.0, f) == pytest.approx(1.0)
    assert airy_power(fwhm_rad(f) / 2, f) == pytest.approx(0.5, abs=1e-3)
    assert np.degrees(fwhm_rad(f)) == pytest.approx(2.71, abs=0.02)


def test_calibrator_is_added_when_it_transits(tmp_path):
    from dataclasses import replace

    from astropy.time import Time

    from dsa110_contimg import geometry

    # Start one minute before 3C286 (RA 202.78 deg, Dec +30.5) transits.
    t0 = Time(SMALL.start)
    dra = (np.radians(202.7845) - geometry.lst(np.array([t0.jd]))[0]) % (2 * np.pi)
    transit = t0 + dra / (2 * np.pi) * 0.99726957 * 86400 * u.s
    opts = replace(SMALL, start=(transit - 60 * u.s).to_datetime().replace(microsecond=0), dec_deg=30.5, n_obs=2, n_int=6)
    simulate(tmp_path, opts)
    sky = pd.read_csv(tmp_path / "truth" / "sky.csv")
    assert "3C286" in set(sky.name[sky.kind == "calibrator"])


def test_layout_is_a_t_with_outriggers():
    lay = telescope.layout()
    assert lay.active.size == 96 and np.unique(lay.active).size == 96
    east = lay.enu[:51, 0]
    north = lay.enu[51:102, 1]
    assert 2500 < east.max() - east.min() < 2700
    assert 1450 < north.max() - north.min() < 1650
    assert np.all(np.hypot(*lay.enu[102:, :2].T) > 1400)
