"""Reference catalogue, forced photometry and blind detection, on synthetic images.

The images are made by :func:`dsa110_contimg.sim.variability.synthetic_image`:
point sources seen through an Airy primary beam, convolved with a Gaussian
restoring beam, plus noise whose autocorrelation is the beam, on a SIN
projection; written as 4-D FITS the way CASA and WSClean write them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsa110_contimg.config import validate_config
from dsa110_contimg.photometry import catalogue as cat
from dsa110_contimg.photometry import forced as ph
from dsa110_contimg.photometry.forced import Flag
from dsa110_contimg.provenance import read_sidecar, write_sidecar
from dsa110_contimg.sim import variability as sv
from dsa110_contimg.stages import photometry as stage  # noqa: E402

RA0, DEC0 = 150.0, 33.0
GROUP = "2025-06-15T08:00:03"


def grid_sources(n_side=5, spacing_deg=0.07, fluxes=None, prefix="S"):
    """A square grid of sources around the image centre (well separated: no blends)."""
    offs = (np.arange(n_side) - (n_side - 1) / 2) * spacing_deg
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    n = n_side * n_side
    flux = np.geomspace(0.01, 0.5, n) if fluxes is None else np.asarray(fluxes)
    return pd.DataFrame({
        "name": [f"{prefix}{i:03d}" for i in range(n)],
        "ra_deg": RA0 + dx.ravel() / np.cos(np.radians(DEC0)),
        "dec_deg": DEC0 + dy.ravel(),
        "flux_jy": flux,
    })


def image_set(img: sv.SyntheticImage) -> ph.ImageSet:
    return ph.ImageSet(img.pbcor, img.wcs, img.header, ph.Beam.from_header(img.header), img.pb, img.residual)


# ------------------------------------------------------------------ catalogue


def test_catalogue_csv_fits_votable_give_the_same_table(tmp_path):
    from astropy.table import Table

    src = grid_sources(3)
    src.to_csv(tmp_path / "sky.csv", index=False)
    Table.from_pandas(src).write(tmp_path / "sky.fits")
    Table.from_pandas(src).write(tmp_path / "sky.vot", format="votable")
    tables = [cat.load_catalogue(cat.CatalogueOptions(path=str(tmp_path / f"sky.{ext}"))) for ext in ("csv", "fits", "vot")]
    for t in tables:
        assert list(t.columns) == list(cat.COLUMNS)
        np.testing.assert_allclose(t.ra_deg, src.ra_deg)
        np.testing.assert_allclose(t.flux_jy, src.flux_jy)
        assert t.name.tolist() == src.name.tolist()


def test_catalogue_column_mapping_units_and_sexagesimal(tmp_path):
    path = tmp_path / "nvss.csv"
    pd.DataFrame({
        "NVSS": ["J100000+330000", "J100004+330100", "J100008+330200"],
        "RAJ2000": ["10 00 00.0", "10:00:04.0", "10 00 08.0"],
        "DEJ2000": ["+33 00 00", "+33 01 00", "+33:02:00"],
        "S1.4": [12.5, float("nan"), 3.0],  # mJy; a missing flux becomes NaN
    }).to_csv(path, index=False)
    config = validate_config({"catalogue": {
        "path": str(path), "flux_unit": "mJy",
        "columns": {"name": "NVSS", "ra_deg": "RAJ2000", "dec_deg": "DEJ2000", "flux_jy": "S1.4"}}})
    opts = cat.CatalogueOptions.from_config(config)
    table = cat.load_catalogue(opts)
    np.testing.assert_allclose(table.ra_deg, [150.0, 150.0 + 4 / 240, 150.0 + 8 / 240])
    np.testing.assert_allclose(table.dec_deg, [33.0, 33 + 1 / 60, 33 + 2 / 60])
    np.testing.assert_allclose(table.flux_jy, [0.0125, np.nan, 0.003])
    assert cat.flux_cut(table, 0.005).name.tolist() == ["J100000+330000"]
    assert len(cat.flux_cut(table, 0.0)) == 3
    assert cat.check_catalogue(config) is None


def test_catalogue_with_missing_columns_is_named_clearly(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["a"], "RA": [150.0], "dec_deg": [33.0], "flux_jy": [1.0]}).to_csv(path, index=False)
    config = validate_config({"catalogue": {"path": str(path)}})
    with pytest.raises(cat.CatalogueError, match=r"bad\.csv lacks columns 'ra_deg' \(for ra_deg\).*catalogue\.columns"):
        cat.load_catalogue(cat.CatalogueOptions.from_config(config))
    message = cat.check_catalogue(config)  # the parse-time check says the same, without raising
    assert message and "lacks columns 'ra_deg'" in message
    missing = validate_config({"catalogue": {"path": str(tmp_path / "nowhere.csv")}})
    assert "does not exist" in cat.check_catalogue(missing)
    dupes = tmp_path / "dupes.csv"
    pd.DataFrame({"name": ["a", "a"], "ra_deg": [1.0, 2.0], "dec_deg": [3.0, 4.0], "flux_jy": [1.0, 1.0]}).to_csv(dupes)
    with pytest.raises(cat.CatalogueError, match="must be unique; repeated: a"):
        cat.load_catalogue(cat.CatalogueOptions(path=str(dupes)))


def test_footprint_selects_sources_on_the_image_above_the_beam_cutoff():
    img = sv.synthetic_image(None, shape=(256, 256), pb_fwhm_deg=0.12, seed=1)  # a small beam: cut-off inside the image
    src = pd.DataFrame({
        "name": ["centre", "inside", "below_pb_cutoff", "off_image", "other_side_of_sky"],
        "ra_deg": [RA0, RA0 + 0.05, RA0 + 0.13 / np.cos(np.radians(DEC0)), RA0 + 1.0, RA0 + 180],
        "dec_deg": [DEC0, DEC0, DEC0, DEC0, -DEC0],
        "flux_jy": [1.0] * 5,
    })
    valid = img.pb >= 0.1
    sel, x, y = cat.in_footprint(src, img.wcs, img.pb.shape, valid)
    assert sel.name.tolist() == ["centre", "inside"]
    np.testing.assert_allclose([x[0], y[0]], [128, 128], atol=1e-6)


# ------------------------------------------------------- forced photometry


#: These images hold thermal noise only, so the statistical error is the whole error: no
#: systematic term (tests/test_photometry_quality.py checks that term on images that need it).
NOISE_ONLY = ph.PhotometryOptions(systematic_fraction=0.0)


def test_flux_and_error_against_truth_over_many_noise_realisations():
    """Sources at 10-500 sigma, 40 noise realisations: bias, per-source accuracy and pull width."""
    src = grid_sources(5, fluxes=np.geomspace(0.01, 0.5, 25))
    pulls, ratio, snr, names = [], [], [], []
    for seed in range(40):
        img = sv.synthetic_image(src, shape=(320, 320), noise_jy=1e-3, seed=seed)
        m = ph.measure_catalogue(image_set(img), src, 60841.0, NOISE_ONLY)
        assert len(m) == 25 and (m["flags"] == 0).all()
        true = src.set_index("name").loc[m.source, "flux_jy"].to_numpy()
        pulls.append((m.flux_jy - true) / m.flux_err_jy)
        ratio.append(m.flux_jy / true)
        snr.append(true / m.flux_err_jy)
        names.append(m.source)
    pulls, ratio, snr = (np.concatenate(a) for a in (pulls, ratio, snr))
    names = np.concatenate(names)
    bright = snr >= 20
    per_source = pd.Series(ratio[bright]).groupby(names[bright]).mean()
    print(f"pull mean {pulls.mean():+.3f} width {pulls.std():.3f} (n={pulls.size}); "
          f"sources >= 20 sigma: {per_source.size}, bias {np.median(ratio[bright]) - 1:+.4f}, "
          f"worst source mean {per_source.sub(1).abs().max():.4f}")
    assert per_source.size >= 12
    assert abs(np.median(ratio[bright]) - 1) < 0.005
    assert (per_source.sub(1).abs() < 0.02).all()  # every source above 20 sigma within 2% of the truth
    assert abs(pulls.mean()) < 0.1
    assert 0.8 < pulls.std() < 1.2  # errors match the scatter
    assert 0.9 < pulls.std() < 1.1  # ... and in fact closely


def test_noise_correlation_is_measured_as_the_beam_and_the_error_factor_is_four_thirds():
    img = sv.synthetic_image(None, shape=(512, 512), noise_jy=1e-3, seed=3)
    beam = ph.Beam.from_header(img.header)
    opts = ph.PhotometryOptions(fit_radius_beams=3.0)
    prep = ph.prepare(img.wcs, beam, opts, img.residual)
    assert prep.correlation == "measured"
    model = ph.beam_correlation(prep.inv, 2 * prep.r)
    assert np.abs(prep.rho - model).max() < 0.03
    # w^T R w for w = K / sum K^2: 4/3 for a Gaussian beam and beam-shaped noise (continuum limit)
    k = ph.gaussian(prep.inv, prep.dx, prep.dy)
    w = k / (k * k).sum()
    exact = ph.prepare(img.wcs, beam, ph.PhotometryOptions(fit_radius_beams=3.0, noise_correlation="beam"), None)
    assert w @ exact.R @ w == pytest.approx(4 / 3, rel=0.01)


def test_blended_pair_is_fitted_jointly_and_flagged():
    beam_deg = 18.0 / 3600
    src = pd.DataFrame({"name": ["A", "B", "C"], "ra_deg": [RA0, RA0 + beam_deg / np.cos(np.radians(DEC0)), RA0 + 0.1],
                        "dec_deg": [DEC0, DEC0, DEC0], "flux_jy": [0.2, 0.1, 0.05]})
    est = []
    for seed in range(10):
        img = sv.synthetic_image(src, shape=(256, 256), noise_jy=1e-3, seed=seed)
        m = ph.measure_catalogue(image_set(img), src, 60841.0, NOISE_ONLY).set_index("source")
        assert m.loc[["A", "B"], "flags"].tolist() == [Flag.BLENDED] * 2 and m.loc["C", "flags"] == 0
        assert m.loc["A", "n_blend"] == 2
        est.append((m.flux_jy - src.set_index("name").flux_jy) / m.flux_err_jy)
    pulls = pd.concat(est)
    assert np.abs(pulls).max() < 4  # each fitted within its (joint-fit) error, no flux given to the neighbour
    assert 0.5 < pulls.std() < 1.5


def test_nan_pixels_edge_and_low_beam_are_flagged_never_a_crash():
    src = grid_sources(3, spacing_deg=0.1, fluxes=[0.1] * 9)
    near_edge = pd.DataFrame({"name": ["EDGE"], "ra_deg": [RA0 + 0.138 / np.cos(np.radians(DEC0))], "dec_deg": [DEC0],
                              "flux_jy": [0.1]})
    allsrc = pd.concat([src, near_edge], ignore_index=True)
    img = sv.synthetic_image(allsrc, shape=(256, 256), noise_jy=1e-3, pb_fwhm_deg=0.16, pb_cutoff=0.05, seed=2)
    ims = image_set(img)
    x, y = img.sources.x_pix.to_numpy(), img.sources.y_pix.to_numpy()
    ims.flux = ims.flux.copy()
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    ims.flux[iy[0] - 1 : iy[0] + 2, ix[0] - 1 : ix[0] + 2] = np.nan  # NaN at S000's position
    ims.flux[iy[4] + 4, ix[4] + 4] = np.nan  # one blank pixel in the corner of S004's box
    m = ph.measure_catalogue(ims, allsrc, 60841.0, ph.PhotometryOptions(pb_cutoff=0.05)).set_index("source")
    assert m.loc["S000", "flags"] & Flag.NO_DATA and np.isnan(m.loc["S000", "flux_jy"])
    assert m.loc["S004", "flags"] == Flag.NAN_PIXELS
    assert m.loc["S004", "flux_jy"] == pytest.approx(0.1, abs=4 * m.loc["S004", "flux_err_jy"])
    assert m.loc["EDGE", "flags"] & Flag.EDGE
    low = m.pb < 0.2
    assert low.any() and (m["flags"][low] & int(Flag.LOW_PB)).all() and not (m["flags"][~low] & int(Flag.LOW_PB)).any()
    assert ph.describe_flags(int(Flag.EDGE | Flag.LOW_PB)) == "edge|low_pb"


def test_image_with_no_catalogue_source_in_its_footprint_gives_an_empty_table():
    img = sv.synthetic_image(None, shape=(128, 128), seed=1)
    far = pd.DataFrame({"name": ["far"], "ra_deg": [10.0], "dec_deg": [-40.0], "flux_jy": [1.0]})
    m = ph.measure_catalogue(image_set(img), far, 60841.0)
    assert len(m) == 0 and list(m.columns) == list(ph.MEASUREMENT_COLUMNS)
    m = ph.measure_catalogue(image_set(img), far.iloc[:0], 60841.0)
    assert len(m) == 0


def test_blind_detection_finds_the_source_missing_from_the_catalogue():
    src = grid_sources(3, spacing_deg=0.1, fluxes=[0.05] * 9)
    extra = pd.DataFrame({"name": ["NEW"], "ra_deg": [RA0 + 0.05 / np.cos(np.radians(DEC0))], "dec_deg": [DEC0 + 0.05],
                          "flux_jy": [0.03]})
    img = sv.synthetic_image(pd.concat([src, extra], ignore_index=True), shape=(256, 256), noise_jy=1e-3, seed=5)
    new, n_islands = ph.find_new_sources(image_set(img), src, 60841.0)
    assert n_islands >= 10
    assert len(new) == 1
    row = new.iloc[0]
    assert cat.separation_deg(row.ra_deg, row.dec_deg, extra.ra_deg[0], extra.dec_deg[0])[()] * 3600 < 3
    assert row.flux_jy == pytest.approx(0.03, abs=4 * row.flux_err_jy) and row.snr > 7


# ---------------------------------------------------------------- the stage


def _config(tmp_path, catalogue_path, **photometry):
    return validate_config({
        "results_dir": str(tmp_path / "results"),
        "database": {"url": f"sqlite:///{tmp_path}/products.sqlite"},
        "catalogue": {"path": str(catalogue_path)},
        "photometry": photometry,
    })


def _write_image_products(tmp_path, src, seed=0, group=GROUP):
    img = sv.synthetic_image(src, shape=(256, 256), noise_jy=1e-3, seed=seed)
    prefix = tmp_path / "results" / "images" / group
    paths = sv.write_synthetic_fits(img, prefix, four_d=True)
    write_sidecar(paths["image"], kind="image", group=group, inputs=[],
                  qa={"rms_jy": 1e-3, "grade": "good", "mid_time": "2025-06-15T08:02:38"})
    return img, paths


def test_stage_measures_fits_images_writes_products_and_registers_them(tmp_path):
    from dsa110_contimg.db import Database

    src = grid_sources(3, spacing_deg=0.1, fluxes=[0.05, 0.1, 0.2] * 3)
    catalogue = tmp_path / "sky.csv"
    src.to_csv(catalogue, index=False)
    extra = pd.DataFrame({"name": ["NEW"], "ra_deg": [RA0 + 0.05], "dec_deg": [DEC0 - 0.05], "flux_jy": [0.05]})
    _, paths = _write_image_products(tmp_path, pd.concat([src, extra], ignore_index=True))
    config = _config(tmp_path, catalogue)
    out = tmp_path / "results" / "photometry" / f"{GROUP}.parquet"
    new = tmp_path / "results" / "photometry" / f"{GROUP}.new_sources.csv"
    qa = stage.photometry(str(paths["pbcor"]), str(paths["pb"]), str(paths["residual"]), str(paths["image"]) + ".json",
                          str(out), str(new), GROUP, config, log=str(tmp_path / "phot.log"))
    table = pq.read_table(out)
    assert table.schema.field("flags").type == "int32" and table.num_rows == 9
    frame = table.to_pandas().merge(src.rename(columns={"name": "source", "flux_jy": "true"}), on="source")
    assert (np.abs(frame.flux_jy - frame.true) < 4 * frame.flux_err_jy).all()
    assert qa["mjd"] == pytest.approx(60841.0 + (8 * 3600 + 2 * 60 + 38) / 86400, abs=1e-9)
    assert qa["noise_correlation"] == "measured" and qa["n_new_sources"] == 1
    assert len(pd.read_csv(new)) == 1
    side = read_sidecar(str(out) + ".json")
    assert side["kind"] == "photometry" and side["group"] == GROUP and str(catalogue) in side["inputs"]
    with Database.from_config(config) as db:
        db.register_product(paths["image"])  # as rule image does; the measurements then name their image
        rows = db.measurements()
        assert len(rows) == 9 and {r["image"] for r in rows} == {str(paths["image"].resolve())}
        kinds = sorted(p["kind"] for p in db.list_products())
        runs = db.job_runs()
    assert kinds == ["image", "new_sources", "photometry"]
    assert [(r["rule"], r["status"]) for r in runs] == [("photometry", "success")]


def test_stage_writes_an_empty_table_for_an_image_outside_the_catalogue(tmp_path):
    catalogue = tmp_path / "sky.csv"
    pd.DataFrame({"name": ["far"], "ra_deg": [10.0], "dec_deg": [-40.0], "flux_jy": [1.0]}).to_csv(catalogue, index=False)
    _, paths = _write_image_products(tmp_path, None)
    config = _config(tmp_path, catalogue)
    out = tmp_path / "results" / "photometry" / f"{GROUP}.parquet"
    log = tmp_path / "phot.log"
    qa = stage.photometry(str(paths["pbcor"]), str(paths["pb"]), str(paths["residual"]), None, str(out),
                          str(out).replace(".parquet", ".new_sources.csv"), GROUP, config, log=str(log))
    assert qa["n_sources"] == 0 and qa["note"] == "no catalogue source in the image footprint"
    assert pq.read_table(out).num_rows == 0
    assert "no catalogue source in the footprint" in log.read_text()


def test_stage_fails_clearly_on_a_catalogue_missing_columns(tmp_path):
    catalogue = tmp_path / "sky.csv"
    pd.DataFrame({"name": ["a"], "ra": [150.0], "dec_deg": [33.0], "flux_jy": [1.0]}).to_csv(catalogue, index=False)
    _, paths = _write_image_products(tmp_path, None)
    out = tmp_path / "results" / "photometry" / f"{GROUP}.parquet"
    with pytest.raises(cat.CatalogueError, match=r"sky\.csv lacks columns 'ra_deg'"):
        stage.photometry(str(paths["pbcor"]), str(paths["pb"]), str(paths["residual"]), None, str(out),
                         str(out) + ".csv", GROUP, _config(tmp_path, catalogue))
    assert not out.exists()


def test_four_d_fits_and_two_d_fits_read_alike(tmp_path):
    img = sv.synthetic_image(grid_sources(2), shape=(64, 64), seed=1)
    four = sv.write_synthetic_fits(img, tmp_path / "a", four_d=True)
    two = sv.write_synthetic_fits(img, tmp_path / "b", four_d=False)
    a = ph.load_images(four["pbcor"], four["pb"], four["residual"])
    b = ph.load_images(two["pbcor"], two["pb"], two["residual"])
    np.testing.assert_array_equal(a.flux, b.flux)
    assert a.beam == b.beam and a.wcs.wcs.ctype[0] == "RA---SIN"
    with pytest.raises(ph.PhotometryError, match="no restoring beam"):
        from astropy.io import fits

        hdr = fits.getheader(two["pbcor"])
        del hdr["BMAJ"]
        fits.writeto(tmp_path / "nobeam.fits", fits.getdata(two["pbcor"]), hdr)
        ph.load_images(tmp_path / "nobeam.fits")
    json.dumps(ph.FLAG_NAMES)  # the flag names are plain data for the docs and the config
