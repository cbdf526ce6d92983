"""Tiered mosaics: selection, plan, primary-beam-weighted build, QA, stages and the workflow.

Images are synthesised (tests/mosaic_sim.py): point sources through a Gaussian
primary beam, convolved with the restoring beam, noise correlated on the beam
scale, on SIN grids overlapping along RA like a drift-scan strip.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from mosaic_sim import ImageSpec, primary_beam, random_sources, write_image
from pictures import assert_picture

from dsa110_contimg import naming
from dsa110_contimg.config import ConfigError, validate_config
from dsa110_contimg.db import Database
from dsa110_contimg.imaging.qa import fit_point_source
from dsa110_contimg.mosaic import MosaicError
from dsa110_contimg.mosaic import build as mosaic_build
from dsa110_contimg.mosaic import plan as mosaic_plan
from dsa110_contimg.mosaic import qa as mosaic_qa
from dsa110_contimg.mosaic import wiring as mosaic_wiring
from dsa110_contimg.stages import mosaic as stage

DEC = 33.0
SPEC = ImageSpec(npix=200, cell_arcsec=60.0, beam_arcsec=240.0, rms_jy=5e-4)
BEAM_DEG = (SPEC.beam_arcsec / 3600, SPEC.beam_arcsec / 3600, 0.0)


def group(k: int, day: str = "2025-06-15", hour: int = 8) -> str:
    """The k-th observation id of a day, 310 s apart."""
    t = datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC).timestamp() + 310 * k
    return naming.format_timestamp(datetime.fromtimestamp(t, UTC))


def strip(folder: Path, ras, sources, spec=SPEC, **kwargs) -> list[tuple[str, str]]:
    """Images along RA (one per entry of ``ras``), as (image, pb) path pairs."""
    pairs = []
    for k, ra in enumerate(ras):
        p = write_image(folder, group(k), ra, DEC, sources, spec, seed=k, **kwargs)
        pairs.append((str(p["image"]), str(p["pb"])))
    return pairs


def options(**kw) -> mosaic_wiring.TierOptions:
    base = dict(max_images=100, pixel_arcsec=60.0, projection="TAN", interpolation="bicubic", pb_cutoff=0.1)
    return mosaic_wiring.TierOptions(**{**base, **kw})


def mosaic_paths(results, day: str, tier: str = "science") -> dict[str, str]:
    """Every file of one mosaic's three rules, by kind (from the product registry)."""
    paths = {}
    for rule in ("plan_mosaic", "build_mosaic", "qa_mosaic"):
        paths |= naming.rule_outputs(results, rule, tier=tier, mosaic=day)
    return paths


def day_selection(tier: str = "science", day: str = "2025-06-15") -> mosaic_wiring.Selection:
    return mosaic_wiring.selection_for(tier, day, validate_config({})["mosaic"], None)


def build(tmp: Path, pairs, opts=None, name="m"):
    plan = mosaic_plan.make_plan(day_selection(), opts or options(), pairs)
    out = {"mosaic": tmp / f"{name}.fits", "mosaic_noise": tmp / f"{name}.noise.fits",
           "mosaic_weights": tmp / f"{name}.weights.fits"}
    qa = mosaic_build.build(plan, out)
    data, noise, wcs, header = mosaic_qa.read_maps(out["mosaic"], out["mosaic_noise"])
    return plan, qa, data, noise, wcs, header, out


def value_at(data: np.ndarray, wcs, ra: float, dec: float) -> float:
    x, y = wcs.wcs_world2pix([[ra, dec]], 0)[0]
    return float(data[int(round(y)), int(round(x))])


# ------------------------------------------------------------ names, config


def test_mosaic_paths_round_trip():
    path = naming.mosaic_path("results", "science", "2025-06-15")
    assert path == "results/mosaics/science/2025-06-15.fits"
    for kind in naming.MOSAIC_PRODUCTS:
        p = naming.mosaic_path("results", "deep", "field1", kind)
        assert naming.parse_mosaic_path(p) == ("deep", "field1", kind)
    assert naming.parse_mosaic_path("r/mosaics/quicklook/2025-06-15T08.noise.fits") == (
        "quicklook", "2025-06-15T08", "mosaic_noise")
    with pytest.raises(ValueError, match="tier"):
        naming.parse_mosaic_path("results/mosaics/huge/x.fits")


