"""Bootstrapping a secondary calibrator's flux scale across declinations, against simulated truth.

At dec 60 no flux standard transits (none of 3C48, 3C138, 3C147, 3C286 within 1.5 deg); the
calibrator there is J0014+612 from the VLA list, whose listed flux is ~9% off its true one. The
reference catalogue the sky model uses is given a 5% scale error (all its fluxes high, as a real
survey's scale can be against Perley-Butler 2017), so the secondary's flux fitted against its
field is ~5% off too. The telescope then points at dec 33.15, where 3C48 transits 1.4 h later;
the same system (one seed, one gain epoch) has drifted in between (3%/3 deg per hour random walk
per antenna). Bootstrapped from the 3C48 solution, the secondary's flux, and the absolute scale of
its gains, must come out within 2% of the truth.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from casacore import tables
from test_calibration_sky import OPTS, SKY, gain_errors, simulate_transit

from dsa110_contimg.calibration import bootstrap
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.caltables import GAINS, SolveOptions, solve
from dsa110_contimg.calibration.transits import calibrator_transits
from dsa110_contimg.config import default
from dsa110_contimg.photometry.catalogue import CatalogueOptions, load_catalogue
from dsa110_contimg.provenance import write_sidecar
from dsa110_contimg.stages.calibrate import _bootstrapped

CATALOGUE_SCALE = 1.05  # the reference catalogue's fluxes are 5% high


def _solve(tmp, name, dec, epoch, caltables_dir):
    from astropy.time import Time

    ms, group = simulate_transit(tmp, name, dec, gain_epoch=epoch)
    sky = pd.read_csv(tmp / "truth" / "sky.csv")
    wrong = sky.assign(flux_jy=sky.flux_jy * CATALOGUE_SCALE)
    wrong.to_csv(tmp / "catalogue.csv", index=False)
    caldir = caltables_dir / group
    caldir.mkdir(parents=True)
    qa = solve(str(ms), caldir, SolveOptions(refant=("26",), skymodel=SKY),
               catalogue=load_catalogue(CatalogueOptions(path=str(tmp / "catalogue.csv"))))
    assert qa["passed"] and qa["calibrator"] == name, qa["reason"]
    write_sidecar(caldir, kind="caltable", group=group, qa=qa)
    assert abs(Time(qa["transit_time"]).jd - qa["transit_jd"]) < 1e-6
    return group, qa, sky.set_index("name"), tmp / "truth" / "gains" / f"{group}.npz"


@pytest.fixture(scope="module")
def two_pointings(tmp_path_factory):
    from astropy import units as u
    from astropy.time import Time

    tmp = tmp_path_factory.mktemp("bootstrap")
    first = calibrator_transits("2025-06-15", "2025-06-16", 60.0, 2.0, min_apparent_jy=0).set_index("name")
    epoch = (Time(first.loc["J0014+612", "transit_jd"], format="jd") - 30 * u.min).to_datetime().replace(microsecond=0)
    caltables_dir = tmp / "results" / "caltables"
    sec = _solve(tmp / "dec60", "J0014+612", 60.0, epoch, caltables_dir)
    std = _solve(tmp / "dec33", "3C48", 33.15, epoch, caltables_dir)
    return caltables_dir, sec, std


def test_the_same_system_drifted_between_the_pointings(two_pointings):
    _, (_, _, _, sec_truth), (_, _, _, std_truth) = two_pointings
    a, b = np.load(sec_truth), np.load(std_truth)
    assert list(a["antennas"]) == list(b["antennas"])
    drift = np.abs(b["gain"]).mean(axis=1) / np.abs(a["gain"]).mean(axis=1)  # (ant, pol)
    assert 0.01 < np.std(np.log(drift)) < 0.15, "drifted, by percents, antenna by antenna"


def test_secondary_at_dec_60_takes_its_flux_from_3c48_within_2_percent(two_pointings, tmp_path):
    caltables_dir, (sec_group, sec_qa, sky, sec_truth), (std_group, std_qa, _, _) = two_pointings
    name = sec_qa["calibrator"]
    true_flux = sky.loc[name, "flux_jy"]
    listed = load_calibrators().set_index("name").loc[name, "flux_jy"]
    model_flux = sec_qa["flux_expected_jy"]  # the list's, fitted against the (5% high) field
    assert abs(listed / true_flux - 1) > 0.05, "the list alone is off"
    assert model_flux / true_flux == pytest.approx(CATALOGUE_SCALE, abs=0.015), "the field fit carries the catalogue's scale"
    # No standard at dec 60: the nearest in time at any declination is 3C48, 1.4 h later.
    assert bootstrap.choose_standard({sec_group: sec_qa, std_group: std_qa}, 60.0) is None
    archive = bootstrap.archived_solutions(caltables_dir)
    assert set(archive) == {sec_group, std_group}
    found = bootstrap.choose_standard(archive, 60.0, transit_jd=sec_qa["transit_jd"], max_separation_h=24)
    assert found[0] == std_group and found[1]["calibrator"] == "3C48"
    assert bootstrap.choose_standard(archive, 60.0, transit_jd=sec_qa["transit_jd"], max_separation_h=1.0) is None
    moved = bootstrap.transfer(sec_qa, std_qa)
    flux = model_flux * moved["ratio"]
    print({"true_jy": round(float(true_flux), 4), "list_jy": round(float(listed), 4), "field_fit_jy": round(model_flux, 4),
           "bootstrapped_jy": round(float(flux), 4), "bootstrapped/true": round(float(flux / true_flux), 4),
           "stated_uncertainty": round(moved["ratio_err"], 4), "n_samples": moved["n_samples"]})
    assert flux / true_flux == pytest.approx(1.0, abs=0.02)
    assert moved["ratio_err"] < 0.02 and abs(flux / true_flux - 1) < 3 * moved["ratio_err"] + 0.003

    # Through the stage: the archive is found, the tables rescaled, their absolute scale the truth's.
    cfg = {"bootstrap_max_separation_h": default("calibration.bootstrap_max_separation_h"),
           "bootstrap_max_error": default("calibration.bootstrap_max_error")}
    caldir = caltables_dir / sec_group
    use, record = _bootstrapped(caldir, {sec_group: sec_qa}, sec_group, 60.0, tmp_path / "scaled", cfg,
                                logging.getLogger("test"))
    assert record["source"] == "bootstrapped" and record["standard"] == "3C48"
    assert record["flux_jy"] / true_flux == pytest.approx(1.0, abs=0.02)
    amp_before, _ = gain_errors(caldir, sec_truth, sec_qa["refant"])
    amp_after, _ = gain_errors(use, sec_truth, sec_qa["refant"])
    print({"gain_scale_error_before": round(float(np.median(amp_before)), 4),
           "gain_scale_error_after": round(float(np.median(amp_after)), 4)})
    assert abs(np.median(amp_before)) > 0.015, "the catalogue's scale error reaches the gains"
    assert abs(np.median(amp_after)) < 0.01
    with tables.table(str(use / GAINS), ack=False) as t, tables.table(str(caldir / GAINS), ack=False) as t0:
        assert np.allclose(np.abs(t.getcol("CPARAM")) * np.sqrt(record["flux_ratio"]), np.abs(t0.getcol("CPARAM")))

    # Too uncertain (a limit below the measured spread), or too far: the model's flux stands, with its uncertainty.
    _, record = _bootstrapped(caldir, {sec_group: sec_qa}, sec_group, 60.0, tmp_path / "scaled2",
                              cfg | {"bootstrap_max_error": 1e-4}, logging.getLogger("test"))
    assert record["source"].startswith("reference catalogue") and "uncertain" in record["reason"]
    _, record = _bootstrapped(caldir, {sec_group: sec_qa}, sec_group, 60.0, tmp_path / "scaled3",
                              cfg | {"bootstrap_max_separation_h": 1.0}, logging.getLogger("test"))
    assert "no passing flux-standard solution" in record["reason"] and record["flux_uncertainty"] > 0


def test_gain_epoch_after_the_start_is_refused(tmp_path):
    from dsa110_contimg.sim.observation import simulate_span

    with pytest.raises(ValueError, match="gain_epoch"):
        simulate_span(tmp_path / "raw", replace(OPTS, gain_epoch=OPTS.start.replace(year=2026)), tmp_path / "truth")


def test_a_secondary_candidate_waits_for_the_runs_flux_standards():
    """The plan declares the run's flux-standard solutions within bootstrap_max_separation_h of a
    secondary candidate as inputs of the group's apply_calibration (so its bootstrap can read them)."""
    from dsa110_contimg.calibration.plan import CalibrationPlan, flux_references

    secondary, other, near, far = ("2025-06-16T01:00:00", "2025-06-16T02:00:00", "2025-06-16T03:44:10",
                                   "2025-06-16T12:00:00")
    plan = CalibrationPlan(calgroups={secondary: "J1400+6210", other: "3C147", near: "3C286", far: "3C48"},
                           candidates={"a": [secondary], "b": [near], "c": [other, secondary]})
    assert flux_references(plan, "a", 6.0) == [other, near]  # 1 h and 2.7 h away; 3C48 11 h away is not
    assert flux_references(plan, "a", 12.0) == [other, near, far]
    assert flux_references(plan, "b", 6.0) == []  # a standard candidate needs no bootstrap
    assert flux_references(plan, "c", 6.0) == [near]  # its own candidates are inputs already
    assert flux_references(plan, "nobody", 6.0) == []
