"""Bright-source subtraction before imaging: a 15-Jy source in the field, one beside it, against the truth.

A compact-core observation (as tests/test_imaging.py: unit gains, data in Jy)
holds moderate field sources plus a bright one whose apparent flux changes
across the band and the drift. Imaged as it is, the bright source leaves
sidelobes; subtracted through the drifting beam (and put back into the image
at its position with its fitted flux when it lies in the field), the image
around it is at the noise, the field sources keep their true fluxes, and the
restored source its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from needs import require_tool
from simdata import point_sky, simulate
from test_imaging import CORE, GROUP, _image, measure_sources, true_fluxes

from dsa110_contimg import naming
from dsa110_contimg.calibration import subtract
from dsa110_contimg.calibration.caltables import read_ms_info
from dsa110_contimg.raw.convert import convert_group

# restore_min_beam: these 1024-pixel images end where the beam is ~0.5 (tests/test_imaging.py); in
# the pipeline the image reaches imaging.pb_cutoff, the option's value there.
OPTS = subtract.SubtractOptions(enabled=True, min_apparent_jy=1.0, radius_deg=10.0, spectral_index=-0.7,
                                restore_min_beam=0.5)
# (dRA cos dec, dDec) deg, Jy at 1.4 GHz: four field sources at ~100-300 sigma, a bright one last.
FIELD = [((0.0, 0.0), 0.3), ((0.5, 0.4), 0.3), ((-0.6, -0.4), 0.3), ((0.3, -0.8), 0.4)]
IN_FIELD = (-0.9, 0.3)  # inside the 1024-pixel image (half width ~1.3 deg), beam ~0.7
OUTSIDE = (-1.9, 0.0)  # beyond the image's edge, beam ~0.3


@pytest.fixture(scope="module", autouse=True)
def _wsclean():
    require_tool("wsclean")


def _observation(tmp, bright_offset):
    spec = FIELD + [(bright_offset, 15.0)]
    sky = point_sky(CORE, offsets_deg=[o for o, _ in spec])
    sky["flux_jy"] = [f for _, f in spec]
    sky.loc[sky.index[-1], "name"] = "BRIGHT"
    files = simulate(tmp, CORE, sky=sky, gains=False, correlator_gain=1.0, calibrators=False)
    results = tmp / "results"
    ms = Path(naming.product_path(results, "calibrated", GROUP))
    ms.parent.mkdir(parents=True, exist_ok=True)
    convert_group(files, ms)
    return {"tmp": tmp, "results": results, "ms": ms, "sky": sky}


def _subtracted(obs):
    """A copy of the observation's MS with the bright sources subtracted (the catalogue is the truth)."""
    results = obs["tmp"] / "subtracted"
    ms = Path(naming.product_path(results, "calibrated", GROUP))
    ms.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(obs["ms"], ms)
    info = read_ms_info(str(ms))
    chosen = subtract.choose(obs["sky"], info.times_jd, info.pointing_dec_app, OPTS)
    record = subtract.subtract(str(ms), chosen, info.pointing_dec_app, OPTS)
    return dict(obs, results=results, ms=ms), record


def _rms_near(run, ra_deg, dec_deg, inner_deg=0.05, outer_deg=0.5):
    """Rms (Jy) of the residual image in an annulus around a position."""
    with fits.open(run["outputs"]["residual"]) as hdul:
        data, wcs = np.asarray(hdul[0].data, float).squeeze(), WCS(hdul[0].header).celestial
        cell = abs(hdul[0].header["CDELT2"])
    x, y = wcs.world_to_pixel_values(ra_deg, dec_deg)
    yy, xx = np.indices(data.shape)
    r = np.hypot(xx - x, yy - y) * cell
    sel = (r > inner_deg) & (r < outer_deg) & np.isfinite(data)
    assert sel.sum() > 1000, "the annulus must lie in the image"
    return float(np.std(data[sel]))


