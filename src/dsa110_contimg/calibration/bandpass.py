"""A smoothed bandpass for faint calibrators, chosen from the predicted per-channel SNR.

The bandpass is solved per channel over the whole transit. Its thermal error
per antenna, polarisation and channel is ``1 / SNR_chan`` (fractional
amplitude; radians of phase) with

    SNR_chan = S_eff sqrt((N_ant - 1) N_int) / sigma,   sigma = SEFD / sqrt(2 dnu tau)

(``sigma`` the noise of one real part of one visibility; ``N_ant - 1``
baselines to each antenna, ``N_int`` integrations; ``S_eff`` the model's
apparent flux in quadrature, ``sqrt(mean_t sum_k S_k(t)^2)``, since every
component of the sky model informs the solution in proportion to its power).
At full size (96 antennas, 244 kHz channels, 24 integrations, SEFD 5800 Jy)
that is ~21 per Jy: a 1.8 Jy calibrator gives ~2.7% per channel, well above
the 1% the gains must reach.

The rule: when ``SNR_chan`` is below ``target_snr``, every antenna's per-channel
solutions are replaced by a local quadratic fit (Savitzky-Golay, weighted by
the unflagged solutions) over the smallest odd window of ``w`` channels whose
noise reduction brings the SNR to ``target_snr``, but never spanning more than
``max_span_hz``: a quadratic over a window of span ``W`` keeps a sinusoidal
ripple of period ``P`` to ~``1 - (pi W / P)^4 / 45`` (98% for W = 10 MHz,
P = 20 MHz) and a delay's linear phase exactly. The centre value of a
local quadratic over ``w`` equally weighted points has variance
``3 (3 w^2 - 7) / (4 w (w^2 - 4))`` of one point's (about ``2.25 / w``).
Flagged channels (RFI on the calibrator) between unflagged ones within the
window are filled by the same fit, so targets do not lose them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import casa_env


def channel_snr(s_eff_jy: float, n_ant: int, n_int: int, chan_width_hz: float, integration_s: float,
                sefd_jy: float) -> float:
    """Predicted SNR of one antenna's per-channel bandpass solution (one polarisation)."""
    sigma = sefd_jy / np.sqrt(2 * chan_width_hz * integration_s)
    return float(s_eff_jy * np.sqrt(max(n_ant - 1, 0) * n_int) / sigma)


def effective_flux(apparent_jy: np.ndarray) -> float:
    """``sqrt(mean_t sum_k S_k(t)^2)`` of apparent fluxes (components, integrations)."""
    a = np.asarray(apparent_jy, float)
    return float(np.sqrt(np.mean(np.sum(a**2, axis=0))))


def noise_factor(w: int) -> float:
    """Noise of a local quadratic's centre value over ``w`` (odd) points, relative to one point."""
    if w < 5:
        return 1.0  # 1 or 3 points: the quadratic passes through them
    return float(np.sqrt(3 * (3 * w**2 - 7) / (4 * w * (w**2 - 4))))


@dataclass(frozen=True)
class SmoothingChoice:
    """What the rule chose for one solve."""

    snr_channel: float
    """Predicted per-channel SNR of the bandpass solutions."""
    window: int
    """Channels of the local quadratic fit (1: per channel, no smoothing)."""
    snr_smoothed: float
    """Predicted SNR after smoothing."""

    def record(self) -> dict:
        return {"snr_channel": self.snr_channel, "window_channels": self.window, "snr_smoothed": self.snr_smoothed}


def choose_window(snr_channel: float, target_snr: float, chan_width_hz: float, max_span_hz: float) -> SmoothingChoice:
    """The rule of the module docstring: the smallest odd window reaching ``target_snr``, at most
    ``max_span_hz`` wide (1 when the channels already reach it or no window of >= 5 fits)."""
    if snr_channel >= target_snr:
        return SmoothingChoice(snr_channel, 1, snr_channel)
    w_max = int(max_span_hz // chan_width_hz)
    w_max -= 1 - w_max % 2  # odd
    best = 1
    for w in range(5, w_max + 1, 2):
        best = w
        if snr_channel / noise_factor(w) >= target_snr:
            break
    return SmoothingChoice(snr_channel, best, snr_channel / noise_factor(best))


def smooth(values: np.ndarray, flags: np.ndarray, freq_hz: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Local weighted quadratic fit along the last-but-one axis (channels) of ``values`` (..., chan, rows).

    Returns the smoothed values and the new flags: an unflagged channel whose window holds fewer
    than 3 unflagged solutions keeps its own; a flagged one is filled when its window holds at
    least 3 with some on each side, and stays flagged otherwise.
    """
    if window < 5:
        return values, flags
    v = np.moveaxis(values, -2, 0)
    f = np.moveaxis(flags, -2, 0)
    shape = v.shape
    v, ok = v.reshape(shape[0], -1), ~f.reshape(shape[0], -1)
    n_chan, half = shape[0], window // 2
    x_all = np.asarray(freq_hz, float) / 1e6  # MHz: powers up to 4 stay well scaled over a window
    out, out_flag = v.copy(), ~ok.copy()
    for c in range(n_chan):
        lo, hi = max(0, c - half), min(n_chan, c + half + 1)
        x = (x_all[lo:hi] - x_all[c])[:, None]
        w = ok[lo:hi].astype(float)
        s = [np.sum(w * x**k, axis=0) for k in range(5)]
        t = [np.sum(w * x**k * v[lo:hi], axis=0) for k in range(3)]
        normal = np.stack([np.stack(s[0:3], -1), np.stack(s[1:4], -1), np.stack(s[2:5], -1)], -2)  # (M, 3, 3)
        count = w.sum(axis=0)
        left, right = ok[lo:c].any(axis=0), ok[c + 1:hi].any(axis=0)
        good = (count >= 3) & (ok[c] | (left & right))
        good &= np.abs(np.linalg.det(np.where(good[:, None, None], normal, np.eye(3)))) > 1e-12
        normal[~good] = np.eye(3)
        rhs = np.stack(t, -1)
        rhs[~good] = 0
        a0 = np.linalg.solve(normal.astype(complex), rhs[..., None])[:, 0, 0]
        out[c] = np.where(good, a0, v[c])
        out_flag[c] = ~good & ~ok[c]
    return (np.moveaxis(out.reshape(shape), 0, -2).astype(values.dtype),
            np.moveaxis(out_flag.reshape(shape), 0, -2))


def smooth_table(path: str, window: int) -> dict:
    """Smooth a CASA bandpass table (CPARAM (pol, chan, row)) in place; returns what changed."""
    tb = casa_env.casatools().table()
    if not tb.open(f"{path}/SPECTRAL_WINDOW"):
        raise RuntimeError(f"cannot open {path}/SPECTRAL_WINDOW")
    try:
        freq = tb.getcol("CHAN_FREQ")[:, 0]
    finally:
        tb.close()
    tb.open(path, nomodify=False)
    try:
        cparam, flag = tb.getcol("CPARAM"), tb.getcol("FLAG")
        new, new_flag = smooth(cparam, flag, freq, window)
        tb.putcol("CPARAM", new)
        tb.putcol("FLAG", new_flag)
    finally:
        tb.close()
    return {"window_channels": int(window), "window_hz": float(window * np.median(np.abs(np.diff(freq)))),
            "filled": int((flag & ~new_flag).sum()), "flagged_before": float(flag.mean()),
            "flagged_after": float(new_flag.mean())}
