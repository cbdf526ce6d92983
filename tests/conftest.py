"""Shared fixtures: where the repository and the venv's tools are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
