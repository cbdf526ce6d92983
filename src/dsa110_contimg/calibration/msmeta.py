"""An MS's phase centre and channels: read once, in one place.

Calibration (:mod:`.caltables`) and the sky model (:mod:`.skymodel`) all need
the field's phase centre and the channel frequencies; this module reads them
with casatools, each table closed whatever happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import casa_env


class MsMetaError(RuntimeError):
    """An MS whose FIELD or SPECTRAL_WINDOW table cannot be read; the message names the MS."""


@dataclass(frozen=True)
class MsMeta:
    """Phase centre and channels of a single-field, single-window MS."""

    ra_rad: float
    """Phase centre (FIELD PHASE_DIR of field 0), J2000 / ICRS, radians."""
    dec_rad: float
    freq_hz: np.ndarray
    """Channel centre frequencies of window 0, as stored (ascending after conversion)."""
    chan_width_hz: float
    """Mean absolute channel width."""


def _column(tb, path: str, name: str) -> np.ndarray:
    if not tb.open(path):
        raise RuntimeError(f"cannot open {path}")
    try:
        return tb.getcol(name)
    finally:
        tb.close()


def read(ms: str) -> MsMeta:
    """Phase centre and channel frequencies of ``ms`` (:class:`MsMetaError` when unreadable)."""
    tb = casa_env.casatools().table()
    try:
        ra, dec = _column(tb, f"{ms}/FIELD", "PHASE_DIR")[:, 0, 0]
        freq = _column(tb, f"{ms}/SPECTRAL_WINDOW", "CHAN_FREQ")[:, 0]
        width = _column(tb, f"{ms}/SPECTRAL_WINDOW", "CHAN_WIDTH")[:, 0]
    except RuntimeError as exc:
        raise MsMetaError(f"{ms}: cannot read the phase centre or channels ({exc})") from exc
    return MsMeta(float(ra), float(dec), np.asarray(freq, float), float(np.abs(width).mean()))
