"""One function per workflow rule: run the science, write the product atomically
with its sidecar, register it in the database.

The Snakemake scripts only call these, so every stage can be run and tested
without Snakemake. Each stage lives in its own module; this package exports
the stage functions by rule name.
"""

from .calibrate import apply_calibration, calibrator_flux, solve_calibration
from .convert import convert

__all__ = ["apply_calibration", "calibrator_flux", "convert", "solve_calibration"]
