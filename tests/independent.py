"""Reference computations for the tests that share no code with the pipeline.

The simulator and the pipeline both use ``dsa110_contimg.geometry`` (pyuvdata's
phasing helpers) and ``dsa110_contimg.beam`` (the closed-form Airy pattern).
A test whose truth came from the same functions could not catch an error in
them, so the truths here are computed another way: astropy's own frames for
sidereal time and apparent places, the textbook uvw rotation (Thompson, Moran &
Swenson, eq. 4.1), and the aperture integral of a uniformly lit dish.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import TETE, EarthLocation, SkyCoord
from astropy.time import Time
from scipy.integrate import quad
from scipy.special import j0

C = 299792458.0  # m/s, written out here on purpose
OVRO = EarthLocation.from_geodetic(lon=-118.283 * u.deg, lat=37.2334051 * u.deg, height=1188.0519 * u.m)
DISH_M = 4.65


def lst_rad(jd) -> np.ndarray:
    """Apparent local sidereal time at the array centre, from astropy's Time."""
    t = Time(np.atleast_1d(jd), format="jd", scale="utc", location=OVRO)
    return t.sidereal_time("apparent").to_value(u.rad)


def apparent(jd, ra_rad, dec_rad) -> tuple[np.ndarray, np.ndarray]:
    """Apparent (true equator and equinox of date, topocentric) RA/Dec of ICRS positions."""
    t = Time(np.atleast_1d(jd), format="jd", scale="utc")
    c = SkyCoord(ra=np.atleast_1d(ra_rad) * u.rad, dec=np.atleast_1d(dec_rad) * u.rad, frame="icrs")
    tete = c.transform_to(TETE(obstime=t, location=OVRO))
    return tete.ra.to_value(u.rad), tete.dec.to_value(u.rad)


def meridian_icrs(jd: float, dec_app_rad: float) -> tuple[float, float]:
    """ICRS position of hour angle 0 at apparent declination ``dec_app_rad``."""
    t = Time(jd, format="jd", scale="utc")
    c = SkyCoord(ra=lst_rad(jd)[0] * u.rad, dec=dec_app_rad * u.rad, frame=TETE(obstime=t, location=OVRO))
    icrs = c.transform_to("icrs")
    return float(icrs.ra.to_value(u.rad)), float(icrs.dec.to_value(u.rad))


def uvw_tms(baseline_ecef_m: np.ndarray, hour_angle_rad: float, dec_rad: float, lon_rad: float) -> np.ndarray:
    """uvw (m) of an ECEF baseline toward (H, dec): the local equatorial rotation of TMS eq. 4.1.

    The ECEF baseline is turned about the pole into (X toward H=0 on the equator,
    Y toward H=-6h, Z to the pole); then u = sin H X + cos H Y,
    v = -sin d cos H X + sin d sin H Y + cos d Z, w = cos d cos H X - cos d sin H Y + sin d Z.
    """
    x, y, z = np.asarray(baseline_ecef_m, float)
    X = np.cos(lon_rad) * x + np.sin(lon_rad) * y
    Y = -np.sin(lon_rad) * x + np.cos(lon_rad) * y
    H, d = hour_angle_rad, dec_rad
    return np.array([
        np.sin(H) * X + np.cos(H) * Y,
        -np.sin(d) * np.cos(H) * X + np.sin(d) * np.sin(H) * Y + np.cos(d) * z,
        np.cos(d) * np.cos(H) * X - np.cos(d) * np.sin(H) * Y + np.sin(d) * z,
    ])


def aperture_power(theta_rad, freq_hz, diameter_m: float = DISH_M) -> np.ndarray:
    """Power pattern of a uniformly lit circular aperture by direct integration (1 on axis).

    E(theta) is proportional to the integral over the aperture radius r of
    J0(2 pi r sin(theta) / lambda) r dr (64-point Gauss-Legendre, exact to
    1e-10 out to the third sidelobe); the power is E^2, normalised on axis. No
    closed form (no J1) is used, so an error in the pipeline's Airy formula
    shows. Broadcasts over its arguments.
    """
    k = 2 * np.pi * np.sin(np.asarray(theta_rad, float)) * np.asarray(freq_hz, float) / C
    radius = diameter_m / 2
    nodes, weights = np.polynomial.legendre.leggauss(64)
    r = radius * (nodes + 1) / 2
    field = (radius / 2) * np.tensordot(j0(k[..., None] * r) * r, weights, axes=([-1], [0]))
    return (field / (radius**2 / 2)) ** 2


def aperture_power_quad(theta_rad: float, freq_hz: float, diameter_m: float = DISH_M) -> float:
    """:func:`aperture_power` by adaptive quadrature (a check of the fixed rule)."""
    k = 2 * np.pi * np.sin(theta_rad) * freq_hz / C
    radius = diameter_m / 2
    field, _ = quad(lambda r: j0(k * r) * r, 0.0, radius, limit=200)
    return float((field / (radius**2 / 2)) ** 2)


def pointing_separation(jd, ra_rad, dec_rad, dec_app_rad: float) -> np.ndarray:
    """Angle (rad) between ICRS sources (axis 0) and the drift-scan pointing (HA 0 at
    apparent declination ``dec_app_rad``) at each time (axis 1)."""
    centres = np.array([meridian_icrs(t, dec_app_rad) for t in np.atleast_1d(jd)])
    src = SkyCoord(ra=np.atleast_1d(ra_rad)[:, None] * u.rad, dec=np.atleast_1d(dec_rad)[:, None] * u.rad)
    ptg = SkyCoord(ra=centres[None, :, 0] * u.rad, dec=centres[None, :, 1] * u.rad)
    return src.separation(ptg).to_value(u.rad)
