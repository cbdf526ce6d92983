"""Variability metrics against hand-computed values, the flux-scale correction, the ESE
detector, the simulated variable sky, and the light-curve fan-in (including bad input
and an injection-recovery run on synthetic photometry tables)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pictures import assert_picture

from dsa110_contimg import naming
from dsa110_contimg.config import validate_config
from dsa110_contimg.photometry import ese
from dsa110_contimg.photometry import variability as var
from dsa110_contimg.photometry.forced import Flag
from dsa110_contimg.provenance import read_sidecar
from dsa110_contimg.sim import variability as sv


def lightcurve_outputs(results):
    """The light-curve fan-in's files under ``results`` (the registry's kinds of rule lightcurves)."""
    return {k: v for k, v in naming.rule_outputs(results, "lightcurves", name="all").items()
            if not k.endswith("_sidecar")}


from dsa110_contimg.stages import photometry as stage  # noqa: E402

LOG = logging.getLogger("test_variability")

# ------------------------------------------------------------- hand-computed metrics
#
# Light curve A: f = [10, 12, 6], s = [1, 1, 0.5]
#   w = 1/s^2 = [1, 1, 4]; xi = (10 + 12 + 24) / 6 = 23/3
#   eta = 1/2 [ (7/3)^2 + (13/3)^2 + 4 (5/3)^2 ] = 1/2 (49 + 169 + 100) / 9 = 53/3
#   mean = 28/3; sum of squared deviations = (4 + 64 + 100) / 9 = 56/3; s = sqrt(28/3)
#   V = sqrt(28/3) / (28/3) = sqrt(3/28)
#   pairs: (10, 12): Vs = 2 / sqrt(2) = sqrt(2),      m = 2 x 2 / 22 = 2/11
#          (12, 6):  Vs = -6 / sqrt(1.25) = -5.3666, m = 2 x (-6) / 18 = -2/3
#   vs_max = 6 / sqrt(1.25); m_max (|Vs| >= 4.3) = 2/3; (|Vs| >= 6) = 0; (|Vs| >= 1) = 2/3
#   chi2_red with a 10% systematic: s'^2 = s^2 + (0.1 x 23/3)^2 = [1.587778, 1.587778, 0.837778]
#     w' = [0.629811, 0.629811, 1.193634]; xi' = 21.017646 / 2.453256 = 8.567246
#     chi2 = 0.629811 (1.432754^2 + 3.432754^2) + 1.193634 x 2.567246^2 = 16.58147; / 2 = 8.29073
#
# Light curve B: f = [1, 2, 4], s = [0.5, 1, 1]
#   w = [4, 1, 1]; xi = 10/6 = 5/3; eta = 1/2 [4 (2/3)^2 + (1/3)^2 + (7/3)^2] = 1/2 x 66/9 = 11/3
#   mean 7/3; squared deviations (16 + 1 + 25)/9 = 14/3; V = sqrt(7/3) / (7/3) = sqrt(3/7)


def test_metrics_match_hand_computed_values():
    f, s = [10.0, 12.0, 6.0], [1.0, 1.0, 0.5]
    assert var.weighted_mean(f, s) == pytest.approx(23 / 3)
    assert var.eta(f, s) == pytest.approx(53 / 3)
    assert var.v_index(f) == pytest.approx(np.sqrt(3 / 28))
    np.testing.assert_allclose(var.vs_pair([12, 6], [1, 0.5], [10, 12], [1, 1]), [np.sqrt(2), -6 / np.sqrt(1.25)])
    np.testing.assert_allclose(var.m_pair([12, 6], [10, 12]), [2 / 11, -2 / 3])
    assert var.consecutive_pairs(f, s, 4.3) == pytest.approx((6 / np.sqrt(1.25), 2 / 3))
    assert var.consecutive_pairs(f, s, 6.0) == pytest.approx((6 / np.sqrt(1.25), 0.0))
    assert var.consecutive_pairs(f, s, 1.0) == pytest.approx((6 / np.sqrt(1.25), 2 / 3))
    assert var.chi2_red(f, s, 0.1) == pytest.approx(8.29073, rel=1e-5)
    assert var.chi2_red(f, s, 0.0) == pytest.approx(53 / 3)
    f, s = [1.0, 2.0, 4.0], [0.5, 1.0, 1.0]
    assert var.eta(f, s) == pytest.approx(11 / 3)
    assert var.v_index(f) == pytest.approx(np.sqrt(3 / 7))
    assert np.isnan(var.eta([1.0], [1.0])) and np.isnan(var.v_index([1.0]))
    assert all(np.isnan(var.consecutive_pairs([1.0], [1.0])))
    # a constant source with right errors: eta and chi2_red near 1, p-value uniform
    rng = np.random.default_rng(0)
    etas = [var.eta(1 + rng.normal(0, 0.01, 50), np.full(50, 0.01)) for _ in range(400)]
    assert np.mean(etas) == pytest.approx(1.0, abs=0.03)
    assert var.chi2_probability(1.0, 1001) == pytest.approx(0.5, abs=0.02)


def test_grouped_metrics_equal_the_one_curve_functions():
    rng = np.random.default_rng(1)
    lengths = [1, 2, 3, 7, 40, 2]
    f = [rng.uniform(0.5, 2, n) for n in lengths]
    s = [rng.uniform(0.01, 0.2, n) for n in lengths]
    starts = np.cumsum([0] + lengths[:-1])
    m = var.grouped_metrics(starts, np.concatenate(f), np.concatenate(s), systematic=0.02, vs_threshold=2.0)
    for k, n in enumerate(lengths):
        assert m.n_epochs[k] == n
        assert m.weighted_mean_flux[k] == pytest.approx(var.weighted_mean(f[k], s[k]))
        for got, want in ((m.eta[k], var.eta(f[k], s[k])), (m.v[k], var.v_index(f[k])),
                          (m.chi2_red[k], var.chi2_red(f[k], s[k], 0.02))):
            assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want)
        vs, mm = var.consecutive_pairs(f[k], s[k], 2.0)
        assert (np.isnan(m.vs_max[k]) and np.isnan(vs)) or m.vs_max[k] == pytest.approx(vs)
        assert (np.isnan(m.m_max[k]) and np.isnan(mm)) or m.m_max[k] == pytest.approx(mm)


def test_flux_scale_recovers_epoch_scales_and_drops_a_variable_reference():
    rng = np.random.default_rng(2)
    n_ep, n_ref = 60, 40
    scale = 1 + rng.normal(0, 0.03, n_ep)
    flux0 = rng.uniform(0.2, 2, n_ref)
    true = np.ones((n_ref, n_ep))
    true[0, 20:40] = 0.4  # an ESE among the references
    true[1, 30:] = 2.0  # and a flare
    f = flux0[:, None] * true * scale[None, :] * (1 + rng.normal(0, 0.005, (n_ref, n_ep)))
    src, ep = np.meshgrid(np.arange(n_ref), np.arange(n_ep), indexing="ij")
    keep = rng.random(f.shape) < 0.8  # not every source in every image
    fs = var.flux_scale(ep[keep], src[keep] + 100, f[keep], n_ep, min_sources=3, max_scatter=0.05)
    want = scale / np.median(scale)
    assert np.abs(fs.scale / want - 1).max() < 0.004
    assert set(fs.rejected) == {100, 101}
    assert np.all(fs.n_ref >= 20) and np.all(fs.scale_err < 0.003)
    few = var.flux_scale(np.array([0, 0, 1]), np.array([1, 2, 1]), np.array([1.0, 1.0, 1.0]), 2, min_sources=3)
    assert np.all(few.scale == 1) and np.all(np.isnan(few.scale_err))


# --------------------------------------------------------------------- ESE


def test_ese_profile_dips_with_brightened_edges_and_conserves_flux():
    t = np.linspace(-200, 200, 40001)
    p = sv.ese_profile(t, 0.0, 40.0, sv.alpha_for_depth(0.6), 0.03)
    assert 1 - p.min() == pytest.approx(0.6, abs=0.03)
    assert p.max() > 1.05  # edge brightening
    assert np.trapezoid(p - 1, t) == pytest.approx(0.0, abs=0.3)  # the lens moves flux, makes none
    below = t[p < 1 - (1 - p.min()) / 2]
    assert below.max() - below.min() == pytest.approx(40.0, rel=0.02)  # the duration is the FWHM of the dip
    fl = sv.flare_profile(np.array([-10.0, 0.0, 5.0]), 0.0, 2.0, 1.0, 5.0)
    np.testing.assert_allclose(fl, [1.0, 3.0, 1 + 2 * np.exp(-1)], atol=1e-12)
    sc = sv.scintillation_profile(np.arange(2000.0), 0.02, 5.0, seed=1)
    assert np.std(sc) == pytest.approx(0.02, rel=0.35) and np.mean(sc) == pytest.approx(1, abs=0.01)


def test_find_dips_on_simple_light_curves():
    t = np.arange(200.0)
    rng = np.random.default_rng(3)
    s = np.full(t.size, 0.02)
    crit = ese.PRESETS["moderate"]
    dip = np.where((t >= 80) & (t < 110), 0.4, 1.0)  # 60% deep for 30 days
    (d,) = ese.find_dips(t, dip + rng.normal(0, 0.02, t.size), s, crit)
    assert d.start_mjd == pytest.approx(80, abs=1) and d.end_mjd == pytest.approx(109, abs=1)
    assert d.depth == pytest.approx(0.6, abs=0.02) and d.significance > 20 and d.n_points == pytest.approx(30, abs=2)
    assert ese.find_dips(t, 1 + rng.normal(0, 0.02, t.size), s, crit) == []
    spikes = np.ones(t.size)
    spikes[[50, 52, 53]] = 0.0  # three bad points in a week: not a sustained dip
    assert ese.find_dips(t, spikes + rng.normal(0, 0.02, t.size), s, crit) == []
    short = np.where((t >= 80) & (t < 83), 0.3, 1.0)  # three days: too short for 'moderate' ...
    assert ese.find_dips(t, short, s, crit) == []
    assert len(ese.find_dips(t, short, s, ese.PRESETS["sensitive"])) == 1  # ... not for 'sensitive'
    shallow = np.where((t >= 80) & (t < 110), 0.8, 1.0)
    assert ese.find_dips(t, shallow, s, crit) == []
    # errors that understate the scatter are scaled up, so noise does not become a dip
    noisy = 1 + rng.normal(0, 0.2, t.size)
    assert ese.error_scale(noisy, s) == pytest.approx(10, rel=0.2)
    assert ese.find_dips(t, noisy, s, crit) == []
    name, c = ese.criteria_from_config({"preset": "conservative", "depth_min": 0.5, "min_points": None})
    assert name == "conservative" and c.depth_min == 0.5 and c.min_duration_days == 14
    with pytest.raises(ValueError, match="preset 'bold'"):
        ese.criteria_from_config({"preset": "bold"})


# ----------------------------------------------------------------- fan-in


def _fan_in(tmp_path, files, memory_mb=1000.0, **variability):
    cfg = validate_config({"variability": {"memory_mb": int(memory_mb), **variability}})
    opts = stage.LightcurveOptions.from_config(cfg)
    outs = lightcurve_outputs(tmp_path / "out")
    qa = stage.build_lightcurves([str(f) for f in files], outs, opts, LOG)
    return qa, outs


def test_injection_recovery_on_synthetic_photometry(tmp_path):
    """ESE-like dips of depth >= 50% at SNR >= 20 are flagged (>= 95%); steady sources are not (<= 1%)."""
    mjds = sv.epoch_mjds(60800.0, 160)
    pop = sv.draw_population(500, 170, 30, 40, mjd_range=(mjds[0], mjds[-1]), flux_range=(0.005, 1.0),
                             duration_range=(14, 50), seed=11)
    files, scale = sv.synthetic_photometry(tmp_path, pop, mjds, noise_jy=1e-3, scale_rms=0.03, seed=12, sidecars=False)
    qa, outs = _fan_in(tmp_path, files)
    cands = pd.read_csv(outs["ese_candidates"])
    epochs = pd.read_csv(outs["lightcurve_epochs"])
    assert np.abs(epochs.scale / (scale / np.median(scale)) - 1).max() < 0.002  # the 3% epoch errors are removed
    pop["snr"] = pop.flux_jy / 1e-3
    hit = pop.merge(cands, left_on="name", right_on="source", how="left")
    hit["found"] = (hit.start_mjd <= hit.t0_mjd) & (hit.end_mjd >= hit.t0_mjd)  # the candidate covers the dip
    found = hit.groupby("name").found.any()
    pop["found"] = pop.name.map(found)
    pop["flagged"] = pop.name.isin(set(cands.source))
    target = pop[(pop.kind == "ese") & (pop.depth >= 0.5) & (pop.snr >= 20)]
    steady = pop[pop.kind == "steady"]
    print(f"recovered {target.found.mean():.3f} of {len(target)} dips (depth >= 0.5, SNR >= 20); "
          f"steady flagged {steady.flagged.mean():.4f} of {len(steady)}")
    assert len(target) > 100 and target.found.mean() >= 0.95
    assert steady.flagged.mean() <= 0.01
    variability = pd.read_parquet(outs["variability"]).set_index("source")
    assert variability.loc[steady.name, "is_variable"].mean() <= 0.01
    assert variability.loc[pop.name[pop.kind == "flare"], "is_variable"].mean() > 0.8
    assert qa["n_sources"] == len(pop) and qa["n_epochs"] == 160 and qa["n_files_skipped"] == 0


def test_fan_in_survives_bad_tables_and_spills_to_disk_with_the_same_result(tmp_path):
    mjds = sv.epoch_mjds(60800.0, 30)
    pop = sv.draw_population(30, 5, mjd_range=(mjds[0], mjds[-1]), flux_range=(0.05, 1), duration_range=(5, 10), seed=5)
    files, _ = sv.synthetic_photometry(tmp_path, pop, mjds, noise_jy=1e-3, scale_rms=0.01, seed=6,
                                       bad_fraction=0.05)
    phot_dir = files[0].parent
    garbage = phot_dir / "2025-01-01T00:00:00.parquet"
    garbage.write_bytes(b"this is not parquet")
    nocols = phot_dir / "2025-01-02T00:00:00.parquet"
    pd.DataFrame({"source": ["x"], "flux": [1.0]}).to_parquet(nocols)
    empty = phot_dir / "2025-01-03T00:00:00.parquet"
    pd.DataFrame({c: pd.Series([], dtype=float) for c in ("flux_jy", "flux_err_jy", "mjd")}).assign(
        source=pd.Series([], dtype=str)).to_parquet(empty)
    nan_rows = pd.read_parquet(files[0])
    nan_rows["flux_jy"] = np.nan  # every pixel blank
    nan_rows.to_parquet(phot_dir / "2025-01-04T00:00:00.parquet")
    allfiles = files + [garbage, nocols, empty, phot_dir / "2025-01-04T00:00:00.parquet"]
    qa, outs = _fan_in(tmp_path / "a", allfiles)
    assert qa["n_files_skipped"] == 2
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in qa["skipped"]}
    assert "cannot read" in reasons[garbage.name] and "lacks columns ['flux_jy', 'flux_err_jy', 'mjd']" in reasons[nocols.name]
    assert qa["n_epochs"] == 32 and not qa["spilled"]
    lc = pq.read_table(outs["lightcurves"]).to_pandas()
    assert lc.flux_jy.notna().all() and len(lc) == qa["n_used"]
    assert ((lc["flags"] & int(Flag.NO_DATA)) == 0).all()
    opts = stage.LightcurveOptions(memory_mb=0.05)  # far below the data: several buckets, spilled to disk
    outs3 = lightcurve_outputs(tmp_path / "c")
    qa3 = stage.build_lightcurves([str(f) for f in allfiles], outs3, opts, LOG)
    assert qa3["n_buckets"] > 1 and qa3["spilled"]
    a = pd.read_parquet(outs["variability"]).sort_values("source").reset_index(drop=True)
    c = pd.read_parquet(outs3["variability"]).sort_values("source").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, c)
    la = pq.read_table(outs["lightcurves"]).to_pandas().astype({"source": str, "group": str})
    lc3 = pq.read_table(outs3["lightcurves"]).to_pandas().astype({"source": str, "group": str})
    pd.testing.assert_frame_equal(la.sort_values(["source", "mjd"]).reset_index(drop=True),
                                  lc3.sort_values(["source", "mjd"]).reset_index(drop=True))
    assert not list((tmp_path / "c" / "out").rglob(".lightcurves-spill-*"))  # the spill is cleaned up


def test_lightcurves_stage_with_nothing_usable_still_writes_and_registers(tmp_path):
    from dsa110_contimg.db import Database

    phot_dir = tmp_path / "results" / "photometry"
    phot_dir.mkdir(parents=True)
    bad = phot_dir / "2025-06-15T08:00:03.parquet"
    bad.write_bytes(b"junk")
    config = validate_config({"results_dir": str(tmp_path / "results"),
                              "database": {"url": f"sqlite:///{tmp_path}/products.sqlite"}})
    outs = lightcurve_outputs(tmp_path / "results")
    log = tmp_path / "lc.log"
    qa = stage.lightcurves([str(bad)], outs, config, log=str(log))
    assert qa["n_sources"] == 0 and qa["n_files_skipped"] == 1
    assert "left out" in log.read_text()
    assert pd.read_csv(outs["ese_candidates"]).empty and len(pd.read_parquet(outs["variability"])) == 0
    assert read_sidecar(outs["lightcurves"] + ".json")["qa"]["n_files_skipped"] == 1
    with Database.from_config(config) as db:
        kinds = sorted(p["kind"] for p in db.list_products())
    assert kinds == ["ese_candidates", "lightcurves", "variability"]


def test_lightcurves_stage_end_to_end_registers_rows(tmp_path):
    from dsa110_contimg.db import Database

    mjds = sv.epoch_mjds(60800.0, 60)
    pop = sv.draw_population(40, 4, mjd_range=(mjds[0], mjds[-1]), flux_range=(0.05, 1), duration_range=(14, 20), seed=8)
    results = tmp_path / "results"
    files, _ = sv.synthetic_photometry(results, pop, mjds, noise_jy=1e-3, scale_rms=0.01, seed=9)
    config = validate_config({"results_dir": str(results), "database": {"url": f"sqlite:///{tmp_path}/p.sqlite"}})
    outs = lightcurve_outputs(results)
    qa = stage.lightcurves([str(f) for f in files], outs, config, log=str(tmp_path / "lc.log"))
    found = set(pd.read_csv(outs["ese_candidates"]).source)
    injected = set(pop.name[pop.kind == "ese"])
    assert len(found & injected) >= 3, "most injected dips are found"
    assert found <= injected, f"false candidates: {sorted(found - injected)}"
    assert_picture(tmp_path / "results" / "variability" / "ese_candidates.png")
    with Database.from_config(config) as db:
        lcs = db.list_products(kind="lightcurves")
        assert len(lcs) == 1
        variability = db.list_products(kind="variability")
        assert variability[0]["n_sources"] == 44
        assert db.list_products(kind="ese_candidates")[0]["n_candidates"] == qa["n_ese_candidates"]


def test_simulate_days_observes_the_same_strip_each_day_with_that_days_fluxes(tmp_path):
    from datetime import datetime

    from dsa110_contimg import naming
    from dsa110_contimg.raw import grouping
    from dsa110_contimg.sim.observation import SimOptions

    opts = SimOptions(start=datetime(2025, 6, 16, 3, 45, 0), n_obs=1, dec_deg=30.5, n_ants=4, n_chan=8, n_int=6,
                      subbands=(0, 1), noise=False, gains=False)
    start = sv.mjd_of(opts.start)
    pop = sv.draw_population(2, 1, mjd_range=(start, start + 3), ra_range=(202.5, 203.0), dec_range=(30.3, 30.7),
                             duration_range=(1.0, 1.0), seed=4)
    files = sv.simulate_days(tmp_path / "raw", opts, pop, 3)
    groups = grouping.group_files([f.name for f in files], tolerance_s=60, n_subbands=2).groups
    days = sorted(naming.parse_timestamp(g.id) for g in groups)
    assert len(days) == 3 and len(files) == 6
    gaps = np.diff([d.timestamp() for d in days])
    np.testing.assert_allclose(gaps, sv.SIDEREAL_DAY_S, atol=3.0)  # same LST (names: to the second, 0-2 s jitter)
    sky = pd.read_csv(tmp_path / "truth" / "sky.csv")
    assert set(pop.name) < set(sky.name) and "3C286" in set(sky.name)  # the catalogue has the calibrator
    for day in days:
        truth = pd.read_csv(tmp_path / "truth" / "days" / day.strftime("%Y-%m-%d") / "sky.csv").set_index("name")
        mid = sv.mjd_of(day) + 6 * 12.884901888 / 2 / 86400  # the group id may be up to 2 s late: no matter
        np.testing.assert_allclose(truth.loc[pop.name, "flux_jy"], sv.fluxes(pop, mid)[:, 0], rtol=1e-3)
