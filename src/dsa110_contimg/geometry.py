"""Drift-scan geometry shared by the simulator and the converter.

Conventions (those of the DSA-110 correlator, see DESIGN.md): baselines are
``x[ant_2] - x[ant_1]``; an integration is fringe-stopped to hour angle 0 at the
pointing declination at its mid time (apparent RA = apparent LST), and a
source's visibility is ``S exp(+2 pi i (u l + v m + w (n - 1)) / lambda)``.
All angles here are radians; "apparent" is pyuvdata's topocentric apparent
frame, whose RA is measured against the same equinox as its LST.
"""

from __future__ import annotations

import numpy as np
from pyuvdata.utils import get_lst_for_time
from pyuvdata.utils.phasing import (
    calc_frame_pos_angle,
    calc_uvw,
    transform_app_to_icrs,
    transform_icrs_to_app,
)

from . import telescope


def _site() -> tuple[float, float, float]:
    return (
        np.radians(telescope.LATITUDE_DEG),
        np.radians(telescope.LONGITUDE_DEG),
        telescope.ALTITUDE_M,
    )


def lst(jd: np.ndarray) -> np.ndarray:
    """Apparent local sidereal time (rad) at the array centre."""
    return get_lst_for_time(
        np.asarray(jd, dtype=float),
        latitude=telescope.LATITUDE_DEG,
        longitude=telescope.LONGITUDE_DEG,
        altitude=telescope.ALTITUDE_M,
    )


def icrs_to_apparent(jd, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Apparent (RA, Dec) of ICRS positions; arrays broadcast to one shape."""
    jd, ra, dec = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (jd, ra, dec)))
    app_ra, app_dec = transform_icrs_to_app(
        time_array=jd.ravel(), ra=ra.ravel(), dec=dec.ravel(), telescope_loc=_site()
    )
    return app_ra.reshape(jd.shape), app_dec.reshape(jd.shape)


def apparent_to_icrs(jd, app_ra, app_dec) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (RA, Dec) of apparent positions at the given times."""
    jd, ra, dec = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (jd, app_ra, app_dec))
    )
    out_ra, out_dec = transform_app_to_icrs(
        time_array=jd.ravel(), app_ra=ra.ravel(), app_dec=dec.ravel(), telescope_loc=_site()
    )
    return np.asarray(out_ra).reshape(jd.shape), np.asarray(out_dec).reshape(jd.shape)


def meridian_icrs(jd: float, dec_app: float) -> tuple[float, float]:
    """ICRS position of hour angle 0 at apparent declination ``dec_app`` at ``jd``."""
    ra, dec = apparent_to_icrs(jd, lst(np.atleast_1d(jd))[0], dec_app)
    return float(ra), float(dec)


def direction_cosines(ra, dec, ra0, dec0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l, m, n) of (ra, dec) relative to the phase centre (ra0, dec0), same frame."""
    dra = ra - ra0
    l = np.cos(dec) * np.sin(dra)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(dra)
    return l, m, n


def uvw(
    positions: np.ndarray,
    numbers: np.ndarray,
    ant_1: np.ndarray,
    ant_2: np.ndarray,
    lst_rad: np.ndarray,
    app_ra: np.ndarray,
    app_dec: np.ndarray,
    frame_pa: np.ndarray | None = None,
) -> np.ndarray:
    """uvw (m) of ``x[ant_2] - x[ant_1]`` toward apparent (app_ra, app_dec), per row.

    ``positions`` are ECEF offsets (m) from the array centre of the antennas
    ``numbers``. Without ``frame_pa`` the axes are those of the apparent frame;
    with it they are rotated to the frame of the phase centre's catalogue
    coordinates (ICRS), as a Measurement Set stores them.
    """
    lat, lon, _ = _site()
    return calc_uvw(
        app_ra=app_ra,
        app_dec=app_dec,
        frame_pa=frame_pa,
        lst_array=lst_rad,
        use_ant_pos=True,
        antenna_positions=positions,
        antenna_numbers=numbers,
        ant_1_array=ant_1,
        ant_2_array=ant_2,
        telescope_lat=lat,
        telescope_lon=lon,
    )


def frame_position_angle(jd, app_ra, app_dec) -> np.ndarray:
    """Angle between the apparent and ICRS frames at each position (rad)."""
    return calc_frame_pos_angle(
        time_array=np.asarray(jd, dtype=float),
        app_ra=np.asarray(app_ra, dtype=float),
        app_dec=np.asarray(app_dec, dtype=float),
        telescope_loc=_site(),
        ref_frame="icrs",
    )


def ms_direction_cosines(jd: float, ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l, m, n) of ICRS (ra, dec) as a converted MS's data see them at ``jd``, phase centre (ra0, dec0).

    The correlator sees the apparent sky, aberrated by the Earth's ~30 km/s:
    offsets from the phase centre are scaled by ``1 - v.s/c`` (up to 1e-4,
    0.36" at 1 deg) on top of precession and nutation. The MS's uvw are the
    apparent ones rotated about w by the frame position angle (``raw.convert``),
    which undoes the rotation but not the scale, so ICRS direction cosines
    (:func:`direction_cosines`) put a source off-centre by up to ~0.4" in the
    data's geometry. These are the apparent offsets rotated the same way; the
    aberration changes by ~1e-9 in an observation, so one ``jd`` serves it.
    """
    jd = float(jd)
    app_ra, app_dec = icrs_to_apparent(jd, ra, dec)
    c_ra, c_dec = icrs_to_apparent(jd, ra0, dec0)
    ell, m, n = direction_cosines(app_ra, app_dec, c_ra, c_dec)
    pa = float(frame_position_angle(np.array([jd]), np.atleast_1d(c_ra), np.atleast_1d(c_dec))[0])
    return ell * np.cos(pa) - m * np.sin(pa), ell * np.sin(pa) + m * np.cos(pa), n
