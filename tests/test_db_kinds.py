"""Every product kind registered from its sidecar, provenance both ways, sync of the whole chain.

On SQLite and on a real PostgreSQL server (``db_url`` is parametrised).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from db_products import (
    CALGROUP,
    GROUP,
    make_calibrated,
    make_caltable,
    make_chain,
    make_image,
    make_ms,
    make_photometry,
    make_raw,
    photometry_table,
)

from dsa110_contimg.db import KINDS, NotFoundError
from dsa110_contimg.provenance import SidecarError, atomic_output, write_sidecar


def one(database, kind, path):
    (row,) = [r for r in database.list_products(kind) if r["path"] == str(Path(path).resolve())]
    return row


def write_table(path: Path, columns: dict) -> Path:
    table = pa.table(columns)
    with atomic_output(path) as tmp:
        if path.suffix == ".csv":
            pyarrow.csv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
    return path


# -------------------------------------------------------------- each kind


def test_chain_kinds_fill_their_qa_columns(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    for kind in ("ms", "caltable", "calibrated", "image", "photometry"):
        key = "cal_ms" if kind == "ms" else kind
        assert database.register_product(chain[key]) == "added", kind
    database.register_product(chain["ms"])

    cal = one(database, "caltable", chain["caltable"])
    assert cal["calibrator"] == "3C286" and cal["refant"] == "24" and cal["passed"] is True
    assert cal["cal_status"] == "active" and cal["group_id"] == CALGROUP
    assert cal["valid_end"] - cal["valid_start"] == dt.timedelta(hours=24)
    assert cal["flux_ratio"] == pytest.approx(14.6 / 14.65)

    calibrated = one(database, "calibrated", chain["calibrated"])
    assert calibrated["caltable"] == CALGROUP and calibrated["n_channels"] == 96

    image = one(database, "image", chain["image"])
    assert image["grade"] == "good" and image["rms_jy"] == 0.8e-3 and image["imager"] == "wsclean"
    assert image["n_sources_5sigma"] == 42 and image["size_bytes"] == len(b"SIMPLE  = T")

    phot = one(database, "photometry", chain["photometry"])
    assert phot["n_measurements"] == 50 and phot["n_flagged"] == 3
    rows = database.measurements(group=GROUP)
    assert len(rows) == 50
    assert rows[0]["image"] == str(chain["image"]) and rows[0]["source"] == "NVSS J000000"
    assert {r["group_id"] for r in rows} == {GROUP}


def test_failed_calibration_is_retired_and_listed(database, dirs):
    raw, results = dirs
    ms = make_ms(results, CALGROUP, make_raw(raw, CALGROUP))
    caltable = make_caltable(results, CALGROUP, ms, passed=False)
    database.register_product(ms)
    database.register_product(caltable)
    row = one(database, "caltable", caltable)
    assert (row["passed"], row["cal_status"]) == (False, "retired")
    assert "too faint" in row["reason"]
    assert [r["path"] for r in database.list_products(status="retired")] == [str(caltable)]
    assert database.list_products(status="active") == []


@pytest.mark.parametrize(
    ("qa", "message"),
    [
        ({"grade": "excellent"}, "'grade': 'excellent' is not one of"),
        ({"rms_jy": "small"}, "'rms_jy': expected a number"),
        ({"n_sources_5sigma": 4.5}, "'n_sources_5sigma': expected an integer"),
    ],
)
def test_bad_qa_values_name_the_key(database, dirs, qa, message):
    _, results = dirs
    product = results / "images" / f"{GROUP}.image.fits"
    product.parent.mkdir()
    product.write_bytes(b"x")
    write_sidecar(product, kind="image", group=GROUP, qa=qa)
    with pytest.raises(SidecarError, match=message):
        database.register_product(product)
    assert database.list_products() == []


def test_photometry_rows_reloaded_only_when_the_product_changes(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    phot = chain["photometry"]
    assert database.register_product(phot) == "added"
    first = {r["id"] for r in database.measurements()}
    assert database.register_product(phot) == "unchanged"
    assert {r["id"] for r in database.measurements()} == first  # not deleted and reinserted

    make_photometry(results, GROUP, chain["image"], n=30, seed=1)  # a rerun
    assert database.register_product(phot) == "updated"
    assert len(database.measurements()) == 30
    assert one(database, "photometry", phot)["n_measurements"] == 30


def test_nan_flux_is_stored_as_null(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    table = photometry_table(GROUP, 3)
    flux = table.column("flux_jy").to_numpy().copy()
    flux[1] = np.nan
    table = table.set_column(table.column_names.index("flux_jy"), "flux_jy", pa.array(flux))
    make_photometry(results, GROUP, chain["image"], table=table)
    database.register_product(chain["photometry"])
    assert [r["flux_jy"] is None for r in database.measurements()] == [False, True, False]


def test_photometry_with_missing_or_mistyped_columns_is_refused(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    table = photometry_table(GROUP, 3).drop_columns(["flux_err_jy"])
    make_photometry(results, GROUP, chain["image"], table=table)
    with pytest.raises(SidecarError, match=r"lacks columns \['flux_err_jy'\]"):
        database.register_product(chain["photometry"])
    table = photometry_table(GROUP, 3)
    table = table.set_column(0, "source", pa.array([1, 2, 3]))
    make_photometry(results, GROUP, chain["image"], table=table)
    with pytest.raises(SidecarError, match="column 'source': expected strings"):
        database.register_product(chain["photometry"])
    assert database.list_products() == [] and database.measurements() == []


def test_fan_in_kinds_and_their_rows(database, dirs):
    """Light curves, variability, ESE and new-source candidates, calibrator flux, mosaics."""
    raw, results = dirs
    chain = make_chain(raw, results)
    for key in ("cal_ms", "caltable", "ms", "calibrated", "image", "photometry"):
        database.register_product(chain[key])

    lightcurves = write_table(results / "lightcurves" / "all.parquet", {"source": ["a"], "mjd": [1.0]})
    write_sidecar(lightcurves, kind="lightcurves", inputs=[chain["photometry"]],
                  qa={"n_sources": 2, "n_epochs": 30, "first_mjd": 60841.0, "last_mjd": 60871.0})
    variability = write_table(
        results / "variability" / "all.parquet",
        {"source": ["a", "b"], "ra_deg": [1.0, 2.0], "dec_deg": [16.0, 16.5], "n_epochs": [30, 30],
         "eta": [1.2, 55.0], "v": [0.01, 0.4], "vs_max": [1.1, 9.0], "m_max": [0.02, 0.8],
         "chi2_red": [1.0, 40.0], "mean_flux_jy": [0.5, 0.2]},
    )  # fmt: skip
    write_sidecar(variability, kind="variability", inputs=[lightcurves], qa={"n_variable": 1})
    ese = write_table(
        results / "variability" / "ese_candidates.csv",
        {"source": ["b"], "ra_deg": [2.0], "dec_deg": [16.5], "start_mjd": [60850.0],
         "end_mjd": [60860.0], "depth": [0.6], "significance": [25.0]},
    )  # fmt: skip
    write_sidecar(ese, kind="ese_candidates", inputs=[variability], qa={"preset": "moderate"})
    new = write_table(
        results / "photometry" / f"{GROUP}.new_sources.csv",
        {"ra_deg": [121.0], "dec_deg": [16.2], "flux_jy": [0.05], "snr": [50.0]},
    )
    write_sidecar(new, kind="new_sources", group=GROUP, inputs=[chain["image"]],
                  qa={"threshold_sigma": 7.0})
    calflux = write_table(
        results / "calibration" / "calibrator_flux.csv",
        {"calgroup": [CALGROUP], "calibrator": ["3C286"], "transit_time": [f"{CALGROUP}.5"],
         "dec_deg": [16.1], "passed": [True], "flux_expected_jy": [14.65],
         "flux_measured_jy": [None], "flux_ratio": [None], "n_references": [0], "alert": [False],
         "note": ["flux standard: no other standard at this declination to compare"]},
    )  # fmt: skip
    write_sidecar(calflux, kind="calflux", inputs=[chain["caltable"]],
                  qa={"n_solutions": 1, "n_measured": 0, "n_alerts": 0})
    mosaic_dir = results / "mosaics" / "science"
    plan = write_table(mosaic_dir / "2025-06-15.plan.csv", {"image": [str(chain["image"])]})
    write_sidecar(plan, kind="mosaic_plan", inputs=[chain["image"]],
                  qa={"tier": "science", "name": "2025-06-15", "n_images": 1, "n_rejected": 0,
                      "time_start": GROUP, "time_end": GROUP, "dec_deg": 16.1})
    mosaic = mosaic_dir / "2025-06-15.fits"
    mosaic.write_bytes(b"SIMPLE")
    write_sidecar(mosaic, kind="mosaic", inputs=[plan, chain["image"]],
                  qa={"tier": "science", "name": "2025-06-15", "n_images": 1, "dec_deg": 16.1,
                      "time_start": GROUP, "time_end": GROUP})
    mosaic_qa = mosaic_dir / "2025-06-15.qa.png"
    mosaic_qa.write_bytes(b"PNG")
    write_sidecar(mosaic_qa, kind="mosaic_qa", inputs=[mosaic],
                  qa={"rms_jy": 3e-4, "grade": "good", "flux_ratio": 1.01, "n_matched": 40})

    report = database.sync(results, raw)
    assert not report.problems, report.problems
    added = {kind for kind, _ in report.added}
    assert added == {"lightcurves", "variability", "ese_candidates", "new_sources", "calflux",
                     "mosaic_plan", "mosaic", "mosaic_qa"}  # fmt: skip
    assert set(KINDS) == added | {"ms", "caltable", "calibrated", "image", "photometry"}

    assert one(database, "variability", variability)["n_sources"] == 2
    assert one(database, "ese_candidates", ese)["n_candidates"] == 1
    assert one(database, "new_sources", new)["n_candidates"] == 1
    assert one(database, "calflux", calflux)["n_solutions"] == 1
    (flux,) = database.calibrator_flux(calibrator="3C286")
    assert flux["calgroup"] == CALGROUP and flux["flux_measured_jy"] is None and not flux["alert"]
    assert flux["transit_time"].isoformat() == f"{CALGROUP}.500000"
    assert [r["path"] for r in database.list_products(grade="good")] == [
        str(chain["image"]), str(mosaic_qa)
    ]
    tree = database.provenance(mosaic_qa)
    kinds = [n.kind for n in tree.walk()]
    assert kinds[:4] == ["mosaic_qa", "mosaic", "mosaic_plan", "image"] and "raw" in kinds
    assert [n.repeated for n in tree.walk() if n.kind == "image"] == [False, True]
    assert not database.sync(results, raw).changed


# --------------------------------------------------------------- provenance


def test_provenance_down_and_derived_up(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    database.sync(results, raw)

    tree = database.provenance(chain["photometry"])
    assert (tree.kind, tree.path, tree.status) == ("photometry", str(chain["photometry"]), "current")
    (image, catalogue) = tree.children
    assert image.kind == "image" and catalogue.kind == "file"  # not a product: path kept
    (calibrated,) = image.children
    ms, caltable = calibrated.children
    assert (ms.kind, caltable.kind) == ("ms", "caltable")
    assert sorted(c.path for c in ms.children) == sorted(str(p) for p in chain["raw"])
    (cal_ms,) = caltable.children
    assert cal_ms.path == str(chain["cal_ms"]) and len(cal_ms.children) == 16
    assert caltable.summary["calibrator"] == "3C286"

    up = database.derived(chain["raw"][3])
    assert [n.kind for n in up.walk()] == ["raw", "ms", "calibrated", "image", "photometry"]
    up = database.derived(chain["caltable"])
    assert [n.path for n in up.walk()][1:] == [
        str(chain["calibrated"]), str(chain["image"]), str(chain["photometry"])
    ]
    with pytest.raises(NotFoundError, match="nowhere"):
        database.provenance("/nowhere.fits")


def test_input_inside_a_product_folder_links_to_the_folder(database, dirs):
    raw, results = dirs
    cal_ms = make_ms(results, CALGROUP, make_raw(raw, CALGROUP))
    caltable = make_caltable(results, CALGROUP, cal_ms)
    ms = make_ms(results, GROUP, make_raw(raw, GROUP))
    calibrated = make_calibrated(results, GROUP, ms, caltable, inside=True)
    for product in (cal_ms, caltable, ms, calibrated):
        database.register_product(product)
    assert [c.kind for c in database.provenance(calibrated).children] == ["ms", "caltable"]


def test_product_registered_before_its_input_is_linked_when_the_input_arrives(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    database.register_product(chain["image"])  # before the calibrated MS it was made from
    assert [c.kind for c in database.provenance(chain["image"]).children] == ["file"]
    database.register_product(chain["calibrated"])
    (calibrated,) = database.provenance(chain["image"]).children
    assert calibrated.kind == "calibrated"
    assert calibrated.children[0].kind == "file"  # the MS is not registered yet
    database.register_product(chain["ms"])
    assert [n.kind for n in database.provenance(chain["image"]).walk()][:3] == [
        "image", "calibrated", "ms"
    ]
    assert "raw" in [n.kind for n in database.provenance(chain["image"]).walk()]


# --------------------------------------------------- sync, delete and rerun


def test_delete_and_rerun_an_image(database, dirs):
    """A user deletes an image to rerun it: one current row after, provenance intact."""
    raw, results = dirs
    chain = make_chain(raw, results)
    assert len(database.sync(results, raw).added) == 6
    image = chain["image"]

    os.remove(image)
    report = database.sync(results, raw)
    assert report.gone == [("image", str(image))] and not report.added
    assert one(database, "image", image)["status"] == "gone"
    assert database.provenance(chain["photometry"]).children[0].status == "gone"

    make_image(results, GROUP, chain["calibrated"], grade="marginal", rms=2e-3)  # the rerun
    assert database.register_product(image) == "updated"
    rows = [r for r in database.list_products() if r["path"] == str(image)]
    assert len(rows) == 1 and rows[0]["status"] == "current" and rows[0]["grade"] == "marginal"
    tree = database.provenance(chain["photometry"])
    assert [n.kind for n in tree.walk()][:4] == ["photometry", "image", "calibrated", "ms"]
    assert tree.children[0].status == "current"
    assert not database.sync(results, raw).changed


def test_sync_updates_a_changed_product_and_reports_each_kind(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    report = database.sync(results, raw)
    assert sorted({k for k, _ in report.added}) == [
        "calibrated", "caltable", "image", "ms", "photometry"
    ]
    make_image(results, GROUP, chain["calibrated"], grade="bad", rms=9e-3)
    report = database.sync(results, raw)
    assert report.updated == [("image", str(chain["image"]))]
    assert one(database, "image", chain["image"])["grade"] == "bad"
    shutil.rmtree(chain["caltable"])
    os.remove(str(chain["caltable"]) + ".json")
    report = database.sync(results, raw)
    assert report.gone == [("caltable", str(chain["caltable"]))]
    text = str(report)
    assert "gone    caltable" in text


def test_a_path_cannot_change_kind(database, dirs):
    _, results = dirs
    product = results / "thing.fits"
    product.write_bytes(b"x")
    write_sidecar(product, kind="image", group=GROUP, qa={})
    database.register_product(product)
    write_sidecar(product, kind="mosaic", qa={})
    with pytest.raises(SidecarError, match="registered as kind 'image'"):
        database.register_product(product)


def test_sync_skips_unchanged_products_but_sees_a_rewritten_file(database, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    database.sync(results, raw)
    chain["image"].write_bytes(b"SIMPLE  = T, rewritten")  # same sidecar, other bytes
    report = database.sync(results)
    assert report.updated == [("image", str(chain["image"]))]
    assert one(database, "image", chain["image"])["size_bytes"] == len(b"SIMPLE  = T, rewritten")
    report = database.sync(results, full=True)  # every product registered again: no change
    assert not report.changed and len(report.unchanged) == 6


def test_companion_files_and_sidecars_link_to_their_product(database, dirs):
    """Photometry names the beam-corrected image and the image's sidecar, not the image itself."""
    raw, results = dirs
    chain = make_chain(raw, results)
    image, images = chain["image"], chain["image"].parent
    pbcor = images / f"{GROUP}.pbcor.fits"
    pbcor.write_bytes(b"pbcor")
    write_sidecar(image, kind="image", group=GROUP, inputs=[chain["calibrated"]],
                  extra={"products": {"image": str(image), "pbcor": str(pbcor)}})
    phot = chain["photometry"]
    write_sidecar(phot, kind="photometry", group=GROUP, inputs=[pbcor, f"{image}.json"], qa={})
    database.register_product(phot)  # before the image: linked when it arrives
    database.register_product(image)
    assert [c.path for c in database.provenance(phot).children] == [str(image), str(image)]
    assert database.get_product(pbcor)["files"] == {"pbcor": str(pbcor)}
    assert database.derived(pbcor).path == str(image)

    other = images / "other.fits"
    other.write_bytes(b"x")
    write_sidecar(other, kind="image", group=GROUP, extra={"products": {"pbcor": str(pbcor)}})
    with pytest.raises(SidecarError, match="already belongs to product"):
        database.register_product(other)
