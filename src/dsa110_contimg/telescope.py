"""Facts about DSA-110: site, antenna pads, correlator order, frequencies, timing.

Everything here is a constant or a pure function of its arguments, shared by the
simulator (which must write what the telescope writes) and the converter (which
checks that what it reads is what the telescope writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation

from .constants import MJD_ZERO_JD

# Site of the array centre, as written in every file header.
LATITUDE_DEG = 37.2334051
LONGITUDE_DEG = -118.283
ALTITUDE_M = 1188.0519
TELESCOPE_NAME_IN_FILES = "OVRO_MMA"  # what the correlator writes (CASA's entry is wrong)
INSTRUMENT = "DSA"

N_PADS = 117
N_ACTIVE = 96
OUTRIGGER_PADS = tuple(range(103, 118))
DISH_DIAMETER_M = 4.65

# Correlator timing.
INTEGRATION_S = 12.884901888
N_INTEGRATIONS = 24
OBSERVATION_S = N_INTEGRATIONS * INTEGRATION_S  # about 309.2 s

# Frequencies: 16 subbands of 384 fine channels of 30517.578125 Hz, read out as
# 48 channels of 8 fine channels; sb00 is the highest, channels descend.
N_SUBBANDS = 16
FINE_CHANNEL_HZ = 30517.578125
FINE_PER_SUBBAND = 384
FREQ_TOP_HZ = 1.53e9
FINE_OFFSET = 1024
N_CHANNELS_FULL = 48

# Fringe-stopping and file uvw reference epoch of the correlator (MJD 58849).
UVW_REFERENCE_JD = 58849.0 + MJD_ZERO_JD


def location() -> EarthLocation:
    """The array centre as an astropy EarthLocation."""
    return EarthLocation.from_geodetic(
        lon=LONGITUDE_DEG * u.deg, lat=LATITUDE_DEG * u.deg, height=ALTITUDE_M * u.m
    )


def subband_frequencies(subband: int, n_channels: int = N_CHANNELS_FULL) -> np.ndarray:
    """Channel centres (Hz, descending) of one subband read out with ``n_channels``.

    With 48 channels, channel c of subband k is at
    1.53 GHz - (1024 + 384 k + 8 c + 3.5) x 30517.578125 Hz.
    """
    if FINE_PER_SUBBAND % n_channels:
        raise ValueError(f"{n_channels} channels do not divide a subband of 384")
    per = FINE_PER_SUBBAND // n_channels
    c = np.arange(n_channels)
    fine = FINE_OFFSET + FINE_PER_SUBBAND * subband + per * c + (per - 1) / 2
    return FREQ_TOP_HZ - fine * FINE_CHANNEL_HZ


def channel_width(n_channels: int = N_CHANNELS_FULL) -> float:
    """Width (Hz, positive) of one channel when a subband has ``n_channels``."""
    return FINE_CHANNEL_HZ * FINE_PER_SUBBAND / n_channels


def subband_edges(subband: int) -> tuple[float, float]:
    """Lowest and highest frequency (Hz) covered by a subband."""
    hi = FREQ_TOP_HZ - (FINE_OFFSET + FINE_PER_SUBBAND * subband - 0.5) * FINE_CHANNEL_HZ
    lo = hi - FINE_PER_SUBBAND * FINE_CHANNEL_HZ
    return lo, hi


@dataclass(frozen=True)
class ArrayLayout:
    """Antenna pads of the array.

    ``numbers`` are antenna numbers (pad - 1), ``names`` the pad numbers as
    strings, ``enu`` east-north-up offsets (m) from the array centre and
    ``ecef`` ECEF offsets (m) from the array centre, as the file stores them.
    ``active`` lists the antenna numbers with data, in correlator order.
    """

    numbers: np.ndarray
    names: tuple[str, ...]
    enu: np.ndarray
    ecef: np.ndarray
    active: np.ndarray


@cache
def layout() -> ArrayLayout:
    """A T-shaped array resembling DSA-110 (deterministic).

    Pads 1-51 lie on a 2.6 km east-west arm, pads 52-102 on a 1.6 km arm to
    the north of its centre, pads 103-117 are outriggers within about 2.5 km.
    Positions get a metre-scale scatter so baselines are not exactly redundant.
    21 pads carry no antenna; the 96 active ones are listed in a fixed
    shuffled correlator order, as the real correlator's order is not sorted.
    """
    rng = np.random.default_rng(110)
    ew = np.column_stack([np.linspace(-1300, 1300, 51), np.zeros(51)])
    ns = np.column_stack([np.zeros(51), np.linspace(60, 1600, 51)])
    ang = rng.uniform(0, 2 * np.pi, 15)
    rad = rng.uniform(1500, 2500, 15)
    out = np.column_stack([rad * np.cos(ang), rad * np.sin(ang)])
    en = np.vstack([ew, ns, out]) + rng.normal(0, 1.0, (N_PADS, 2))
    enu = np.column_stack([en, rng.normal(0, 0.3, N_PADS)])

    from pyuvdata.utils import ECEF_from_ENU, XYZ_from_LatLonAlt

    lat, lon = np.radians(LATITUDE_DEG), np.radians(LONGITUDE_DEG)
    centre = XYZ_from_LatLonAlt(lat, lon, ALTITUDE_M)
    ecef = ECEF_from_ENU(enu, latitude=lat, longitude=lon, altitude=ALTITUDE_M) - centre

    numbers = np.arange(N_PADS)
    inactive = np.concatenate(
        [np.arange(4, 51, 6), np.arange(55, 102, 6), np.array([104, 107, 110, 113, 116])]
    )
    active = rng.permutation(np.setdiff1d(numbers, inactive))
    return ArrayLayout(
        numbers=numbers,
        names=tuple(str(n + 1) for n in numbers),
        enu=enu,
        ecef=ecef,
        active=active,
    )


def choose_antennas(n: int, max_radius_m: float | None = None) -> np.ndarray:
    """``n`` active antennas spread over the whole array, in correlator order.

    Used to make small simulated data sets that still span both arms and the
    outriggers. With ``max_radius_m`` only antennas within that distance of the
    array centre are chosen (a compact core: coarse resolution, so small test
    images cover the primary beam).
    """
    lay = layout()
    pool = lay.active
    if max_radius_m is not None:
        pool = pool[np.hypot(lay.enu[pool, 0], lay.enu[pool, 1]) <= max_radius_m]
    if not 2 <= n <= pool.size:
        where = "" if max_radius_m is None else f" within {max_radius_m:g} m of the centre"
        raise ValueError(f"number of antennas must be 2..{pool.size}{where}, got {n}")
    by_pad = np.sort(pool)
    keep = by_pad[np.round(np.linspace(0, by_pad.size - 1, n)).astype(int)]
    return lay.active[np.isin(lay.active, keep)]


def baselines(antennas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlator baseline order, autocorrelations included: (i, j) for j >= i
    in the order the antennas are given (so numbers are not monotonic)."""
    i, j = np.triu_indices(antennas.size)
    return antennas[i], antennas[j]