def test_config_has_three_tiers_with_defaults_and_rejects_bad_keys():
    cfg = validate_config({})["mosaic"]
    assert [cfg["tiers"][t]["max_images"] for t in naming.MOSAIC_TIERS] == [10, 100, 1000]
    assert cfg["tiers"]["deep"]["grades"] == ["good"] and cfg["tiers"]["quicklook"]["keep"] == "newest"
    with pytest.raises(ConfigError, match="'mosaic.tiers.deep.pixel_size'"):
        validate_config({"mosaic": {"tiers": {"deep": {"pixel_size": 3}}}})
    with pytest.raises(ConfigError, match="mosaic.regions"):
        validate_config({"mosaic": {"regions": {"latest": {"ra_deg": [1, 2], "dec_deg": [3, 4]}}}})


def test_names_select_days_hours_latest_and_regions():
    cfg = validate_config({"mosaic": {"regions": {
        "wrap": {"ra_deg": [350.0, 10.0], "dec_deg": [30.0, 36.0]},
        "later": {"ra_deg": [0.0, 360.0], "dec_deg": [30.0, 36.0], "start": "2025-06-16"},
    }}})["mosaic"]
    ids = [group(k) for k in range(14)] + [group(0, "2025-06-16"), group(0, "2025-06-16", hour=23)]
    index = mosaic_wiring.GroupIndex(ids, DEC)
    day = mosaic_wiring.selection_for("science", "2025-06-15", cfg, index.newest)
    assert index.candidates(day) == ids[:14]
    hour = mosaic_wiring.selection_for("quicklook", "2025-06-15T08", cfg, index.newest)
    assert index.candidates(hour) == [g for g in ids[:14] if g < "2025-06-15T09"]
    latest = mosaic_wiring.selection_for("quicklook", "latest", cfg, index.newest)
    assert index.candidates(latest) == [ids[-1]], "the last hour before the newest observation"
    assert index.candidates(mosaic_wiring.selection_for("deep", "later", cfg, index.newest)) == ids[-2:]
    # Region through RA 0: the meridian (LST) of each group decides at parse time.
    ra = index.pointing_ra_deg()
    inside = [g for g, r in zip(index.ids, ra) if r >= 349 or r <= 11]
    assert index.candidates(mosaic_wiring.selection_for("deep", "wrap", cfg, index.newest)) == inside
    region = mosaic_wiring.regions(cfg)["wrap"]
    assert region.contains([355.0, 5.0, 20.0, 0.0], [33.0, 33.0, 33.0, 40.0]).tolist() == [True, True, False, False]
    with pytest.raises(MosaicError, match="a mosaic name is a UTC day"):
        mosaic_wiring.selection_for("science", "nowhere", cfg, index.newest)
    targets, notes = mosaic_wiring.target_names(index, {**cfg, "targets": {"quicklook": ["latest"],
                                                                   "science": ["daily", "2025-06-20"],
                                                                   "deep": ["regions"]}})
    assert ("science", "2025-06-15") in targets and ("science", "2025-06-16") in targets
    assert ("quicklook", "latest") in targets and ("deep", "later") in targets
    assert any("2025-06-20" in n and "no observation" in n for n in notes)
    nothing = mosaic_wiring.selection_for("science", "2025-06-20", cfg, index.newest)
    assert index.candidates(nothing) == []
    assert "none of the 16 observation(s)" in mosaic_wiring.nothing_selected(nothing, 16)


def test_parse_time_wiring_names_inputs_and_targets():
    config = validate_config({"mosaic": {"targets": {"quicklook": [], "science": ["daily", "2025-07-01"]}}})
    ids = [group(0), group(1), group(0, "2025-06-16")]
    wiring = mosaic_wiring.Wiring("results", ids, config)
    inputs = wiring.inputs("science", "2025-06-15")
    assert inputs == {"images": [f"results/images/{g}.image.fits" for g in ids[:2]],
                      "pbs": [f"results/images/{g}.pb.fits" for g in ids[:2]],
                      "sidecars": [f"results/images/{g}.image.fits.json" for g in ids[:2]]}
    # A name that selects nothing: no inputs, and the plan is written empty with the reason.
    assert wiring.inputs("science", "2025-07-01") == {"images": [], "pbs": [], "sidecars": []}
    assert "none of the 3 observation(s) in raw_dir falls in it" in wiring.left_out("science", "2025-07-01")[""]
    assert wiring.left_out("science", "2025-06-15") == {}
    targets, notes = wiring.targets()
    assert targets == ["results/mosaics/science/2025-06-15.qa.png", "results/mosaics/science/2025-06-16.qa.png"]
    assert len(notes) == 1 and "2025-07-01" in notes[0]
    assert wiring.resource("deep", "mem_mb") == 16000
    config["mosaic"]["exclude_groups"] = [ids[1]]  # e.g. its imaging fails: the day's mosaic goes on without it
    assert mosaic_wiring.Wiring("results", ids, config).inputs("science", "2025-06-15")["images"] == [
        f"results/images/{ids[0]}.image.fits"]


