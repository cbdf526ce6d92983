"""Shared fixtures: where the repository and the venv's tools are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The database fixtures (database, db_url on SQLite and PostgreSQL, dirs, pg_server).
pytest_plugins = ("db_products",)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def snakemake_exe() -> Path:
    """The snakemake installed beside the Python running the tests (the venv's)."""
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        pytest.fail(f"snakemake not found beside {sys.executable}; run `make venv`")
    return exe


from artifacts import ARTIFACTS  # noqa: E402,F401  (where tests leave files for people to look at)
