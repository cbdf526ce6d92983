"""Imaging: fluxes, positions and noise of images of simulated observations, with
WSClean and with tclean; the drift-scan primary beam; bad input; the QA grade.

The observations are simulated with a compact core (24 antennas within 450 m
of the array centre, ~60" resolution), so 1024-pixel images cover the primary
beam out to ~1.3 deg, where it falls to ~0.5; full resolution (4.5 km
baselines, 10") would need images 8x larger. Unit gains and a correlator gain
of 1 make the simulated data already calibrated (Jy), as rule
apply_calibration delivers them.

The truth every image is checked against is computed here the way the
simulator computes the sky (apparent positions, Airy beam per integration and
channel), not with the pipeline's primary-beam code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from casacore import tables
from independent import aperture_power, pointing_separation
from needs import require_tool
from pictures import assert_picture
from simdata import SMALL, point_sky, simulate

from dsa110_contimg import naming, telescope
from dsa110_contimg.config import validate_config
from dsa110_contimg.db import Database
from dsa110_contimg.imaging import imager as imaging
from dsa110_contimg.imaging import primary_beam
from dsa110_contimg.imaging import qa as image_qa
from dsa110_contimg.raw.convert import convert_group
from dsa110_contimg.sim.observation import REFERENCE_FREQ_HZ, noise_sigma_jy
from dsa110_contimg.stages.image import OUTPUT_KINDS
from dsa110_contimg.stages.image import image as image_stage


def outputs_for(results, group):
    return {k: v for k, v in naming.rule_outputs(results, "image", group=group).items() if k in OUTPUT_KINDS}


CORE = replace(SMALL, n_ants=24, max_radius_m=450, n_int=24, n_chan=8, seed=7)
IMSIZE = 1024
GROUP = naming.format_timestamp(CORE.start)

# (dRA cos dec, dDec) from the meridian at mid time (deg), flux at 1.4 GHz (Jy, alpha -0.7).
# Bright sources sit at 150-250 sigma (apparent) so noise moves their flux by < 0.7%;
# two faint ones (< 20 sigma) are there to be found, not to be measured to 2%.
FIELD = [
    ((0.0, 0.0), 0.25), ((0.5, 0.4), 0.3), ((-0.7, -0.3), 0.3), ((0.25, -0.9), 0.35),
    ((-1.0, 0.6), 0.5), ((0.9, -0.2), 0.35), ((0.3, 0.8), 0.012), ((-0.4, -0.6), 0.008),
]
FAINT = [((0.0, 0.0), 0.03), ((0.5, 0.4), 0.02), ((-0.7, -0.3), 0.03), ((0.25, -0.9), 0.02)]

@pytest.fixture(scope="module", autouse=True)
def _wsclean():
    require_tool("wsclean")


def _observe(tmp, sky_spec, **changes):
    """Simulate one calibrated observation; the MS sits where rule apply_calibration puts it."""
    sky = point_sky(CORE, offsets_deg=[o for o, _ in sky_spec])
    sky["flux_jy"] = [f for _, f in sky_spec]
    files = simulate(tmp, CORE, sky=sky, gains=False, correlator_gain=1.0, calibrators=False, **changes)
    results = tmp / "results"
    ms = naming.product_path(results, "calibrated", GROUP)
    os.makedirs(os.path.dirname(ms), exist_ok=True)
    convert_group(files, ms)
    return {"tmp": tmp, "results": results, "ms": ms, "sky": sky}


def _config(results, **imaging_options):
    return validate_config({
        "raw_dir": str(results.parent / "raw"),
        "results_dir": str(results),
        "imaging": {"imsize": IMSIZE, **imaging_options},
    })


def _image(obs, imager, results=None, averaged=None, restore=None, **options):
    results = results or obs["results"] / imager
    config = _config(results, imager=imager, **options)
    outputs = outputs_for(results, GROUP)
    qa = image_stage(obs["ms"], outputs, GROUP, config, threads=2, mem_mb=4000,
                     log=naming.log_path(results, "image", GROUP), averaged=averaged, restore=restore)
    return {"qa": qa, "outputs": outputs, "config": config, "results": results}


def true_fluxes(sky: pd.DataFrame, opts=CORE) -> pd.DataFrame:
    """Apparent (beam-attenuated) and beam-corrected band-averaged true fluxes, as the simulator sees them.

    apparent = mean over integrations and channels of S(f) A(theta_t, f);
    corrected = apparent / mean A = the band average of S(f) weighted by the beam.
    The beam and the pointing come from tests/independent.py (astropy frames and
    the aperture integral), not from the pipeline's geometry and beam modules.
    """
    jd = Time(opts.start).jd + (np.arange(opts.n_int) + 0.5) * telescope.INTEGRATION_S / 86400
    f = np.concatenate([telescope.subband_frequencies(k, opts.n_chan) for k in opts.subbands])
    ra, dec = np.radians(sky.ra_deg.to_numpy()), np.radians(sky.dec_deg.to_numpy())
    theta = pointing_separation(jd, ra, dec, np.radians(opts.dec_deg))
    a = aperture_power(theta[:, :, None], f[None, None, :])
    s = sky.flux_jy.to_numpy()[:, None] * (f / REFERENCE_FREQ_HZ)[None, :] ** sky.spectral_index.to_numpy()[:, None]
    out = sky.copy()
    out["apparent_jy"] = (s[:, None, :] * a).mean(axis=(1, 2))
    out["mean_beam"] = a.mean(axis=(1, 2))
    out["true_jy"] = out.apparent_jy / out.mean_beam
    return out


def measure_sources(run, sky: pd.DataFrame) -> pd.DataFrame:
    """Fit every true source in the corrected image: flux (Jy), position offset (arcsec)."""
    with fits.open(run["outputs"]["pbcor"]) as hdul:
        header, data = hdul[0].header, np.asarray(hdul[0].data, float)
    wcs = WCS(header)
    bm = (header["BMAJ"], header["BMIN"], header["BPA"])
    pb = fits.getdata(run["outputs"]["pb"])
    rows = []
    for _, src in sky.iterrows():
        fit = image_qa.fit_point_source(data, wcs, src.ra_deg, src.dec_deg, bm, free_shape=False)
        x, y = wcs.all_world2pix([[src.ra_deg, src.dec_deg]], 0)[0]
        rows.append({"flux_jy": fit.flux_jy, "offset_arcsec": fit.offset_arcsec,
                     "pb": float(pb[int(round(y)), int(round(x))])})
    return pd.DataFrame(rows, index=sky.index)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return _observe(tmp_path_factory.mktemp("field"), FIELD)


@pytest.fixture(scope="module")
def faint(tmp_path_factory):
    return _observe(tmp_path_factory.mktemp("faint"), FAINT)


@pytest.fixture(scope="module")
def field_images(field):
    return {imager: _image(field, imager) for imager in ("wsclean", "tclean")}


@pytest.fixture(scope="module")
def faint_images(faint):
    return {imager: _image(faint, imager) for imager in ("wsclean", "tclean")}


# --------------------------------------------------------------- unit checks


def test_thermal_noise_is_the_radiometer_equation(faint):
    """Natural weighting: SEFD / sqrt(n_pol N(N-1) B T), and the simulator's per-visibility sigma."""
    info = imaging.inspect_ms(faint["ms"])
    opts = imaging.ImagingOptions(imsize=IMSIZE, cell_arcsec=10.0, weighting="natural")
    noise = imaging.expected_noise(info, opts)
    n_ant, n_chan = CORE.n_ants, info.freq_hz.size
    bandwidth = n_chan * telescope.channel_width(CORE.n_chan)
    t_obs = CORE.n_int * telescope.INTEGRATION_S
    radiometer = CORE.sefd_jy / np.sqrt(2 * n_ant * (n_ant - 1) * bandwidth * t_obs)
    assert noise.sigma_jy == pytest.approx(radiometer, rel=1e-6)
    n_vis = n_ant * (n_ant - 1) // 2 * CORE.n_int * n_chan
    assert noise.sigma_jy == pytest.approx(noise_sigma_jy(CORE) / np.sqrt(2 * n_vis), rel=1e-6)
    briggs = imaging.expected_noise(info, replace(opts, weighting="briggs", robust=0.0))
    assert 1.1 < briggs.sigma_jy / noise.sigma_jy < 2.0, "Briggs 0 costs sensitivity"
    assert briggs.weights_tf.shape == (CORE.n_int, n_chan)