def test_held_back_groups_are_listed_and_a_fully_held_mosaic_gets_an_empty_plan():
    config = validate_config({"mosaic": {"targets": {"quicklook": [], "science": ["daily"]}}})
    ids = [group(0), group(1), group(0, "2025-06-16")]
    held = {group(1): "convert failed: truncated", group(0, "2025-06-16"): "image failed: all flagged"}
    wiring = mosaic_wiring.Wiring("results", [g for g in ids if g not in held], config, held=held)
    assert wiring.inputs("science", "2025-06-15")["images"] == [f"results/images/{ids[0]}.image.fits"]
    assert wiring.left_out("science", "2025-06-15") == {group(1): "convert failed: truncated"}
    assert wiring.left_out("science", "2025-06-16") == {group(0, "2025-06-16"): "image failed: all flagged"}
    targets, notes = wiring.targets()
    assert targets == ["results/mosaics/science/2025-06-15.qa.png", "results/mosaics/science/2025-06-16.qa.png"]
    assert any("2025-06-16" in n and "held back" in n for n in notes)
    # A rolling run's window: only the days of its groups are targets.
    window = mosaic_wiring.Wiring("results", [ids[0]], config, target_ids=[])
    assert window.targets()[0] == []
    config["mosaic"]["enabled"] = False
    assert mosaic_wiring.Wiring("results", ids, config).targets() == ([], [])


# ------------------------------------------------------------------- plan


def test_plan_leaves_out_images_with_reasons(tmp_path):
    src = pd.DataFrame({"ra_deg": [151.0], "dec_deg": [DEC], "flux_jy": [1.0]})
    spec = replace_spec(npix=64, cell_arcsec=180.0)
    folder = tmp_path / "images"
    pairs = []
    rms = [1e-3, 1.1e-3, 0.9e-3, 1e-3, 5e-3, 1e-3, 1e-3, 1e-3]
    grades = ["good", "good", "good", "bad", "good", "marginal", "good", "good"]
    for k, (r, g) in enumerate(zip(rms, grades)):
        p = write_image(folder, group(k), 150 + 0.5 * k, DEC, src, spec, seed=k, noise=False, rms_jy=r, grade=g)
        pairs.append((str(p["image"]), str(p["pb"])))
    Path(pairs[6][0] + ".json").write_text("{not json")  # unreadable sidecar
    Path(pairs[7][1]).unlink()  # primary beam missing
    plan = mosaic_plan.make_plan(day_selection(), options(max_images=2, keep="lowest_rms", grades=("good",)), pairs)
    chosen = [e.group for e in plan.images]
    assert chosen == [group(0), group(2)], "the two quietest of the three that pass"
    reasons = {r["group"]: r["reason"] for r in plan.rejected}
    assert set(reasons) | set(chosen) == {group(k) for k in range(8)}, "every image is accounted for"
    assert "grade bad not accepted" in reasons[group(3)]
    assert "grade marginal not accepted" in reasons[group(5)]
    assert "max_rms_ratio" in reasons[group(4)]
    assert "unreadable" in reasons[group(6)] and "invalid JSON" in reasons[group(6)]
    assert "primary beam" in reasons[group(7)] and "does not exist" in reasons[group(7)]
    assert reasons[group(1)] == "over max_images 2: kept lowest_rms"
    # keep rules
    ok = pairs[:3]
    assert [e.group for e in mosaic_plan.make_plan(day_selection(), options(max_images=2, keep="newest"), ok).images] == [
        group(1), group(2)]
    assert [e.group for e in mosaic_plan.make_plan(day_selection(), options(max_images=2, keep="spread"), ok).images] == [
        group(0), group(2)]
    absolute = mosaic_plan.make_plan(day_selection(), options(max_rms_jy=1.05e-3), ok)
    assert [e.group for e in absolute.images] == [group(0), group(2)]
    assert "above max_rms_jy" in absolute.rejected[0]["reason"]
    # Outside the window or the region.
    other_day = mosaic_plan.make_plan(day_selection(day="2025-06-16"), options(), ok)
    assert not other_day.images and all("time window" in r["reason"] for r in other_day.rejected)
    # The plan file is deterministic and reads back.
    text = plan.to_json()
    assert text == mosaic_plan.make_plan(day_selection(), options(max_images=2, keep="lowest_rms", grades=("good",)),
                                    pairs).to_json()
    back = mosaic_plan.Plan.from_json(text)
    assert back.images == plan.images and back.grid == plan.grid and back.rejected == plan.rejected
    assert "kind" not in json.loads(text), "database sync must not take the plan for a sidecar"


