"""When calibrators transit, which observation holds a transit, and which
calibration each target observation should use.

DSA-110 is a meridian drift scan: a calibrator is in the (fixed) beam only
around its upper culmination, hour angle 0 measured against the *apparent* RA
of date (precession since J2000 moves RA by ~0.35 deg, about 80 s of time, far
more than an observation's tolerance). Everything here is vectorised over
times and calibrators because the pipeline plans weeks of data at once.

:func:`choose_calibration` is a pure function of small frozen dataclasses so the
validity-window policy can be tested without a database or files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import erfa
import numpy as np
import pandas as pd
from astropy.time import Time

from dsa110_contimg.calibration.calibrators import load_calibrators

from .. import beam, telescope

SECONDS_PER_DAY = 86400.0
# Sidereal rate: radians of LST per day of UT1 (IERS conventions, ERA rate).
_SIDEREAL_RAD_PER_DAY = 2 * np.pi * 1.00273781191135448
_OBSERVATION_DAYS = telescope.OBSERVATION_S / SECONDS_PER_DAY


class NoCalibrationError(LookupError):
    """A target group has no calibrator group it may use; the message says why."""


def _to_jd(t) -> np.ndarray | float:
    """JD (UTC) of an astropy Time, datetime, ISO string or JD number/array."""
    if isinstance(t, Time):
        return t.utc.jd
    if isinstance(t, datetime):
        return Time(t, scale="utc").jd
    if isinstance(t, str):
        return Time(t, format="isot", scale="utc").jd
    return np.asarray(t, dtype=float) if np.ndim(t) else float(t)


def lst_hours(times) -> np.ndarray:
    """Apparent local sidereal time (hours, 0..24) at the array centre.

    ``times`` are astropy Time(s) or UTC JDs. One vectorised call (pyuvdata on
    top of astropy/ERFA), so a month of integrations costs milliseconds.
    """
    from .. import geometry  # pyuvdata + IERS tables: only for this precise LST

    jd = np.atleast_1d(_to_jd(times))
    return np.degrees(geometry.lst(jd.ravel())).reshape(jd.shape) / 15.0


# Parse-time planning needs transit times to a second, not UT1 to a
# millisecond: these use ERFA directly with UT1 = UTC (|UT1 - UTC| < 0.9 s by
# definition, ~0.05 s in 2025), so planning a month never loads astropy's IERS
# tables or pyuvdata (seconds per Snakemake process, and every Slurm job
# re-reads the Snakefile).
_TT_MINUS_UTC_DAYS = (37.0 + 32.184) / SECONDS_PER_DAY  # TAI - UTC = 37 s since 2017


def _planning_lst(jd_utc: np.ndarray) -> np.ndarray:
    """Apparent LST (rad) with UT1 = UTC."""
    jd_utc = np.asarray(jd_utc, dtype=float)
    gast = erfa.gst06a(jd_utc, 0.0, jd_utc, _TT_MINUS_UTC_DAYS)
    return (gast + np.radians(telescope.LONGITUDE_DEG)) % (2 * np.pi)


def _planning_apparent_ra(jd_utc: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Geocentric apparent RA of date (rad, equinox based) of ICRS positions."""
    ri, _, eo = erfa.atci13(ra, dec, 0.0, 0.0, 0.0, 0.0, np.asarray(jd_utc, float), _TT_MINUS_UTC_DAYS)
    return (ri - eo) % (2 * np.pi)