def test_cell_size_follows_the_longest_baseline(faint):
    info = imaging.inspect_ms(faint["ms"])
    lam = 299792458.0 / info.freq_hz.max()
    expected = np.degrees(lam / info.max_baseline_m) * 3600 / 5
    cell = imaging.cell_size_arcsec(info, pixels_per_beam=5)
    assert expected * 0.99 <= cell <= expected
    assert 500 < info.max_baseline_m < 900 and info.n_antennas == CORE.n_ants


def test_derived_field_reaches_the_primary_beam_cutoff(faint):
    """Without imsize the image reaches, along RA, just past where the drift-averaged beam falls to pb_cutoff."""
    info = imaging.inspect_ms(faint["ms"])
    opts = imaging.ImagingOptions(imsize=None)
    size = imaging.derive_field(info, opts)
    dec_app = primary_beam.pointing_declination(info.field_ra_rad, info.field_dec_rad, info.mid_jd)
    pointing = primary_beam.make_pointing(info.jd, info.freq_hz, imaging.natural_weights_tf(info), dec_app)
    edge = np.radians(size.imsize * size.cell_arcsec / 2 / 3600)
    ra = info.field_ra_rad + np.array([-edge, -0.97 * edge, 0.97 * edge, edge]) / np.cos(info.field_dec_rad)
    b = primary_beam.effective_beam(ra, np.full(4, info.field_dec_rad), pointing)
    assert b[0] < opts.pb_cutoff and b[3] < opts.pb_cutoff  # the image edge is beyond the cut-off
    assert max(b[1], b[2]) > opts.pb_cutoff  # and not far beyond it
    assert size.cell_arcsec == imaging.cell_size_arcsec(info, 3)
    assert 2.1 < size.half_width_deg < 2.5 and size.imsize % 2 == 0


