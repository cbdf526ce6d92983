"""Where tests leave files for people to look at (screenshots, the fault table); not cleaned up."""

import os
from pathlib import Path

ARTIFACTS = Path(os.environ.get("CONTIMG_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