def _wrap_pi(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def calibrator_transits(
    start,
    end,
    pointing_dec_deg: float,
    tolerance_deg: float = 1.5,
    catalogue: pd.DataFrame | None = None,
    min_apparent_jy: float = 0.0,
) -> pd.DataFrame:
    """Every upper culmination in [start, end] of the catalogue calibrators
    within ``tolerance_deg`` of the pointing declination, sorted by time.

    Columns: name, transit_utc (ISO, ms), transit_jd, ra_deg, dec_deg (J2000),
    flux_jy, separation_deg (|dec - pointing dec|), apparent_jy (flux_jy times
    the primary beam at 1.4 GHz at separation_deg). Calibrators fainter than
    ``min_apparent_jy`` in the beam are left out. ``catalogue`` defaults to
    :func:`.calibrators.load_calibrators` (the VLA list under the schema's
    selection).

    Candidate times come from one LST evaluation at ``start`` stepped by a
    sidereal day; two Newton steps on HA = LST - apparent RA (both evaluated at
    the candidate times, so precession/nutation/aberration are included) then
    converge; UT1 is taken as UTC, so times are good to |UT1 - UTC| (< 1 s).
    All arrays, no per-transit loop.
    """
    jd0, jd1 = float(_to_jd(start)), float(_to_jd(end))
    if jd1 < jd0:
        raise ValueError(f"end ({end}) is before start ({start})")
    cat = load_calibrators() if catalogue is None else catalogue
    sep = (cat["dec_deg"] - pointing_dec_deg).abs()
    apparent = cat["flux_jy"] * beam.airy_power(np.radians(sep.to_numpy(float)), 1.4e9)
    keep = (sep <= tolerance_deg) & (apparent >= min_apparent_jy)
    cat = cat[keep].assign(separation_deg=sep[keep], apparent_jy=apparent[keep])
    columns = ["name", "transit_utc", "transit_jd", "ra_deg", "dec_deg", "flux_jy",
               "separation_deg", "apparent_jy"]
    if cat.empty:
        return pd.DataFrame(columns=columns)

    ra = np.radians(cat["ra_deg"].to_numpy(float))
    dec = np.radians(cat["dec_deg"].to_numpy(float))
    # Start one sidereal day early so a transit just after `start` cannot be lost
    # to the first-guess error; out-of-range results are dropped at the end.
    t_first = jd0 - 1.0
    lst0 = _planning_lst(np.array([t_first]))[0]
    app_ra0 = _planning_apparent_ra(np.full(ra.size, t_first), ra, dec)
    first = t_first + ((app_ra0 - lst0) % (2 * np.pi)) / _SIDEREAL_RAD_PER_DAY
    n_days = int(np.ceil((jd1 - t_first) * 1.0027379)) + 2
    sidereal_day = 2 * np.pi / _SIDEREAL_RAD_PER_DAY
    jd = first[:, None] + sidereal_day * np.arange(n_days)[None, :]  # (n_cal, n_days)
    idx = np.broadcast_to(np.arange(len(cat))[:, None], jd.shape).ravel()
    jd = jd.ravel()
    for _ in range(2):
        app_ra = _planning_apparent_ra(jd, ra[idx], dec[idx])
        ha = _wrap_pi(_planning_lst(jd) - app_ra)
        jd = jd - ha / _SIDEREAL_RAD_PER_DAY

    keep = (jd >= jd0) & (jd <= jd1)
    jd, idx = jd[keep], idx[keep]
    order = np.argsort(jd, kind="stable")
    jd, idx = jd[order], idx[order]
    rows = cat.iloc[idx]
    return pd.DataFrame(
        {
            "name": rows["name"].to_numpy(),
            "transit_utc": Time(jd, format="jd", scale="utc").isot if jd.size else [],
            "transit_jd": jd,
            "ra_deg": rows["ra_deg"].to_numpy(float),
            "dec_deg": rows["dec_deg"].to_numpy(float),
            "flux_jy": rows["flux_jy"].to_numpy(float),
            "separation_deg": rows["separation_deg"].to_numpy(float),
            "apparent_jy": rows["apparent_jy"].to_numpy(float),
        },
        columns=columns,
    )


def group_containing(
    transit_jd: float,
    groups: Mapping[str, tuple[float, float]] | Sequence[float] | np.ndarray,
    ids: Sequence[str] | None = None,
    duration_s: float = telescope.OBSERVATION_S,
):
    """The observation group whose span contains ``transit_jd``, or None.

    ``groups`` is either ``{group_id: (start_jd, end_jd)}`` or a sorted array of
    group start JDs, each spanning ``duration_s`` (one observation, ~309.2 s);
    with an array the result is ``ids[i]`` if ``ids`` is given, else the index i.
    Spans are half-open [start, end) so a transit on a boundary belongs to the
    later group, the one whose data actually contain that instant.
    """
    t = float(transit_jd)
    if isinstance(groups, Mapping):
        hits = [(s, g) for g, (s, e) in groups.items() if s <= t < e]
        return min(hits)[1] if hits else None
    starts = np.asarray(groups, dtype=float)
    if ids is not None and len(ids) != starts.size:
        raise ValueError(f"{len(ids)} ids for {starts.size} group starts")
    i = int(np.searchsorted(starts, t, side="right")) - 1
    if i < 0 or t >= starts[i] + duration_s / SECONDS_PER_DAY:
        return None
    return ids[i] if ids is not None else i


@dataclass(frozen=True)
class GroupInfo:
    """A target observation group: id, start (JD) and pointing declination."""

    id: str
    start_jd: float
    dec_deg: float


@dataclass(frozen=True)
class CalInfo:
    """A calibrator observation group and whether its calibration passed QA."""

    id: str
    start_jd: float
    dec_deg: float
    passed: bool


@dataclass(frozen=True)
class Choice:
    """The calibration a target uses; ``warning`` is set when it is far or forced."""

    calgroup: str
    separation_h: float
    warning: str | None = None


def choose_calibration(
    target_groups: Iterable[GroupInfo],
    cal_groups: Iterable[CalInfo],
    *,
    max_separation_h: float = 12.0,
    warn_beyond_h: float = 6.0,
    dec_tolerance_deg: float = 0.1,
    pinned: str | Mapping[str, str] | None = None,
) -> dict[str, Choice]:
    """Pick, for each target group, the calibrator group whose solutions it uses.

    A calibration is valid only at the declination it was observed at (the
    beam and the antenna gains depend on pointing) and for a window around its
    transit (gains drift), so each target takes the nearest-in-time calibrator
    group at its declination (within ``dec_tolerance_deg``) that passed QA, at
    most ``max_separation_h`` away; beyond ``warn_beyond_h`` it is used with a
    warning. Ties go to the earlier calibrator, so the choice is deterministic.

    ``pinned`` (one calgroup id for all targets, or ``{target_id: calgroup}``)
    is an operator's override: it is used whatever its QA, time or declination,
    with a warning saying what was overridden.

    Raises NoCalibrationError naming the target and why none is usable, and
    KeyError if a pinned calgroup is not among ``cal_groups``.
    """
    cals = list(cal_groups)
    by_id = {c.id: c for c in cals}
    out: dict[str, Choice] = {}
    for tgt in target_groups:
        pin = pinned.get(tgt.id) if isinstance(pinned, Mapping) else pinned
        if pin is not None:
            if pin not in by_id:
                raise KeyError(f"pinned calibrator group {pin!r} for {tgt.id} is unknown")
            out[tgt.id] = _pinned_choice(tgt, by_id[pin], warn_beyond_h, dec_tolerance_deg)
            continue
        same_dec = [c for c in cals if abs(c.dec_deg - tgt.dec_deg) <= dec_tolerance_deg]
        if not same_dec:
            raise NoCalibrationError(
                f"{tgt.id}: no calibrator group at declination {tgt.dec_deg:.2f} deg"
            )
        passed = [c for c in same_dec if c.passed]
        if not passed:
            raise NoCalibrationError(
                f"{tgt.id}: all {len(same_dec)} calibrator groups at declination "
                f"{tgt.dec_deg:.2f} deg failed QA"
            )
        best = min(passed, key=lambda c: (abs(c.start_jd - tgt.start_jd), c.start_jd))
        sep_h = abs(best.start_jd - tgt.start_jd) * 24.0
        if sep_h > max_separation_h:
            raise NoCalibrationError(
                f"{tgt.id}: nearest valid calibrator group {best.id} is {sep_h:.1f} h "
                f"away (limit {max_separation_h:g} h)"
            )
        warning = None
        if sep_h > warn_beyond_h:
            warning = (
                f"{tgt.id}: calibrator group {best.id} is {sep_h:.1f} h away "
                f"(more than {warn_beyond_h:g} h); gains may have drifted"
            )
        out[tgt.id] = Choice(best.id, sep_h, warning)
    return out


def _pinned_choice(tgt: GroupInfo, cal: CalInfo, warn_h: float, dec_tol: float) -> Choice:
    sep_h = abs(cal.start_jd - tgt.start_jd) * 24.0
    notes = []
    if not cal.passed:
        notes.append("failed QA")
    if abs(cal.dec_deg - tgt.dec_deg) > dec_tol:
        notes.append(f"is at declination {cal.dec_deg:.2f} deg, not {tgt.dec_deg:.2f}")
    if sep_h > warn_h:
        notes.append(f"is {sep_h:.1f} h away")
    warning = f"{tgt.id}: pinned calibrator group {cal.id} " + ", ".join(notes) if notes else None
    return Choice(cal.id, sep_h, warning)