def replace_spec(**kw) -> ImageSpec:
    from dataclasses import replace

    return replace(SPEC, **kw)


def test_plan_refuses_grids_too_wide_or_too_big(tmp_path):
    src = pd.DataFrame({"ra_deg": [], "dec_deg": [], "flux_jy": []})
    spec = replace_spec(npix=32, cell_arcsec=400.0)
    pairs = [(str(p["image"]), str(p["pb"])) for p in (
        write_image(tmp_path, group(k), ra, 0.0, src, spec, noise=False) for k, ra in enumerate((100.0, 250.0)))]
    with pytest.raises(MosaicError, match="too wide for a TAN grid.*use projection CAR"):
        mosaic_plan.make_plan(day_selection(), options(), pairs)
    car = mosaic_plan.make_plan(day_selection(), options(projection="CAR", pixel_arcsec=600.0), pairs)
    assert car.grid.ctype == ("RA---CAR", "DEC--CAR") and car.grid.crval[1] == 0.0
    with pytest.raises(MosaicError, match=r"needs about \d+ MB, more than the tier's resources.mem_mb 10"):
        mosaic_plan.make_plan(day_selection(), options(projection="CAR", pixel_arcsec=10.0, mem_mb=10), pairs)


MEASURE_PEAK = """
import json, sys
from dsa110_contimg.mosaic import build, plan
p = plan.Plan.read(sys.argv[1])
build.build(p, {k: f"{sys.argv[2]}/{k}.fits" for k in ("mosaic", "mosaic_noise", "mosaic_weights")})
print(json.dumps(build.peak_rss_mb()))
"""


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_memory_estimate_bounds_the_build_and_follows_the_output_pixels(tmp_path, interpolation):
    """The estimate the plan checks against the tier's memory holds for a large image at its own pixel
    size, and a coarser grid (a quicklook tier) needs far less: only the image's footprint is reprojected."""
    import sys

    spec = replace_spec(npix=2400, cell_arcsec=3.0, beam_arcsec=30.0)
    src = pd.DataFrame({"ra_deg": [150.0], "dec_deg": [DEC], "flux_jy": [1.0]})
    pairs = [(str(p["image"]), str(p["pb"])) for p in [write_image(tmp_path, group(0), 150.0, DEC, src, spec)]]
    fine = mosaic_plan.make_plan(day_selection(), options(pixel_arcsec=3.0, interpolation=interpolation), pairs)
    coarse = mosaic_plan.make_plan(day_selection(), options(pixel_arcsec=12.0, interpolation=interpolation), pairs)
    assert fine.images[0].cell_arcsec == pytest.approx(3.0)
    estimate = mosaic_plan.memory_estimate_mb(fine)
    assert mosaic_plan.memory_estimate_mb(coarse) < 0.5 * estimate
    (tmp_path / "plan.json").write_text(fine.to_json())
    out = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(tmp_path / "plan.json"), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    peak = json.loads(out.stdout.strip().splitlines()[-1])
    assert peak <= estimate < 2.0 * peak, (peak, estimate)


# ------------------------------------------------------------------ build


def test_sources_recovered_within_two_percent_and_qa_is_good(tmp_path):
    rng = np.random.default_rng(11)
    ras = [150.0 + 0.95 * k for k in range(5)]
    src = random_sources(rng, (149.6, 154.2), (32.1, 33.9), 25)
    pairs = strip(tmp_path / "images", ras, src)
    plan, qa, data, noise, wcs, header, out = build(tmp_path, pairs)
    assert qa["n_images"] == 5 and qa["max_images_per_pixel"] >= 3
    ratios = []
    for r in src.itertuples():
        fit = fit_point_source(data, wcs, r.ra_deg, r.dec_deg, BEAM_DEG, free_shape=True)
        ratios.append(fit.flux_jy / r.flux_jy)
        assert fit.offset_arcsec < 10, (r, fit)
    ratios = np.array(ratios)
    assert np.all(np.abs(ratios - 1) < 0.02), ratios
    assert abs(np.median(ratios) - 1) < 0.005
    assert header["BUNIT"] == "Jy/beam" and header["NIMAGES"] == 5
    assert header["BMAJ"] == pytest.approx(BEAM_DEG[0])

    qa, sources, matches = mosaic_qa.measure_qa(data, noise, wcs, header, src, mosaic_qa.QAOptions())
    assert qa["n_matched"] == len(src) and qa["grade"] == "good", qa
    assert qa["flux_ratio"] == pytest.approx(1.0, abs=0.01)
    assert qa["astrometry_offset_arcsec"] < 2.0
    assert qa["noise_ratio"] == pytest.approx(1.0, abs=0.08), "the noise map predicts the noise"
    assert 0 < qa["rms_uniformity"] <= 1
    # A catalogue 15" off in Dec and 20% too bright makes the mosaic bad, with the reasons.
    wrong = src.assign(dec_deg=src.dec_deg + 15 / 3600, flux_jy=src.flux_jy * 1.2)
    bad, _, _ = mosaic_qa.measure_qa(data, noise, wcs, header, wrong, mosaic_qa.QAOptions())
    assert bad["grade"] == "bad"
    assert any("flux ratio" in r for r in bad["grade_reasons"]) and any("offset" in r for r in bad["grade_reasons"])
    png = tmp_path / "m.qa.png"
    mosaic_qa.render_preview(png, data, noise, qa, matches, "science/2025-06-15")
    assert_picture(png)


