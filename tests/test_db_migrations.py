"""Schema revisions: create, upgrade from the foundation's database, refuse newer ones.

On SQLite and on a real PostgreSQL server. Revision 0001 is the schema the
foundation's code created (without Alembic); 0002 the full schema; 0003 adds
the calibrated MS's RFI-flagged fraction.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from db_products import GROUP, make_chain, make_ms, make_raw, ms_qa

from dsa110_contimg import cli
from dsa110_contimg.db import (
    HEAD_REVISION,
    Base,
    Database,
    DatabaseError,
    SchemaOutdatedError,
    SchemaTooNewError,
    check_database,
    migrate,
)
from dsa110_contimg.db.core import make_engine
from dsa110_contimg.db.schema import REVISIONS


def schema_differences(url: str) -> list:
    """What Alembic's autogenerate finds between the database and the models (nothing, ideally)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def make_foundation_database(url: str, raw, results):
    """The database the foundation's code left: revision 0001 tables, no alembic_version,
    one Measurement Set registered with its 16 raw files."""
    inputs = make_raw(raw, GROUP)
    ms = make_ms(results, GROUP, inputs)
    engine = make_engine(url)
    now = dt.datetime(2025, 6, 16)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection, "0001")
            connection.execute(sa.text("DROP TABLE alembic_version"))
            meta = sa.MetaData()
            meta.reflect(connection)
            t = meta.tables
            connection.execute(
                t["observation_groups"].insert(),
                dict(id=GROUP, start_time=dt.datetime.fromisoformat(GROUP), n_subbands=16,
                     dec_deg=16.1, status="complete"),
            )  # fmt: skip
            connection.execute(
                t["raw_files"].insert(),
                [dict(path=str(p), group_id=GROUP, subband=sb, size_bytes=100 + sb, mtime=now,
                      registered_at=now) for sb, p in enumerate(inputs)],
            )  # fmt: skip
            qa = ms_qa(GROUP)
            connection.execute(
                t["measurement_sets"].insert(),
                dict(path=str(ms), group_id=GROUP, status="current", created=now,
                     config_digest="abc", qa=qa, sidecar=str(ms) + ".json", n_rows=qa["n_rows"],
                     n_antennas=96, n_channels=768, dec_deg=16.1, flagged_fraction=0.1),
            )  # fmt: skip
    finally:
        engine.dispose()
    return ms, inputs


def test_packaged_scripts_are_the_known_revisions():
    assert migrate.script_revisions() == list(REVISIONS)
    assert REVISIONS[-1] == HEAD_REVISION


def test_new_database_is_created_at_head_and_matches_the_models(db_url):
    with Database(db_url) as database:
        assert database.revision() == HEAD_REVISION
    assert schema_differences(db_url) == []


def test_upgrade_from_empty_with_the_command(db_url, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"results_dir: {tmp_path}\ndatabase: {{url: '{db_url}'}}\n")
    assert cli.main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"upgraded from revision none (empty) to {HEAD_REVISION}" in capsys.readouterr().out
    assert schema_differences(db_url) == []
    assert cli.main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"already at schema revision {HEAD_REVISION}" in capsys.readouterr().out


def test_upgrade_from_the_foundations_database(db_url, dirs):
    raw, results = dirs
    ms, inputs = make_foundation_database(db_url, raw, results)

    with pytest.raises(SchemaOutdatedError, match=r"revision 0001, .* run `contimg db upgrade"):
        Database(db_url)
    with pytest.raises(SchemaOutdatedError, match="contimg db upgrade --config"):
        check_database({"database": {"url": db_url}})

    with Database(db_url, check_schema=False) as database:
        assert database.upgrade() == ("0001", HEAD_REVISION)
    assert schema_differences(db_url) == []

    with Database(db_url) as database:
        (row,) = database.list_products("ms")
        assert (row["path"], row["status"], row["group_id"]) == (str(ms), "current", GROUP)
        assert (row["n_rows"], row["n_channels"], row["qa"]["rms_jy"]) == (24 * 4656, 768, 0.01)
        tree = database.provenance(ms)
        assert sorted(c.path for c in tree.children) == sorted(str(p) for p in inputs)
        # the sidecar agrees; the row gains what revision 0001 did not keep
        assert database.register_product(ms) == "updated"
        # new products get fresh ids after the copied ones (PostgreSQL's sequence was moved on)
        chain = make_chain(raw, results, group=GROUP)
        report = database.sync(results, raw)
        assert not report.problems and len(report.added) == 5
        assert len([r for r in database.list_products() if r["path"] == str(ms)]) == 1
        assert [n.kind for n in database.provenance(chain["photometry"]).walk()][:4] == [
            "photometry", "image", "calibrated", "ms"
        ]


