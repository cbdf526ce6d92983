"""The workflow refuses, before any job starts, a database it could not register products in.

The check runs once per run in the Snakefile's ``onstart:`` (not at every
parse, and not in every cluster job's own snakemake). Each test runs the real
``snakemake`` in a temporary working directory on one group of empty raw
files: the error must come before any job runs (a convert of those files
would fail and leave a log), naming the database and the fix.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dsa110_contimg import naming
from dsa110_contimg.db import Database, migrate
from dsa110_contimg.db.core import make_engine

T0 = datetime(2025, 6, 15, 6, 0, 0)


@pytest.fixture
def run(snakemake_exe, repo_root, tmp_path):
    """``snakemake -n`` on the repository's workflow, one complete group in tmp_path/raw."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for sb in range(16):
        (raw / naming.raw_filename(T0 + timedelta(seconds=sb % 3), sb)).touch()

    def _run(*config: str, dry: bool = False) -> tuple[int, str]:
        cmd = [
            str(snakemake_exe), "-n" if dry else "--cores=1",
            "--snakefile", str(repo_root / "Snakefile"),
            "--directory", str(tmp_path),
            "--configfile", str(repo_root / "config" / "config.yaml"),
            "--config", "raw_dir=raw", "results_dir=results", *config,
        ]  # fmt: skip
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    return _run


def no_job_ran(tmp_path) -> bool:
    return not (tmp_path / "results" / "logs").exists() and not (tmp_path / "results" / "ms").exists()


def test_unreachable_postgresql_stops_before_any_job(run, tmp_path):
    code, out = run("database={url: 'postgresql+psycopg://pipeline:s3cret@127.0.0.1:1/products'}")
    assert code != 0
    assert "product database: cannot reach database" in out
    # Our message masks the password (snakemake itself echoes its command line,
    # which is why the README says to pass passwords through PGPASSWORD or .pgpass).
    ours = [line for line in out.splitlines() if "cannot reach database" in line]
    assert ours and all("pipeline:***@127.0.0.1:1/products" in line and "s3cret" not in line for line in ours)
    assert no_job_ran(tmp_path)


def test_database_at_a_newer_revision_stops_before_any_job(run, tmp_path):
    path = tmp_path / "results" / "products.sqlite"
    path.parent.mkdir()
    Database(f"sqlite:///{path}").close()
    code, out = run(dry=True)
    assert code == 0, out  # at the head: fine
    assert "Job stats:" in out

    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    code, out = run()
    assert code != 0
    assert "product database: database sqlite:///" in out
    assert "schema revision 0099, newer than this software" in out
    assert no_job_ran(tmp_path)


def test_database_at_an_older_revision_names_the_upgrade_command(run, tmp_path):
    path = tmp_path / "results" / "products.sqlite"
    path.parent.mkdir()
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        migrate.upgrade(connection, "0001")
    engine.dispose()
    code, out = run()
    assert code != 0
    assert "schema revision 0001, this software needs" in out
    assert "contimg db upgrade --config" in out
    assert no_job_ran(tmp_path)