def test_flux_ratio_holds_through_bilinear_reprojection(tmp_path):
    """Bilinear reprojection (the quicklook tier's) smooths every source (peaks ~5% lower at 4
    pixels per beam, integrals kept): the QA fits the restoring beam smoothed the same way and
    reports the flux scale the images have; the restoring beam alone would read it low."""
    rng = np.random.default_rng(5)
    ras = [150.0 + 0.95 * k for k in range(3)]
    src = random_sources(rng, (149.6, 152.3), (32.1, 33.9), 20)
    pairs = strip(tmp_path / "images", ras, src)
    _, _, data, noise, wcs, header, _ = build(tmp_path, pairs, options(interpolation="bilinear"))
    assert header["INTERP"] == "bilinear"
    qa, _, matches = mosaic_qa.measure_qa(data, noise, wcs, header, src, mosaic_qa.QAOptions())
    assert qa["n_matched"] >= 15 and qa["grade"] == "good", qa
    assert qa["flux_ratio"] == pytest.approx(1.0, abs=0.01)
    assert qa["flux_ratio_integrated"] == pytest.approx(1.0, abs=0.015)
    peaks = [fit_point_source(data, wcs, r.ra_deg, r.dec_deg, BEAM_DEG, free_shape=False).flux_jy / r.flux_jy
             for r in src.itertuples()]  # fmt: skip
    assert np.median(peaks) < 0.98, "the smoothing is real: restoring-beam peaks read low"
    # the smoothed beam: 1/6 pixel^2 more variance on each axis, nothing for bicubic
    wide = mosaic_qa.smoothed_beam(BEAM_DEG, wcs, 1 / 6)
    sigma2 = (BEAM_DEG[0] * 3600 / 2.3548) ** 2 + 60.0**2 / 6
    assert wide[0] * 3600 == pytest.approx(2.3548 * np.sqrt(sigma2), rel=1e-3) and wide[0] == pytest.approx(wide[1])
    assert mosaic_qa.smoothed_beam(BEAM_DEG, wcs, 0.0) == BEAM_DEG


def test_noise_falls_as_one_over_sqrt_n(tmp_path):
    """N images of the same field: noise x 1/sqrt(N); and the noise map is right along a strip."""
    empty = pd.DataFrame({"ra_deg": [], "dec_deg": [], "flux_jy": []})
    spec = replace_spec(npix=256)
    measured = {}
    for n in (1, 4, 9):
        pairs = [(str(p["image"]), str(p["pb"])) for p in (
            write_image(tmp_path / f"n{n}", group(k), 150.0, DEC, empty, spec, seed=100 * n + k)
            for k in range(n))]
        plan, qa, data, noise, wcs, header, out = build(tmp_path, pairs, name=f"n{n}")
        ny, nx = data.shape
        y, x = np.mgrid[0:ny, 0:nx]
        ra, dec = wcs.wcs_pix2world(x, y, 0)
        pb = primary_beam(150.0, DEC, ra, dec, spec)
        core = np.isfinite(data) & (pb > 0.3)
        measured[n] = np.std(data[core] * pb[core])  # the apparent-image noise: sigma / sqrt(N)
        # The noise map says sigma / (pb sqrt(N)) wherever the image counts.
        assert np.allclose(noise[core] * pb[core] * np.sqrt(n), spec.rms_jy, rtol=1e-3)
        assert int(fits.getdata(out["mosaic_weights"], "NIMAGES").max()) == n
    for n in (4, 9):
        assert measured[n] / measured[1] == pytest.approx(1 / np.sqrt(n), rel=0.06), measured

    # Along a strip each pixel has its own mix of images; the noise map still predicts the noise.
    pairs = strip(tmp_path / "strip", [150.0 + 0.7 * k for k in range(6)], empty, spec)
    plan, qa, data, noise, wcs, header, out = build(tmp_path, pairs, name="strip")
    good = np.isfinite(data)
    assert np.std(data[good] / noise[good]) == pytest.approx(1.0, abs=0.06)
    count = fits.getdata(out["mosaic_weights"], "NIMAGES")
    assert count.max() >= 4 and set(np.unique(count[good])) >= {1, 2, 3, 4}


