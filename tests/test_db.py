"""The product database on real SQLite files and a real (throwaway) PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from db_products import GROUP, GROUP2, make_ms, make_raw

from dsa110_contimg import db as dbmod
from dsa110_contimg.db import Database, DatabaseError, UnknownKindError
from dsa110_contimg.provenance import SidecarError, read_sidecar, write_sidecar


def rows(database, kind="ms", **kw):
    return database.list_products(kind, **kw)


# -------------------------------------------------------------- registration


def test_register_fills_product_group_and_raw_rows(database, dirs):
    raw, results = dirs
    inputs = make_raw(raw, GROUP)
    product = make_ms(results, GROUP, inputs)

    assert database.register_product(product) == "added"

    (ms,) = rows(database)
    assert ms["path"] == str(product.resolve())
    assert ms["status"] == "current"
    assert ms["group_id"] == GROUP
    assert ms["sidecar"] == str(product.resolve()) + ".json"
    assert ms["n_rows"] == 24 * 4656 and ms["n_antennas"] == 96 and ms["n_channels"] == 768
    assert ms["freq_min_hz"] == 1.3114e9 and ms["dec_deg"] == 16.1
    assert ms["time_start"] == dt.datetime.fromisoformat(GROUP)
    assert ms["time_end"] == dt.datetime.fromisoformat(GROUP) + dt.timedelta(seconds=309)
    assert ms["qa"]["rms_jy"] == 0.01
    assert ms["config_digest"] == read_sidecar(str(product) + ".json")["config_digest"]

    (group,) = database.group_summary()
    assert group["id"] == GROUP
    assert group["start_time"] == dt.datetime(2025, 6, 15, 8, 0, 3)
    assert (group["n_subbands"], group["status"], group["dec_deg"]) == (16, "complete", 16.1)
    assert group["products"] == {"ms": 1}

    raws = database.list_raw_files(GROUP)
    assert [r["subband"] for r in sorted(raws, key=lambda r: r["subband"])] == list(range(16))
    assert {r["path"] for r in raws} == {str(p) for p in inputs}
    assert all(r["size_bytes"] == 100 + r["subband"] and r["mtime"] is not None for r in raws)


def test_registration_is_idempotent(database, dirs):
    raw, results = dirs
    product = make_ms(results, GROUP, make_raw(raw, GROUP))
    assert database.register_product(product) == "added"
    assert database.register_product(product) == "unchanged"
    assert database.register_sidecar(read_sidecar(str(product) + ".json")) == "unchanged"
    assert len(rows(database)) == 1
    assert len(database.list_raw_files()) == 16


def test_relative_paths_resolve_against_the_sidecar_workdir(database, dirs, monkeypatch, tmp_path):
    raw, results = dirs
    make_raw(raw, GROUP)
    monkeypatch.chdir(tmp_path)  # as Snakemake runs jobs: paths relative to the workdir
    inputs = [f"raw/{p.name}" for p in sorted(raw.iterdir())]
    product = Path("results/ms") / f"{GROUP}.ms"
    make_ms(Path("results"), GROUP, inputs)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert database.register_sidecar(tmp_path / f"{product}.json") == "added"
    assert rows(database)[0]["path"] == str(tmp_path / product)
    assert all(r["size_bytes"] for r in database.list_raw_files())  # found the real files
    assert {r["path"] for r in database.list_raw_files()} == {str(p) for p in raw.iterdir()}


def test_failed_registration_leaves_nothing(database, dirs):
    raw, results = dirs
    inputs = [*make_raw(raw, GROUP), raw / "notes.txt"]
    product = make_ms(results, GROUP, inputs)
    with pytest.raises(SidecarError, match="input is not a raw subband file"):
        database.register_product(product)
    assert rows(database) == []
    assert database.list_raw_files() == []
    assert database.group_summary() == []


def test_registration_errors(database, dirs):
    raw, results = dirs
    product = make_ms(results, GROUP, make_raw(raw, GROUP))
    shutil.rmtree(product)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        database.register_product(product)

    other = results / "thing.bin"
    other.write_bytes(b"")
    write_sidecar(other, kind="nonsense")
    with pytest.raises(UnknownKindError, match="nonsense"):
        database.register_product(other)

    (results / "bad.ms").mkdir()
    write_sidecar(results / "bad.ms", kind="ms", group="yesterday")
    with pytest.raises(SidecarError, match="bad group"):
        database.register_product(results / "bad.ms")

    with pytest.raises(SidecarError, match="does not exist"):
        database.register_product(results / "never.ms")


# ---------------------------------------------------------------------- sync


def test_sync_add_delete_rerun(database, dirs):
    raw, results = dirs
    first = make_ms(results, GROUP, make_raw(raw, GROUP))
    second = make_ms(results, GROUP2, make_raw(raw, GROUP2))

    report = database.sync(results, raw)
    assert report.added == [("ms", str(first)), ("ms", str(second))]
    # the sidecars registered the raw inputs already; the listing finds them known
    assert sorted(report.unchanged) == sorted(("raw", str(p)) for p in raw.iterdir())
    assert not report.gone and not report.problems

    again = database.sync(results, raw)
    assert not again.changed, str(again)
    assert "no change" in str(again)

    shutil.rmtree(first)  # delete the output to rerun it
    report = database.sync(results, raw)
    assert report.gone == [("ms", str(first))]
    assert not report.added and not report.updated
    assert [r["path"] for r in rows(database, status="gone")] == [str(first)]
    assert not database.sync(results, raw).changed

    rerun = make_ms(results, GROUP, sorted(raw.glob(f"{GROUP[:-2]}*")), flagged=0.3)
    assert rerun == first
    report = database.sync(results, raw)
    assert report.updated == [("ms", str(first))] and not report.added and not report.gone
    matching = [r for r in rows(database) if r["path"] == str(first)]
    assert len(matching) == 1
    assert matching[0]["status"] == "current" and matching[0]["flagged_fraction"] == 0.3
    assert len(rows(database)) == 2
    assert not database.sync(results, raw).changed


def test_sync_then_direct_registration_is_one_row(database, dirs):
    raw, results = dirs
    product = make_ms(results, GROUP, make_raw(raw, GROUP))
    assert database.register_product(product) == "added"
    report = database.sync(results, raw)
    assert report.unchanged and not report.changed, str(report)
    assert len(rows(database)) == 1


def test_sync_raw_groups_by_name(database, dirs):
    raw, _ = dirs
    make_raw(raw, GROUP)
    make_raw(raw, GROUP2, subbands=range(8))
    (raw / "notes.txt").write_text("not an observation")
    (raw / "2025-06-15T09:00:00_sb99.hdf5").write_bytes(b"")

    report = database.sync(raw.parent / "results", raw)
    assert ("group", GROUP) in report.added and ("group", GROUP2) in report.added
    assert len(report.problems) == 1 and "sb99" in report.problems[0]
    summary = {g["id"]: g for g in database.group_summary()}
    assert set(summary) == {GROUP, GROUP2}
    assert (summary[GROUP]["n_subbands"], summary[GROUP]["status"]) == (16, "complete")
    assert (summary[GROUP2]["n_subbands"], summary[GROUP2]["status"]) == (8, "incomplete")

    again = database.sync(raw.parent / "results", raw)
    assert not again.changed


def test_sync_reports_bad_sidecars_and_ignores_other_json(database, dirs):
    raw, results = dirs
    good = make_ms(results, GROUP, make_raw(raw, GROUP))
    (results / "config.json").write_text(json.dumps({"results_dir": "results"}))
    (results / "broken.json").write_text("{")
    (results / "ms" / "bad.ms").mkdir()
    (results / "ms" / "bad.ms.json").write_text(json.dumps({"kind": "ms"}))

    report = database.sync(results)
    assert report.added == [("ms", str(good))]
    assert len(report.problems) == 2
    assert any("broken.json" in p and "JSON" in p for p in report.problems)
    assert any("bad.ms.json" in p and "missing required fields" in p for p in report.problems)
    assert "problem" in str(report)


def test_sync_does_not_descend_into_products(dirs):
    _, results = dirs
    product = make_ms(results, GROUP, [])
    (product / "inner.json").write_text("{")  # would be a problem if it were read
    assert list(dbmod.iter_sidecar_files(results)) == [Path(str(product) + ".json")]


def test_sync_report_text():
    report = dbmod.SyncReport()
    assert str(report) == "sync: 0 added, 0 updated, 0 gone, 0 unchanged (no change)"
    for i in range(25):
        report.record("added", "raw", f"/raw/{i}")
    report.gone.append(("ms", "/r/x.ms"))
    text = str(report)
    assert text.splitlines()[0] == "sync: 25 added, 0 updated, 1 gone, 0 unchanged"
    assert "... and 5 more added" in text and "gone    ms          /r/x.ms" in text


# ---------------------------------------------------------- configuration


def test_from_config_defaults_to_sqlite_in_results(tmp_path):
    results = tmp_path / "results"
    with Database.from_config({"results_dir": str(results), "database": {"url": None}}) as database:
        assert database.url.get_backend_name() == "sqlite"
    path = results / "products.sqlite"
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"raw_files", "observation_groups", "products", "measurement_sets"} <= tables


def test_from_config_uses_url(db_url, dirs):
    raw, results = dirs
    config = {"results_dir": str(results), "database": {"url": db_url}}
    dbmod.register(config, make_ms(results, GROUP, make_raw(raw, GROUP)))
    with Database.from_config(config) as database:
        assert len(rows(database)) == 1


def test_unreachable_database_names_url_without_password():
    with pytest.raises(DatabaseError) as info:
        Database("postgresql+psycopg://pipeline:s3cret@127.0.0.1:1/products")
    message = str(info.value)
    assert "pipeline:***@127.0.0.1:1/products" in message
    assert "s3cret" not in message


def test_unopenable_sqlite_is_a_database_error(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/products.sqlite"
    with pytest.raises(DatabaseError, match="no/such/dir"):
        Database(url)


def test_bad_url_is_a_database_error():
    with pytest.raises(DatabaseError, match="cannot use database"):
        Database("nosuchdialect://u:pw@host/db")


# ------------------------------------------------------------- concurrency


def test_locked_sqlite_is_retried(tmp_path, dirs):
    raw, results = dirs
    url = f"sqlite:///{tmp_path}/products.sqlite"
    product = make_ms(results, GROUP, make_raw(raw, GROUP))
    Database(url).close()

    def hold_lock(seconds: float, ready: threading.Event) -> None:
        conn = sqlite3.connect(tmp_path / "products.sqlite", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    # busy_timeout alone (0.05 s) would give up; the retries wait the lock out.
    ready = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(0.6, ready))
    holder.start()
    ready.wait()
    with Database(url, busy_timeout_s=0.05) as database:
        assert database.register_product(product) == "added"
    holder.join()

    ready = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(0.6, ready))
    holder.start()
    ready.wait()
    with Database(url, busy_timeout_s=0.05, max_attempts=1) as database:
        with pytest.raises(DatabaseError, match="database is locked"):
            database.register_product(product)
    holder.join()