def test_drift_beam_matches_the_simulated_attenuation(field):
    """The pipeline's beam (from the MS alone) equals the simulator's time- and band-averaged Airy pattern."""
    info = imaging.inspect_ms(field["ms"])
    dec_app = primary_beam.pointing_declination(info.field_ra_rad, info.field_dec_rad, info.mid_jd)
    assert np.degrees(dec_app) == pytest.approx(CORE.dec_deg, abs=1e-6)
    pointing = primary_beam.make_pointing(info.jd, info.freq_hz, np.ones((info.jd.size, info.freq_hz.size)), dec_app)
    truth = true_fluxes(field["sky"])
    pb = primary_beam.effective_beam(np.radians(truth.ra_deg), np.radians(truth.dec_deg), pointing)
    np.testing.assert_allclose(pb, truth.mean_beam, rtol=1e-4)
    # The drift matters: the instantaneous beam at mid time is not the image's beam.
    mid = primary_beam.make_pointing([info.mid_jd], info.freq_hz, np.ones((1, info.freq_hz.size)), dec_app)
    pb_mid = primary_beam.effective_beam(np.radians(truth.ra_deg), np.radians(truth.dec_deg), mid)
    assert np.max(np.abs(pb_mid / pb - 1)) > 0.03, "at the 2% level the drift matters"


def test_restoring_beam_fit_and_position_angle_convention():
    """A Gaussian PSF of known shape is fitted back; the PA is north through east."""
    header = fits.Header({"NAXIS": 2, "NAXIS1": 128, "NAXIS2": 128, "CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN",
                          "CRVAL1": 150.0, "CRVAL2": 30.0, "CRPIX1": 65, "CRPIX2": 65,
                          "CDELT1": -5 / 3600, "CDELT2": 5 / 3600, "CUNIT1": "deg", "CUNIT2": "deg"})
    wcs = WCS(header)
    beam_in = (60 / 3600, 40 / 3600, 30.0)
    inv = imaging.beam_inverse_covariance(wcs, 64, 64, beam_in)
    yy, xx = np.mgrid[0:128, 0:128] - 64
    psf = np.exp(-0.5 * (inv[0, 0] * xx * xx + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy))
    bmaj, bmin, bpa = imaging.fit_restoring_beam(psf, wcs)
    assert bmaj * 3600 == pytest.approx(60, rel=1e-3) and bmin * 3600 == pytest.approx(40, rel=1e-3)
    assert bpa == pytest.approx(30.0, abs=0.1)
    # PA 30 deg east of north: the major axis points up and to the left (east) on the sky image.
    assert psf[64 + 8, 64 - 5] > psf[64 + 8, 64 + 5]


