"""Radio-frequency interference added to visibilities, with the truth of where.

Two kinds, as an L-band site sees them:

* narrow-band: a few channels carry a transmitter for a run of consecutive
  integrations (or all of them), the same signal on every baseline with a
  baseline-dependent phase;
* impulsive: a few integrations carry a broadband burst on every channel.

Amplitudes are given in units of the visibility noise (the robust rms of the
data before injection, per baseline), drawn log-uniformly between two limits,
so a test states how strong the interference it must find is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RfiOptions:
    """What interference to inject."""

    channel_fraction: float = 0.03
    """Fraction of the channels that carry narrow-band RFI."""
    channel_duty: float = 0.6
    """Fraction of the integrations a narrow-band transmitter is on (one contiguous run)."""
    time_fraction: float = 0.03
    """Fraction of the integrations that carry a broadband impulse."""
    strength_sigma: tuple[float, float] = (5.0, 50.0)
    """Amplitude range (per visibility, in units of the noise rms), drawn log-uniformly."""
    seed: int = 0


def robust_rms(values: np.ndarray) -> float:
    """Noise rms of complex values from the median absolute deviation of real and imaginary parts."""
    parts = np.concatenate([values.real.ravel(), values.imag.ravel()])
    return float(1.4826 * np.median(np.abs(parts - np.median(parts))))


def rfi_mask(n_time: int, n_chan: int, opts: RfiOptions, rng: np.random.Generator) -> np.ndarray:
    """Where the interference is, (time, chan) bool; the same for every baseline."""
    mask = np.zeros((n_time, n_chan), bool)
    n_lines = max(1, round(opts.channel_fraction * n_chan))
    on = max(1, round(opts.channel_duty * n_time))
    for c in rng.choice(n_chan, n_lines, replace=False):
        t0 = rng.integers(0, n_time - on + 1)
        mask[t0:t0 + on, c] = True
    n_bursts = max(1, round(opts.time_fraction * n_time))
    mask[rng.choice(n_time, n_bursts, replace=False), :] = True
    return mask


def inject(
    data: np.ndarray,
    time_index: np.ndarray,
    baseline_index: np.ndarray,
    opts: RfiOptions = RfiOptions(),
) -> np.ndarray:
    """Add RFI to ``data`` (row, chan, pol; complex, changed in place); returns the (row, chan) truth mask.

    ``time_index`` and ``baseline_index`` give each row's integration (0..n-1)
    and baseline (any integers). Every baseline sees the same interference
    pattern; its amplitude per (time, chan) cell is drawn once, in units of that
    baseline's noise rms, and its phase differs per baseline.
    """
    rng = np.random.default_rng(opts.seed)
    n_time, n_chan = int(time_index.max()) + 1, data.shape[1]
    cells = rfi_mask(n_time, n_chan, opts, rng)
    lo, hi = np.log(opts.strength_sigma[0]), np.log(opts.strength_sigma[1])
    strength = np.exp(rng.uniform(lo, hi, (n_time, n_chan)))
    out = np.zeros(data.shape[:2], bool)
    for bl in np.unique(baseline_index):
        rows = np.flatnonzero(baseline_index == bl)
        sigma = robust_rms(data[rows])
        if sigma == 0:
            continue
        t = time_index[rows]
        hit = cells[t]  # (rows, chan)
        phase = rng.uniform(0, 2 * np.pi, hit.shape)
        signal = np.where(hit, sigma * strength[t] * np.exp(1j * phase), 0)
        data[rows] += signal[:, :, None].astype(data.dtype)
        out[rows] = hit
    return out
