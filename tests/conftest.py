"""Shared fixtures: where the repository and the venv's tools are."""

from __future__ import annotations

import os
import shutil
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


def require_tool(name: str) -> str:
    """Path of an installed command-line tool; without it, skip, but fail when ``CI``
    is set (.ci/run installs every tool the tests use, so a missing one is a bug)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so this test must run")
        pytest.skip(message)
    return path


#: Where tests leave files for people to look at (screenshots); not cleaned up.
ARTIFACTS = Path(os.environ.get("CONTIMG_TEST_ARTIFACTS", REPO / "test-artifacts"))