def test_grade_thresholds():
    th = image_qa.GradeThresholds()
    assert image_qa.grade(1.1, 1.0, -0.005, 0.001, th)[0] == "good"
    assert image_qa.grade(1.8, 1.0, -0.005, 0.001, th)[0] == "marginal"
    assert image_qa.grade(3.5, 1.0, -0.005, 0.001, th)[0] == "bad"
    assert image_qa.grade(1.1, 1.0, -0.6, 0.001, th)[0] == "bad", "deep negative artefacts"
    assert image_qa.grade(1.1, 0.005, -0.005, 0.001, th)[0] == "marginal", "nothing detected"
    assert image_qa.grade(1.0, 0.005, -0.0049, 0.001, th)[0] == "marginal", "noise negatives are not artefacts"
    assert image_qa.grade(float("nan"), 1.0, -0.005, 0.001, th)[0] == "bad"


def test_imager_commands_follow_the_options(tmp_path):
    opts = imaging.ImagingOptions(imsize=512, cell_arcsec=3.0, robust=0.5, niter=100, auto_mask=None)
    cmd = imaging.wsclean_command("x.ms", tmp_path / "p", opts, threads=2, mem_mb=8192)
    text = " ".join(cmd)
    assert "-no-update-model-required" in cmd and "-auto-mask" not in cmd
    assert "-size 512 512" in text and "-scale 3asec" in text and "-weight briggs 0.5" in text
    assert "-j 2" in text and "-abs-mem 7.20" in text
    params = imaging.tclean_parameters("x.ms", tmp_path / "p", opts)
    assert params["usemask"] == "user" and params["robust"] == 0.5 and params["nsigma"] == 3.0
    assert params["gridder"] == "wproject" and params["cell"] == "3arcsec"
    # bounded major cycles, the same in both imagers
    opts = imaging.ImagingOptions(imsize=512, cell_arcsec=3.0, mgain=0.85, max_major_cycles=3)
    assert "-nmiter 3" in " ".join(imaging.wsclean_command("x.ms", tmp_path / "p", opts, 2, None))
    params = imaging.tclean_parameters("x.ms", tmp_path / "p", opts)
    assert params["nmajor"] == 3 and params["maxpsffraction"] == pytest.approx(0.15)
    # a flux and a spectral slope per component: WSClean joins channels, tclean runs mtmfs; flat by default
    assert "-join-channels" not in cmd and params["deconvolver"] == "hogbom" and "nterms" not in params
    opts = imaging.ImagingOptions(imsize=512, cell_arcsec=3.0, spectral_terms=2, spectral_channels=6)
    assert "-join-channels -channels-out 6 -fit-spectral-pol 2" in " ".join(
        imaging.wsclean_command("x.ms", tmp_path / "p", opts, 2, None))
    params = imaging.tclean_parameters("x.ms", tmp_path / "p", opts)
    assert params["deconvolver"] == "mtmfs" and params["nterms"] == 2
    with pytest.raises(ValueError, match="imager"):
        imaging.ImagingOptions(imager="aips")


# ---------------------------------------------------------- science outcomes


@pytest.mark.parametrize("imager", ["wsclean", "tclean"])
def test_sources_recovered_in_the_corrected_image(field, field_images, imager):
    """Every source above 20 sigma: flux within 2% of the truth, position within a tenth of the beam."""
    run = field_images[imager]
    qa = run["qa"]
    truth = true_fluxes(field["sky"])
    got = measure_sources(run, truth)
    bright = truth.apparent_jy / qa["rms_jy"] > 20
    assert bright.sum() == 6 and not bright.iloc[6:].any()
    ratio = got.flux_jy[bright] / truth.true_jy[bright]
    beam_minor = qa["beam_minor_arcsec"]
    report = pd.DataFrame({"snr": truth.apparent_jy / qa["rms_jy"], "pb": got.pb, "true": truth.true_jy,
                           "measured": got.flux_jy, "ratio": got.flux_jy / truth.true_jy,
                           "offset_arcsec": got.offset_arcsec})
    print(f"\n{imager}: rms {qa['rms_jy'] * 1e3:.3f} mJy, beam {qa['beam_major_arcsec']:.1f}\" x {beam_minor:.1f}\"\n"
          f"{report.round(4).to_string()}")
    assert np.all(np.abs(ratio - 1) < 0.02), report
    assert np.all(got.offset_arcsec[bright] < beam_minor / 10), report
    # The products, the sidecar and the database row.
    for kind, path in run["outputs"].items():
        if kind != "thumbnail":
            assert fits.getheader(path)["NAXIS"] == 2, kind
    assert_picture(run["outputs"]["thumbnail"])
    sidecar = json.loads(open(naming.sidecar_path(run["outputs"]["image"])).read())
    assert sidecar["kind"] == "image" and sidecar["status"] == "ok" and sidecar["qa"]["imager"] == imager
    for key in ("rms_jy", "peak_jy", "dynamic_range", "beam_major_arcsec", "beam_minor_arcsec", "beam_pa_deg",
                "n_sources_5sigma", "grade", "thermal_rms_jy", "rms_over_thermal", "imager", "ra_deg", "dec_deg",
                "freq_hz"):
        assert sidecar["qa"][key] is not None, key
    assert qa["grade"] in ("good", "marginal") and qa["n_sources_5sigma"] >= 6
    assert 0 <= qa["ra_deg"] < 360 and qa["dec_deg"] == pytest.approx(field["sky"].dec_deg[0], abs=0.01)
    with Database.from_config(run["config"]) as db:
        rows = db.list_products(kind="image")
    assert len(rows) == 1 and rows[0]["grade"] == qa["grade"]


