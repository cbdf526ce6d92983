"""What a test needs from the machine. Without it a test is skipped, but fails
when ``CI`` is set: .ci/run installs every tool and service the tests use, so
a missing one there is a bug, not a reason to skip."""

from __future__ import annotations

import os
import shutil

import pytest


def unavailable(reason: str, what: str = "this test") -> None:
    """Skip the test for ``reason``; fail instead when ``CI`` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so {what} must run")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of an installed command-line tool (see :func:`unavailable` when it is not)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (.ci/run installs it with apt-get)")
    return path
