"""Robust statistics shared by image QA, photometry, variability and mosaic QA."""

from __future__ import annotations

import warnings

import numpy as np

from .constants import MAD_TO_SIGMA


def robust_rms(values: np.ndarray, axis=None) -> np.ndarray | float:
    """MAD_TO_SIGMA x the median absolute deviation from the median, non-finite values
    ignored: the standard deviation of normal data, insensitive to a minority of
    outliers (sources in a residual image, a flare in a light curve). NaN when no
    value is finite."""
    values = np.asarray(values, float)
    values = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, which is the answer
        med = np.nanmedian(values, axis=axis, keepdims=True)
        out = MAD_TO_SIGMA * np.nanmedian(np.abs(values - med), axis=axis)
    return float(out) if axis is None else out