def test_source_at_the_edge_of_one_image_and_the_centre_of_another(tmp_path):
    """Weights B^2 / sigma^2: the image that sees the source at its centre (and is noisier) vs one at its edge."""
    ra_s = 150.0
    src = pd.DataFrame({"ra_deg": [ra_s], "dec_deg": [DEC], "flux_jy": [1.0]})
    spec = replace_spec(npix=240)  # 4 deg across
    far = ra_s + 1.7 / np.cos(np.radians(DEC))  # 1.7 deg away on the sky: beam ~ 0.3
    a = write_image(tmp_path, group(0), ra_s, DEC, src, spec, noise=False, rms_jy=1e-3)
    b = write_image(tmp_path, group(1), far, DEC, src, spec, noise=False, rms_jy=0.5e-3, flux_scale=1.5)
    pb_b = float(primary_beam(far, DEC, np.array(ra_s), np.array(DEC), spec))
    assert 0.15 < pb_b < 0.35
    plan, qa, data, noise, wcs, header, out = build(tmp_path, [(str(a["image"]), str(a["pb"])),
                                                               (str(b["image"]), str(b["pb"]))])
    w_a, w_b = 1 / 1e-3**2, pb_b**2 / 0.5e-3**2
    expected = (w_a * 1.0 + w_b * 1.5) / (w_a + w_b)
    fit = fit_point_source(data, wcs, ra_s, DEC, BEAM_DEG, free_shape=True)
    assert fit.flux_jy == pytest.approx(expected, rel=0.003), (fit.flux_jy, expected)
    # Other weightings give other answers: equal, B / sigma^2, B^2 without the rms, 1 / sigma^2 alone.
    for w2 in (1.0, pb_b * 4, pb_b**2, 4.0):
        assert abs(fit.flux_jy - (1.0 + 1.5 * w2) / (1 + w2)) > 0.015
    # Noise and weights maps at the pixel nearest the source: (sum B^2 / sigma^2)^-1/2 and the sum.
    x, y = np.round(wcs.wcs_world2pix([[ra_s, DEC]], 0)[0]).astype(int)
    ra_p, dec_p = wcs.wcs_pix2world([[x, y]], 0)[0]
    w_p = (primary_beam(ra_s, DEC, np.array(ra_p), np.array(dec_p), spec) ** 2 / 1e-3**2
           + primary_beam(far, DEC, np.array(ra_p), np.array(dec_p), spec) ** 2 / 0.5e-3**2)
    assert noise[y, x] == pytest.approx(1 / np.sqrt(w_p), rel=1e-3)
    assert fits.getdata(out["mosaic_weights"])[y, x] == pytest.approx(w_p, rel=1e-3)


def test_nan_regions_and_blank_images_are_handled(tmp_path):
    rng = np.random.default_rng(5)
    src = random_sources(rng, (149.7, 151.3), (32.3, 33.7), 8, min_sep_deg=0.35)
    spec = replace_spec(npix=200)
    hole = (slice(60, 110), slice(60, 110))  # a blanked square near the centre of image 0
    a = write_image(tmp_path, group(0), 150.0, DEC, src, spec, seed=1, nan_box=hole)
    b = write_image(tmp_path, group(1), 151.0, DEC, src, spec, seed=2)
    c = write_image(tmp_path, group(2), 150.5, DEC, src, spec, seed=3, all_nan=True)
    pairs = [(str(p["image"]), str(p["pb"])) for p in (a, b, c)]
    plan, qa, data, noise, wcs, header, out = build(tmp_path, pairs)
    assert qa["n_images_blank"] == 1 and qa["blank_images"] == [group(2)]
    covered = np.isfinite(noise)
    assert np.array_equal(np.isfinite(data), covered), "mosaic and noise map are blank together"
    count = fits.getdata(out["mosaic_weights"], "NIMAGES")
    assert np.array_equal(count > 0, covered)
    # The hole of image 0 is filled by image 1 where image 1 reaches, with only its weight there.
    img_wcs = mosaic_build.read_plane(a["image"])[1]
    ra_h, dec_h = img_wcs.wcs_pix2world([[85, 85]], 0)[0]
    assert value_at(count, wcs, ra_h, dec_h) == 1
    pb_b = float(primary_beam(151.0, DEC, np.array(ra_h), np.array(dec_h), spec))
    assert value_at(noise, wcs, ra_h, dec_h) == pytest.approx(spec.rms_jy / pb_b, rel=0.01)
    assert np.isfinite(data[covered]).all()
    for r in src.itertuples():
        x, y = img_wcs.wcs_world2pix([[r.ra_deg, r.dec_deg]], 0)[0]
        if 50 <= x <= 120 and 50 <= y <= 120:
            continue  # at the hole's edge
        fit = fit_point_source(data, wcs, r.ra_deg, r.dec_deg, BEAM_DEG, free_shape=True)
        assert fit.flux_jy / r.flux_jy == pytest.approx(1.0, abs=0.02), r