def test_downgrade_keeps_the_measurement_sets(db_url, dirs):
    raw, results = dirs
    chain = make_chain(raw, results)
    with Database(db_url) as database:
        database.sync(results, raw)
        database.downgrade("0001")
        assert database.revision() == "0001"
    assert table_names(db_url) == {"alembic_version", *migrate.FOUNDATION_TABLES}
    with Database(db_url, check_schema=False) as database:
        database.upgrade()
    with Database(db_url) as database:
        assert sorted(r["path"] for r in database.list_products()) == sorted(
            str(chain[k]) for k in ("cal_ms", "ms")
        )
        assert database.list_products("image") == []
        assert not database.sync(results, raw).problems
        assert len(database.list_products()) == 6


def test_rfi_column_is_filled_from_the_qa_on_upgrade_from_0002(db_url, dirs):
    """A database at 0002 holds calibrated MSs registered without the column: 0003 fills it
    from the sidecar QA the rows carry (a sidecar without the key stays null)."""
    raw, results = dirs
    chain = make_chain(raw, results, rfi=0.043)
    with Database(db_url) as database:
        database.sync(results, raw)
        database.downgrade("0002")
        assert database.revision() == "0002"
    engine = make_engine(db_url)
    with engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("calibrated_ms")}
    engine.dispose()
    assert "rfi_flagged_fraction" not in columns and "flagged_fraction" in columns
    with Database(db_url, check_schema=False) as database:
        assert database.upgrade() == ("0002", HEAD_REVISION)
    assert schema_differences(db_url) == []
    with Database(db_url) as database:
        (row,) = database.list_products("calibrated")
        assert row["path"] == str(chain["calibrated"])
        assert (row["rfi_flagged_fraction"], row["flagged_fraction"]) == (0.043, pytest.approx(0.143))
        assert database.night(GROUP[:10])["groups"][-1]["rfi_flagged_fraction"] == 0.043
        assert not database.sync(results, raw).problems


def test_newer_revision_is_refused(db_url):
    with Database(db_url) as database:
        database._run(
            lambda s: s.execute(sa.text("UPDATE alembic_version SET version_num = '0099'")),
            write=True,
        )
    with pytest.raises(SchemaTooNewError, match="revision 0099, newer than this software"):
        Database(db_url)
    with pytest.raises(SchemaTooNewError, match="newer"):
        check_database({"database": {"url": db_url}})
    with Database(db_url, check_schema=False) as database:
        with pytest.raises(SchemaTooNewError):
            database.upgrade()
        assert database.revision() == "0099"


def test_a_database_of_something_else_is_refused(db_url):
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE raw_files (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="no schema revision"):
        Database(db_url)


def test_check_database_writes_nothing(tmp_path):
    config = {"results_dir": str(tmp_path / "results"), "database": {"url": None}}
    assert "new" in check_database(config)
    assert not (tmp_path / "results").exists()
    Database.from_config(config).close()
    assert f"head {HEAD_REVISION}" in check_database(config)


def test_check_database_unreachable_postgresql():
    url = "postgresql+psycopg://pipeline:s3cret@127.0.0.1:1/products"
    with pytest.raises(DatabaseError, match="cannot reach database") as info:
        check_database({"database": {"url": url}})
    assert "s3cret" not in str(info.value) and "pipeline:***@127.0.0.1:1" in str(info.value)