def test_wsclean_and_tclean_agree(field, field_images):
    truth = true_fluxes(field["sky"])
    ws = measure_sources(field_images["wsclean"], truth)
    tc = measure_sources(field_images["tclean"], truth)
    bright = truth.apparent_jy / field_images["tclean"]["qa"]["rms_jy"] > 20
    ratio = ws.flux_jy[bright] / tc.flux_jy[bright]
    print(f"\nWSClean / tclean flux: {ratio.round(4).tolist()}")
    assert np.all(np.abs(ratio - 1) < 0.02)
    qa_ws, qa_tc = field_images["wsclean"]["qa"], field_images["tclean"]["qa"]
    assert qa_ws["beam_major_arcsec"] == pytest.approx(qa_tc["beam_major_arcsec"], rel=0.02)
    assert qa_ws["beam_pa_deg"] == pytest.approx(qa_tc["beam_pa_deg"], abs=3)


@pytest.mark.parametrize("imager", ["wsclean", "tclean"])
def test_image_noise_matches_the_thermal_expectation(faint_images, imager):
    qa = faint_images[imager]["qa"]
    print(f"\n{imager}: rms {qa['rms_jy'] * 1e3:.3f} mJy/beam, thermal {qa['thermal_rms_jy'] * 1e3:.3f} "
          f"(natural {qa['natural_thermal_rms_jy'] * 1e3:.3f}), ratio {qa['rms_over_thermal']:.3f}")
    assert abs(qa["rms_over_thermal"] - 1) < 0.25
    assert qa["grade"] == "good"


def test_tclean_beam_convention_agrees_with_casa(field_images):
    """Our fit of the PSF gives CASA's own restoring beam (size and position angle)."""
    run = field_images["tclean"]
    own = json.loads(open(naming.sidecar_path(run["outputs"]["image"])).read())["qa"]["imager_beam"]
    qa = run["qa"]
    assert qa["beam_major_arcsec"] == pytest.approx(own[0], rel=0.03)
    assert qa["beam_minor_arcsec"] == pytest.approx(own[1], rel=0.03)
    assert (qa["beam_pa_deg"] - own[2] + 90) % 180 - 90 == pytest.approx(0, abs=3)


# ------------------------------------------------------------------ bad input


def _copy_ms(obs, tmp_path, name):
    results = tmp_path / name
    ms = naming.product_path(results, "calibrated", GROUP)
    shutil.copytree(obs["ms"], ms)
    return results, ms


@pytest.mark.parametrize("problem", ["flagged", "zero"])
def test_unusable_data_is_a_clear_error_and_nothing_is_registered(field, tmp_path, problem):
    results, ms = _copy_ms(field, tmp_path, problem)
    with tables.table(ms, readonly=False, ack=False) as t:
        if problem == "flagged":
            t.putcol("FLAG", np.ones(t.getcol("FLAG").shape, bool))
        else:
            t.putcol("DATA", np.zeros(t.getcol("DATA").shape, np.complex64))
    obs = dict(field, ms=ms)
    with pytest.raises(imaging.ImagingError, match="flagged" if problem == "flagged" else "zero"):
        _image(obs, "wsclean", results=results)
    assert not (results / "images").exists() or not any((results / "images").iterdir())
    with Database.from_config(_config(results)) as db:
        assert db.list_products(kind="image") == []