@pytest.mark.parametrize("projection", ["CAR", "SIN"])
def test_strip_through_ra_zero_on_car_and_sin_grids(tmp_path, projection):
    rng = np.random.default_rng(8)
    src = random_sources(rng, (358.6, 361.2), (32.3, 33.7), 8, min_sep_deg=0.4)
    src["ra_deg"] %= 360
    pairs = strip(tmp_path / "images", [(359.0 + 0.95 * k) % 360 for k in range(3)], src)
    plan, qa, data, noise, wcs, header, out = build(tmp_path, pairs, options(projection=projection))
    assert plan.grid.ctype[0] == f"RA---{projection}" and qa["width_deg"] > 4
    result, _, _ = mosaic_qa.measure_qa(data, noise, wcs, header, src, mosaic_qa.QAOptions())
    assert result["n_matched"] == len(src) and result["grade"] == "good", result
    assert result["flux_ratio"] == pytest.approx(1.0, abs=0.01) and result["astrometry_offset_arcsec"] < 3


# ------------------------------------------------------------------ stages


def stage_config(tmp: Path, **tier) -> dict:
    return validate_config({"results_dir": str(tmp / "results"), "mosaic": {"tiers": {"science": {
        "pixel_arcsec": 60.0, "projection": "TAN", "resources": {"mem_mb": 2000}, **tier}}}})


def test_stages_write_register_and_refuse_an_empty_plan(tmp_path):
    config = stage_config(tmp_path)
    results = tmp_path / "results"
    rng = np.random.default_rng(2)
    src = random_sources(rng, (149.7, 152.2), (32.3, 33.7), 10)
    src.to_csv(tmp_path / "catalogue.csv", index=False)
    config["catalogue"]["path"] = str(tmp_path / "catalogue.csv")
    pairs = strip(results / "images", [150.0, 151.0, 152.0], src)
    paths = mosaic_paths(results, "2025-06-15")
    summary = stage.plan_mosaic([p[0] for p in pairs], [p[1] for p in pairs], paths["mosaic_plan"],
                                "science", "2025-06-15", config)
    assert summary["n_images"] == 3 and summary["n_rejected"] == 0
    qa = stage.build_mosaic(paths["mosaic_plan"], paths, config)
    assert qa["n_images"] == 3
    mqa = stage.qa_mosaic(paths["mosaic"], paths["mosaic_noise"], paths["mosaic_qa"], config)
    assert mqa["grade"] == "good" and mqa["n_matched"] == 10
    with Database.from_config(config) as db:
        rows = {r["kind"]: r for r in db.list_products()}
    assert rows["mosaic_plan"]["n_images"] == 3 and rows["mosaic_plan"]["tier"] == "science"
    assert rows["mosaic"]["n_images"] == 3 and rows["mosaic"]["width_deg"] > 3
    assert rows["mosaic"]["pixel_arcsec"] == 60.0
    assert rows["mosaic_qa"]["grade"] == "good" and rows["mosaic_qa"]["flux_ratio"] == pytest.approx(1, abs=0.01)
    assert rows["mosaic_qa"]["n_matched"] == 10
    assert not list(results.rglob(".*tmp*")), "no temporary left"

    # Every image graded bad: the plan says why, and no mosaic is written or registered.
    bad = strip(results / "bad", [150.0, 151.0], src, grade="bad")
    empty = mosaic_paths(results, "2025-06-16")
    summary = stage.plan_mosaic([p[0] for p in bad], [p[1] for p in bad], empty["mosaic_plan"], "science",
                                "2025-06-15", config)
    assert summary["n_images"] == 0 and summary["n_rejected"] == 2
    with pytest.raises(MosaicError, match=r"chose no image out of 2 candidate\(s\).*grade bad not accepted"):
        stage.build_mosaic(empty["mosaic_plan"], empty, config)
    assert not any(Path(empty[k]).exists() for k in stage.BUILD_KINDS)
    with Database.from_config(config) as db:
        mosaics = db.list_products(kind="mosaic")
        runs = [(r["rule"], r["status"], r["message"]) for r in db.job_runs()]
    assert [Path(r["path"]).name for r in mosaics] == ["2025-06-15.fits"]
    # Every stage's run is on record through the one wrapper, the refused build with its reason.
    assert [(rule, status) for rule, status, _ in runs] == [
        ("plan_mosaic", "success"), ("build_mosaic", "success"), ("qa_mosaic", "success"),
        ("plan_mosaic", "success"), ("build_mosaic", "failed")]
    assert "MosaicError" in runs[-1][2] and "chose no image" in runs[-1][2]


