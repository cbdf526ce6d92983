"""Transit prediction against astropy, and the calibration validity-window policy."""

from __future__ import annotations

import time

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time

from dsa110_contimg import telescope
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.transits import (
    CalInfo,
    Choice,
    GroupInfo,
    NoCalibrationError,
    calibrator_transits,
    choose_calibration,
    group_containing,
    lst_hours,
)

H = 1 / 24  # one hour in days
JD0 = 2460842.0  # 2025-06-15T12:00 UTC


def test_lst_hours_matches_astropy():
    t = Time("2025-06-15T00:00:00", scale="utc") + np.linspace(0, 40, 500) * u.day
    ours = lst_hours(t)
    ref = t.sidereal_time("apparent", longitude=telescope.LONGITUDE_DEG * u.deg).hour
    diff_s = (((ours - ref) + 12) % 24 - 12) * 3600
    assert np.abs(diff_s).max() < 0.1
    assert np.allclose(lst_hours(t.jd), ours)  # plain JDs work too
    assert np.all((ours >= 0) & (ours < 24))


def test_transits_are_at_hour_angle_zero():
    every = calibrator_transits("2025-06-15T00:00:00", "2025-06-25T00:00:00", 33.0)
    assert "3C48" in set(every.name) and every.transit_jd.is_monotonic_increasing
    assert all(n in (10, 11) for n in every.name.value_counts())  # one per sidereal day (10 d = 10.03)
    assert len(every[every.name == "3C48"]) == 10
    tr = every[every.name == "3C48"]
    assert np.all(np.diff(tr.transit_jd) > 0.99)
    t = Time(tr.transit_jd.to_numpy(), format="jd", scale="utc")
    src = SkyCoord(tr.ra_deg.to_numpy() * u.deg, tr.dec_deg.to_numpy() * u.deg)
    ha = src.transform_to(HADec(obstime=t, location=telescope.location())).ha.wrap_at(
        12 * u.hourangle
    )
    assert np.abs(ha.to_value(u.hourangle)).max() * 3600 < 1.0
    assert tr.separation_deg.iloc[0] == pytest.approx(0.1597592)  # VLA list position of 3C48
    assert Time(tr.transit_utc.iloc[0], scale="utc").jd == pytest.approx(tr.transit_jd.iloc[0])


def test_precession_matters():
    """Transiting at the J2000 RA would be ~80 s off; we must not be."""
    tr = calibrator_transits("2025-06-15", "2025-06-16", 30.5).set_index("name").loc["3C286"]
    lst_at = lst_hours(tr.transit_jd)[0] * 15
    offset_s = (lst_at - tr.ra_deg) / 15 * 3600
    assert 30 < abs(offset_s) < 150


def test_transits_month_is_fast_and_covers_all_in_tolerance():
    t0 = time.perf_counter()
    tr = calibrator_transits(Time("2025-06-01"), Time("2025-07-01"), 49.0, tolerance_deg=1.5)
    assert time.perf_counter() - t0 < 2.0
    # Every usable VLA-list calibrator within 1.5 deg of dec 49 (3C147 among them), and no other.
    cat = load_calibrators()
    assert set(tr.name) == set(cat.name[(cat.dec_deg - 49.0).abs() <= 1.5]) and "3C147" in set(tr.name)
    assert tr.transit_jd.is_monotonic_increasing
    assert all(29 <= n <= 31 for n in tr.name.value_counts())


def test_transits_none_in_tolerance_and_custom_catalogue():
    assert calibrator_transits(JD0, JD0 + 1, 86.0).empty  # no usable calibrator north of dec 84
    cat = load_calibrators().query("name == '3C286'")
    assert len(calibrator_transits(JD0, JD0 + 3, 30.5, catalogue=cat)) == 3
    with pytest.raises(ValueError, match="before start"):
        calibrator_transits(JD0 + 1, JD0, 30.5)


def test_group_containing():
    dur = telescope.OBSERVATION_S / 86400
    starts = JD0 + np.arange(5) * dur
    ids = [f"g{i}" for i in range(5)]
    assert group_containing(starts[2] + dur / 2, starts, ids) == "g2"
    assert group_containing(starts[3], starts) == 3  # boundary goes to the later group
    assert group_containing(starts[0] - 1e-6, starts) is None
    assert group_containing(starts[4] + dur + 1e-6, starts) is None
    gaps = {"a": (JD0, JD0 + dur), "b": (JD0 + 1, JD0 + 1 + dur)}
    assert group_containing(JD0 + 1 + dur / 3, gaps) == "b"
    assert group_containing(JD0 + 0.5, gaps) is None


def _targets(hours, dec=30.5):
    return [GroupInfo(f"t{h:+.0f}", JD0 + h * H, dec) for h in hours]


def test_one_transit_serves_every_target():
    cals = [CalInfo("cal", JD0, 30.5, True)]
    got = choose_calibration(_targets([-5, -1, 0, 2, 5]), cals)
    assert {c.calgroup for c in got.values()} == {"cal"}
    assert all(c.warning is None for c in got.values())
    assert got["t+2"].separation_h == pytest.approx(2.0)


def test_two_transits_nearest_wins():
    cals = [CalInfo("early", JD0, 30.5, True), CalInfo("late", JD0 + 10 * H, 30.5, True)]
    got = choose_calibration(_targets([-2, 3, 7, 12]), cals)
    assert [got[t].calgroup for t in ("t-2", "t+3", "t+7", "t+12")] == [
        "early", "early", "late", "late"
    ]


def test_failed_qa_falls_back_and_other_dec_ignored():
    cals = [
        CalInfo("bad", JD0, 30.5, False),
        CalInfo("otherdec", JD0, 33.2, True),
        CalInfo("good", JD0 + 4 * H, 30.5, True),
    ]
    got = choose_calibration(_targets([0]), cals)
    assert got["t+0"] == Choice("good", pytest.approx(4.0), None)


def test_warning_beyond_6h():
    got = choose_calibration(_targets([8]), [CalInfo("cal", JD0, 30.5, True)])
    assert got["t+8"].calgroup == "cal"
    assert "8.0 h" in got["t+8"].warning


@pytest.mark.parametrize(
    "cals, why",
    [
        ([CalInfo("cal", JD0 + 13 * H, 30.5, True)], "13.0 h away"),
        ([CalInfo("cal", JD0, 40.0, True)], "no calibrator group at declination"),
        ([CalInfo("a", JD0, 30.5, False), CalInfo("b", JD0 + H, 30.5, False)], "failed QA"),
    ],
)
def test_no_calibration_errors(cals, why):
    with pytest.raises(NoCalibrationError, match=why) as err:
        choose_calibration(_targets([0]), cals)
    assert "t+0" in str(err.value)


def test_pinned_overrides():
    cals = [CalInfo("near", JD0, 30.5, True), CalInfo("far", JD0 + 20 * H, 30.5, False)]
    got = choose_calibration(_targets([0, 1]), cals, pinned={"t+1": "far"})
    assert got["t+0"].calgroup == "near"
    assert got["t+1"].calgroup == "far"
    assert "failed QA" in got["t+1"].warning and "19.0 h" in got["t+1"].warning
    assert choose_calibration(_targets([0]), cals, pinned="near")["t+0"].warning is None
    with pytest.raises(KeyError, match="nope"):
        choose_calibration(_targets([0]), cals, pinned="nope")