def test_uncalibrated_data_are_graded_bad(field, tmp_path):
    """Random antenna phases (no calibration) scatter the flux: registered, but graded bad."""
    results, ms = _copy_ms(field, tmp_path, "poor")
    rng = np.random.default_rng(3)
    with tables.table(ms, readonly=False, ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        phase = rng.uniform(-np.pi, np.pi, max(a1.max(), a2.max()) + 1)
        t.putcol("DATA", t.getcol("DATA") * np.exp(1j * (phase[a1] - phase[a2]))[:, None, None].astype(np.complex64))
    run = _image(dict(field, ms=ms), "wsclean", results=results)
    qa = run["qa"]
    print(f"\nuncalibrated: rms {qa['rms_over_thermal']:.1f} x thermal, grade {qa['grade']}: {qa['grade_reasons']}")
    assert qa["grade"] == "bad"
    sidecar = json.loads(open(naming.sidecar_path(run["outputs"]["image"])).read())
    assert sidecar["status"] == "failed_qa"
    with Database.from_config(run["config"]) as db:
        rows = db.list_products(kind="image")
    assert len(rows) == 1 and rows[0]["grade"] == "bad"


# -------------------------------------------------------------------- workflow


def test_rule_image_is_planned_with_all_its_products(snakemake_exe, repo_root, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for sb in range(16):
        (raw / naming.raw_filename(CORE.start + timedelta(seconds=sb % 2), sb)).touch()
    target = naming.product_path("results", "image", GROUP)
    result = subprocess.run(
        [str(snakemake_exe), "-n", target, "--snakefile", str(repo_root / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(repo_root / "config" / "config.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    for path in outputs_for("results", GROUP).values():
        assert path in text
    assert "rule image:" in text and "threads: 2" in text


def test_averaging_within_the_smearing_budget_keeps_the_fluxes(field, field_images, tmp_path):
    """The averaging plan for the PB-wide field, applied with CASA mstransform: fluxes of every source above
    20 sigma stay within 0.5% of the unaveraged image's and within 2% of the truth; 2x fewer visibilities."""
    from simdata import run_casa

    averaged = tmp_path / "averaged.ms"
    plan = run_casa(f"""
        from dsa110_contimg.calibration import caltables
        from dsa110_contimg.config import validate_config
        from dsa110_contimg.imaging import averaging
        config = validate_config({{}})
        meta = caltables.averaging_inputs({str(field["ms"])!r})
        plan = averaging.plan_for_observation(**meta, imaging=dict(config["imaging"]),
                                              budget=config["calibration"]["smearing_budget"],
                                              model_error=config["calibration"]["smearing_model_error"])
        cta.mstransform(vis={str(field["ms"])!r}, outputvis={str(averaged)!r}, datacolumn="data",
                        chanaverage=plan.channels > 1, chanbin=max(plan.channels, 2),
                        timeaverage=plan.integrations > 1,
                        timebin=f"{{plan.integrations * {telescope.INTEGRATION_S} * 1.0001:.4f}}s")
        result = plan.record()
    """, tmp_path)
    print(f"\naveraging plan: {plan}")
    assert plan["channels"] * plan["integrations"] >= 2 and plan["residual"] <= 0.01
    with tables.table(str(averaged), ack=False) as t, tables.table(str(field["ms"]), ack=False) as t0:
        n_avg = t.nrows() * t.getcell("DATA", 0).shape[0]
        n_full = t0.nrows() * t0.getcell("DATA", 0).shape[0]
    assert n_avg * plan["channels"] * plan["integrations"] == n_full

    run = _image({"ms": str(averaged)}, "wsclean", results=tmp_path / "results",
                 averaged=(plan["channels"], plan["integrations"]))
    truth = true_fluxes(field["sky"])
    got = measure_sources(run, truth)
    ref = measure_sources(field_images["wsclean"], truth)
    bright = truth.apparent_jy / run["qa"]["rms_jy"] > 20
    assert bright.sum() == 6
    vs_full = got.flux_jy[bright] / ref.flux_jy[bright]
    vs_truth = got.flux_jy[bright] / truth.true_jy[bright]
    print(pd.DataFrame({"averaged/full": vs_full, "averaged/truth": vs_truth}).round(4).to_string())
    assert np.all(np.abs(vs_full - 1) < 0.005)
    assert np.all(np.abs(vs_truth - 1) < 0.02)
    assert run["qa"]["rms_over_thermal"] < 1.3 * field_images["wsclean"]["qa"]["rms_over_thermal"]
    # the derived cell puts 3-5.5 pixels across the restoring beam's minor axis
    # The cell is a third of the finest fringe (lambda_min / B_max); the restoring beam's minor axis is
    # 0.85-1.8 of that fringe depending on the uv coverage and weighting: 2.5-5.5 pixels.
    assert 2.5 <= run["qa"]["beam_minor_arcsec"] / run["qa"]["cell_arcsec"] <= 5.5


def _averaged_copy(ms, out, channels: int, tmp_path) -> None:
    from simdata import run_casa

    run_casa(f"""
        cta.mstransform(vis={str(ms)!r}, outputvis={str(out)!r}, datacolumn="data", chanaverage=True,
                        chanbin={channels})
        result = {{}}
    """, tmp_path)


def test_smearing_correction_restores_the_fluxes_of_averaged_data(field, field_images, tmp_path):
    """8 channels averaged (11.7 MHz): sources ~1 deg off axis lose a few per cent of their fitted flux to
    bandwidth smearing; with the smearing response in the beam they agree with the unaveraged image within
    smearing_model_error of that loss (+ 0.2% for noise), and much better than without it."""
    averaged = tmp_path / "averaged8.ms"
    _averaged_copy(field["ms"], averaged, 8, tmp_path)
    obs = {"ms": str(averaged)}
    corrected = _image(obs, "wsclean", results=tmp_path / "corrected", averaged=(8, 1))
    plain = _image(obs, "wsclean", results=tmp_path / "plain", averaged=(8, 1), smearing_correction="none")
    truth = true_fluxes(field["sky"])
    ref = measure_sources(field_images["wsclean"], truth)
    got = measure_sources(corrected, truth)
    raw = measure_sources(plain, truth)
    # The smearing response at each source: the ratio of the two beams the stage wrote.
    response = got.pb / raw.pb
    bright = truth.apparent_jy / corrected["qa"]["rms_jy"] > 20
    loss = 1 - response[bright]
    vs_full = got.flux_jy[bright] / ref.flux_jy[bright]
    raw_vs_full = raw.flux_jy[bright] / ref.flux_jy[bright]
    print(pd.DataFrame({"loss (model)": loss, "uncorrected/full": raw_vs_full, "corrected/full": vs_full})
          .round(4).to_string())
    model_error = validate_config({})["calibration"]["smearing_model_error"]
    assert corrected["qa"]["smearing_corrected"] == "averaging" and plain["qa"]["smearing_corrected"] == "none"
    assert corrected["qa"]["smearing_edge_loss"] == pytest.approx(plain["qa"]["smearing_edge_loss"])
    assert loss.max() > 0.02  # the test sees real smearing
    far = loss > 0.01
    assert far.sum() >= 2
    # uncorrected: the fit loses between half the peak's loss and all of it
    assert np.all(raw_vs_full[far] < 1 - 0.5 * loss[far]) and np.all(raw_vs_full[far] > 1 - 1.2 * loss[far])
    # corrected: within the model error, and at most half the uncorrected error
    assert np.all(np.abs(vs_full - 1) <= model_error * loss + 0.002)
    assert np.all(np.abs(vs_full[far] - 1) < 0.5 * np.abs(raw_vs_full[far] - 1))


@pytest.mark.parametrize("imager", ["wsclean", "tclean"])
def test_the_psf_sidelobe_envelope_is_recorded_from_the_whole_psf(faint_images, imager):
    """Recorded before the PSF product is cropped: it reaches past the kept PSF, below the main lobe."""
    run = faint_images[imager]
    env, qa = run["qa"]["psf_envelope"], run["qa"]
    kept = fits.getdata(run["outputs"]["psf"]).squeeze().shape[0] * qa["cell_arcsec"] / 2 / 60
    assert env["edges_arcmin"][0] == pytest.approx(2 * qa["beam_major_arcsec"] / 60)
    assert env["edges_arcmin"][-1] > kept
    level = np.asarray(env["level"])
    assert len(level) == len(env["edges_arcmin"]) - 1 and ((level > 0) & (level < 0.9)).all()