# ---------------------------------------------------------------- workflow


def test_new_image_changes_the_plan_and_rebuilds_only_that_mosaic(tmp_path, snakemake_exe, repo_root):
    """Real Snakemake on synthetic image products (the imaging rules are not run)."""
    spec = replace_spec(npix=64, cell_arcsec=180.0, beam_arcsec=720.0)
    src = random_sources(np.random.default_rng(4), (149.8, 151.5), (32.5, 33.5), 4, min_sep_deg=0.6)
    raw, images = tmp_path / "raw", tmp_path / "results" / "images"
    raw.mkdir()

    def observe(g: str, ra: float, seed: int) -> None:
        for sb in range(16):
            (raw / naming.raw_filename(naming.parse_timestamp(g), sb)).touch()
        write_image(images, g, ra, DEC, src, spec, seed=seed)

    observe(group(0), 150.0, 0)
    observe(group(1), 151.0, 1)
    observe(group(0, "2025-06-16"), 150.5, 2)
    (tmp_path / "test.yaml").write_text(
        "mosaic:\n  tiers:\n    science: {pixel_arcsec: 180, projection: TAN, resources: {mem_mb: 1000}}\n")
    built = [k for k in naming.MOSAIC_PRODUCTS if k != "mosaic_outcome"]  # the plan -> build -> QA chain
    day1 = {k: tmp_path / naming.mosaic_path("results", "science", "2025-06-15", k) for k in built}
    day2 = {k: tmp_path / naming.mosaic_path("results", "science", "2025-06-16", k) for k in built}

    def run(*targets, extra=()):
        targets = [str(Path(t).relative_to(tmp_path)) for t in targets]  # as the rules name them
        cmd = [str(snakemake_exe), *targets, "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path),
               "--cores", "2", *extra, "--allowed-rules", "plan_mosaic", "build_mosaic", "qa_mosaic",
               "--configfile", str(repo_root / "config" / "config.yaml"), str(tmp_path / "test.yaml")]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    out = run(day1["mosaic"], day2["mosaic_qa"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads(day1["mosaic_plan"].read_text())["images"].__len__() == 2
    stamps = {k: p.stat().st_mtime_ns for k, p in day2.items()}
    first = day1["mosaic"].stat().st_mtime_ns

    # A new observation of 2025-06-15 arrives (its image made): that plan and mosaic only are redone.
    observe(group(2), 152.0, 3)
    out = run(day1["mosaic"], day2["mosaic_qa"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plan = mosaic_plan.Plan.read(day1["mosaic_plan"])
    assert [e.group for e in plan.images] == [group(0), group(1), group(2)]
    assert day1["mosaic"].stat().st_mtime_ns > first
    assert fits.getheader(day1["mosaic"])["NIMAGES"] == 3
    assert {k: p.stat().st_mtime_ns for k, p in day2.items()} == stamps, "the other mosaic is untouched"

    # A plan rewritten with the same content (plans are deterministic, see the plan test) is newer
    # than its mosaic but has the checksum Snakemake recorded: only a content change rebuilds.
    os.utime(day2["mosaic_plan"])
    out = run(day1["mosaic"], day2["mosaic_qa"], extra=("-n",))
    assert out.returncode == 0 and "Nothing to be done" in out.stdout + out.stderr, out.stdout[-2000:]

    # A day without observations: its plan is made, empty, saying why; no mosaic is made.
    empty = tmp_path / naming.mosaic_path("results", "science", "2025-06-17", "mosaic_plan")
    out = run(empty)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    record = json.loads(empty.read_text())
    assert record["images"] == [] and "nothing to mosaic" in record["rejected"][0]["reason"]
    out = run(tmp_path / naming.mosaic_path("results", "science", "2025-06-17"))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "science mosaic 2025-06-17" in text and "nothing to mosaic" in text, text[-2000:]
    assert not (tmp_path / naming.mosaic_path("results", "science", "2025-06-17")).exists()
    with Database.from_config(validate_config({"results_dir": str(tmp_path / "results")})) as db:
        kinds = sorted(r["kind"] for r in db.list_products())
    assert kinds == ["mosaic", "mosaic", "mosaic_plan", "mosaic_plan", "mosaic_plan", "mosaic_qa"]
