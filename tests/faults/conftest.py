"""The fault suite's one real workflow run (see faultsite.py), shared by every case."""

from __future__ import annotations

import pytest
from faultsite import Site, make_site


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Site:
    return make_site(tmp_path_factory.mktemp("faults"))
