"""One function per workflow rule: run the science, write the product atomically
with its sidecar, register it in the database.

The Snakemake scripts only call these, so every stage can be run and tested
without Snakemake. Each stage lives in its own module; this package exports
the stage functions by rule name, importing a module only when one of its
stages is asked for (a job pays for its own stage's imports, not for CASA,
reproject and the rest).
"""

from __future__ import annotations

import importlib

#: Rule name -> module (in this package) that holds its stage function.
STAGES = {
    "convert": "convert",
    "solve_calibration": "calibrate",
    "apply_calibration": "calibrate",
    "calibrator_flux": "calibrate",
    "image": "image",
    "photometry": "photometry",
    "lightcurves": "photometry",
    "plan_mosaic": "mosaic",
    "build_mosaic": "mosaic",
    "qa_mosaic": "mosaic",
    "mosaic_outcome": "mosaic",
    "summary": "report",
}

__all__ = sorted(STAGES)


def __getattr__(name: str):
    try:
        module = STAGES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no stage {name!r}") from None
    function = getattr(importlib.import_module(f".{module}", __name__), name)
    # Importing the submodule bound its name here (e.g. ``photometry``) to the
    # module; the stage function of that name takes precedence.
    globals()[name] = function
    return function
