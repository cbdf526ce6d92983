"""Sidereal time, apparent places, uvw and the dish beam against references that share
no code with the pipeline (astropy frames, the textbook uvw rotation, CASA's measures,
the aperture integral): an error shared by the simulator and the pipeline shows here."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.time import Time
from independent import aperture_power, aperture_power_quad, apparent, lst_rad, meridian_icrs, uvw_tms
from simdata import run_casa

from dsa110_contimg import beam, geometry, telescope

JD = Time(["2025-06-15T08:00:03", "2025-03-02T22:41:10", "2025-11-20T13:05:59"], scale="utc").jd
ARCSEC = np.radians(1 / 3600)


def test_lst_matches_astropy_and_casa(tmp_path):
    ours = geometry.lst(JD)
    assert np.abs(np.angle(np.exp(1j * (ours - lst_rad(JD))))).max() < 0.05 * ARCSEC
    casa = run_casa(f"""
        me = ct.measures(); qa = ct.quanta()
        me.doframe(me.position('WGS84', '{telescope.LONGITUDE_DEG}deg', '{telescope.LATITUDE_DEG}deg',
                               '{telescope.ALTITUDE_M}m'))
        result = []
        for jd in {list(map(float, JD))}:
            me.doframe(me.epoch('UTC', qa.quantity(jd - 2400000.5, 'd')))
            last = me.measure(me.epoch('UTC', qa.quantity(jd - 2400000.5, 'd')), 'LAST')
            result.append((last['m0']['value'] % 1.0) * 2 * np.pi)
    """, tmp_path)
    diff = np.angle(np.exp(1j * (ours - np.array(casa))))
    assert np.abs(diff).max() < 0.5 * ARCSEC, np.degrees(diff) * 3600


def test_apparent_places_and_meridian_match_astropy():
    ra = np.radians([202.7845, 10.0, 300.5])
    dec = np.radians([30.509, -20.0, 71.2])
    ours_ra, ours_dec = geometry.icrs_to_apparent(JD, ra, dec)
    ref_ra, ref_dec = apparent(JD, ra, dec)
    # astropy's topocentric TETE includes diurnal aberration (at most 0.32" x cos(latitude)),
    # pyuvdata's apparent frame does not: 0.5" is far below the ~20" synthesised beam.
    tolerance = 0.5 * ARCSEC
    assert np.abs(np.angle(np.exp(1j * (ours_ra - ref_ra))) * np.cos(ref_dec)).max() < tolerance
    assert np.abs(ours_dec - ref_dec).max() < tolerance
    # A position moved from J2000 to 2025 by precession moves by ~20 arcmin: a frame mix-up cannot hide.
    assert np.abs(ours_dec - dec).max() > 60 * ARCSEC
    for jd in JD:
        ours = geometry.meridian_icrs(jd, np.radians(30.5))
        ref = meridian_icrs(jd, np.radians(30.5))
        assert abs(np.angle(np.exp(1j * (ours[0] - ref[0])))) * np.cos(ref[1]) < tolerance
        assert abs(ours[1] - ref[1]) < tolerance


@pytest.mark.parametrize("hour_angle_deg, dec_deg", [(0.0, 30.5), (7.5, -15.0), (-20.0, 71.0)])
def test_uvw_matches_the_textbook_rotation(hour_angle_deg, dec_deg):
    rng = np.random.default_rng(3)
    positions = rng.normal(0, 400, (5, 3))  # ECEF offsets (m) from the array centre
    numbers = np.arange(5)
    ant_1, ant_2 = np.array([0, 0, 1, 3]), np.array([1, 4, 2, 4])
    lst = float(lst_rad(JD[0])[0])
    app_ra = lst - np.radians(hour_angle_deg)
    ours = geometry.uvw(positions, numbers, ant_1, ant_2, np.full(4, lst), np.full(4, app_ra),
                        np.full(4, np.radians(dec_deg)))
    lon = np.radians(telescope.LONGITUDE_DEG)
    for row, (a, b) in enumerate(zip(ant_1, ant_2)):
        ref = uvw_tms(positions[b] - positions[a], np.radians(hour_angle_deg), np.radians(dec_deg), lon)
        np.testing.assert_allclose(ours[row], ref, atol=1e-6)


def test_airy_beam_matches_the_aperture_integral():
    for f in (1.31e9, 1.405e9, 1.498e9):
        fwhm = beam.fwhm_rad(f)
        for theta in np.array([0.1, 0.5, 1.0, 1.5, 2.2]) * fwhm:
            assert beam.airy_power(theta, f) == pytest.approx(aperture_power(theta, f), abs=2e-5)
            assert aperture_power(theta, f) == pytest.approx(aperture_power_quad(theta, f), abs=1e-9)
        # Half power at half the FWHM, by the integral, not by our formula.
        assert aperture_power(fwhm / 2, f) == pytest.approx(0.5, abs=1e-3)
    # The first null of a 4.65 m dish at 1.4 GHz: 1.2197 lambda / D = 3.21 deg.
    null = 1.2197 * 299792458.0 / 1.4e9 / 4.65
    assert aperture_power(null, 1.4e9) < 1e-6 and beam.airy_power(null, 1.4e9) < 1e-6


def test_offsets_as_the_data_see_them_carry_the_annual_aberration():
    """The MS's uvw undo precession and nutation about the phase centre (a rotation) but not the
    annual aberration: offsets as the data see them are the ICRS ones scaled by 1 - v.s0/c, v the
    Earth's velocity from astropy's ephemeris (up to 1e-4: 0.36" at 1 deg, issue 14)."""
    from astropy.coordinates import get_body_barycentric_posvel

    scales = []
    for jd in JD:
        _, vel = get_body_barycentric_posvel("earth", Time(jd, format="jd"))
        beta = vel.xyz.to_value(u.m / u.s) / 299792458.0
        for dec_deg in (-15.0, 30.5, 60.0, 71.0):
            ra0, dec0 = geometry.meridian_icrs(jd, np.radians(dec_deg))
            s0 = np.array([np.cos(dec0) * np.cos(ra0), np.cos(dec0) * np.sin(ra0), np.sin(dec0)])
            ra = ra0 + np.radians([0.0, 1.0]) / np.cos(dec0)
            dec = dec0 + np.radians([1.3, 0.0])
            ell, m, _ = geometry.direction_cosines(ra, dec, ra0, dec0)
            ell_ms, m_ms, _ = geometry.ms_direction_cosines(jd, ra, dec, ra0, dec0)
            scale = np.hypot(ell_ms, m_ms) / np.hypot(ell, m) - 1
            # Diurnal aberration (~1.5e-6 at OVRO) and second-order terms stay below 3e-6.
            np.testing.assert_allclose(scale, -beta @ s0, atol=3e-6)
            scales.append(scale)
    assert np.abs(scales).max() > 3e-5, "the effect is there to be seen"