@pytest.fixture(scope="module")
def in_field(tmp_path_factory):
    obs = _observation(tmp_path_factory.mktemp("sub_in"), IN_FIELD)
    sub, record = _subtracted(obs)
    restore = [s for s in record["sources"] if s["restored"]]
    return obs, _image(obs, "wsclean"), sub, _image(sub, "wsclean", restore=restore), record


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    obs = _observation(tmp_path_factory.mktemp("sub_out"), OUTSIDE)
    sub, record = _subtracted(obs)
    return obs, _image(obs, "wsclean"), sub, _image(sub, "wsclean"), record


def test_choose_picks_only_sources_bright_through_the_beam(in_field):
    obs, *_, record = in_field
    assert [s["name"] for s in record["sources"]] == ["BRIGHT"]
    src = record["sources"][0]
    assert src["restored"] and src["mean_beam"] > 0.3
    # Unit gains and the simulator's own sky: the fitted flux factor is 1 within its error.
    assert src["flux_factor"] == pytest.approx(1.0, abs=max(5 * src["flux_factor_err"], 0.002))


def _check(case, restored: bool, annulus_deg: tuple[float, float]):
    obs, before, sub, after, record = case
    sky = obs["sky"]
    bright = sky.iloc[-1]
    assert record["n_subtracted"] == 1 and record["sources"][0]["restored"] is restored
    rms_before = _rms_near(before, bright.ra_deg, bright.dec_deg, *annulus_deg)
    rms_after = _rms_near(after, bright.ra_deg, bright.dec_deg, *annulus_deg)
    sigma = after["qa"]["thermal_rms_jy"]
    print({"rms_before/thermal": rms_before / sigma, "rms_after/thermal": rms_after / sigma,
           "image rms/thermal": (before["qa"]["rms_over_thermal"], after["qa"]["rms_over_thermal"])})
    assert rms_after < 0.7 * rms_before, "the bright source's sidelobes are gone"
    assert after["qa"]["rms_over_thermal"] < before["qa"]["rms_over_thermal"]
    truth = true_fluxes(sky)
    measured = measure_sources(after, sky)
    field = measured.iloc[:len(FIELD)]
    ratio = field.flux_jy / truth.true_jy.iloc[:len(FIELD)]
    err = np.hypot(after["qa"]["rms_jy"] / field.pb / truth.true_jy.iloc[:len(FIELD)], 0.01)
    print(pd.DataFrame({"ratio": ratio, "err": err, "offset": field.offset_arcsec}))
    assert (np.abs(ratio - 1) < 3 * err).all(), "field sources keep their true fluxes"
    return measured, truth


def test_a_bright_source_in_the_field_is_subtracted_and_restored(in_field):
    measured, truth = _check(in_field, restored=True, annulus_deg=(0.05, 0.5))
    print("restored source: measured / true", measured.flux_jy.iloc[-1] / truth.true_jy.iloc[-1])
    # The restored source: its fitted flux through the imaging-weighted beam, read back through the image's
    # beam; exact points, so within the fit's own accuracy (CLEAN's pixel grid used to add up to 2%).
    assert measured.flux_jy.iloc[-1] / truth.true_jy.iloc[-1] == pytest.approx(1.0, abs=0.005)


def test_a_bright_source_outside_the_field_is_removed(outside):
    _check(outside, restored=False, annulus_deg=(0.6, 1.3))  # the image's edge nearest the source
    *_, record = outside
    assert record["sources"][0]["mean_beam"] < OPTS.restore_min_beam


def test_nothing_bright_is_a_recorded_no_op(in_field):
    obs, *_ = in_field
    info = read_ms_info(str(obs["ms"]))
    faint = obs["sky"].iloc[:len(FIELD)]
    chosen = subtract.choose(faint, info.times_jd, info.pointing_dec_app, OPTS)
    assert chosen.empty
    record = subtract.subtract(str(obs["ms"]), chosen, info.pointing_dec_app, OPTS)
    assert record["status"] == "none" and "1 Jy" in record["reason"]

