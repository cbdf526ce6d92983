"""Bright sources subtracted from a target's visibilities before imaging (config calibration.subtract).

A source of several Jy ~1 deg from the pointing (3C286 beside the calibrator
transit) is seen through a primary beam that changes across the band and
through the ~5 minutes the sky drifts: its apparent flux varies by tens of per
cent over the data. A multi-frequency-synthesis image models it as one
constant point, so those variations stay in the residual as sidelobes across
the field, and a source outside the imaged field is not deconvolved at all.
The standard remedy (peeling, demixing) is to subtract the source's predicted
visibilities before imaging. Here the prediction is the one the calibration
sky model uses (:func:`.skymodel.predict`: catalogue position and spectrum,
Airy beam per integration and channel), scaled by a flux factor fitted to the
data (:func:`.skymodel.fit_scales`; the catalogue's flux or spectrum may be a
few per cent off, and the transferred gains carry their own scale).

Every chosen source is removed from the visibilities whole. One inside the
imaged field (its drift- and band-averaged beam at least ``restore_min_beam``,
the image's ``pb_cutoff``) is put back by the image stage into the restored
image, at its catalogue position with its fitted flux
(:mod:`dsa110_contimg.imaging.peeled`): CLEAN never sees it, so neither the
beam's time and frequency structure nor CLEAN's pixel grid (components of a
source between pixel centres sum 1-4% high at 3 pixels per beam) touch its
flux. A source outside the field is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import casa_env, geometry
from . import msmeta, skymodel, standards


@dataclass(frozen=True)
class SubtractOptions:
    """Which sources to subtract (config calibration.subtract)."""

    enabled: bool
    """Subtract at all."""
    min_apparent_jy: float
    """Catalogue sources whose flux times the beam reaches this (Jy) at the start, middle or end."""
    radius_deg: float
    """... within this distance of the pointing at mid time."""
    spectral_index: float
    """Spectral index of sources whose catalogue gives none."""
    restore_min_beam: float
    """Put a source back as a constant point when its mean beam reaches this (the image's pb_cutoff)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SubtractOptions:
        """From the whole config (calibration.subtract, calibration.skymodel_spectral_index, imaging.pb_cutoff)."""
        sub = config["calibration"]["subtract"]
        return cls(sub["enabled"], sub["min_apparent_jy"], sub["radius_deg"],
                   config["calibration"]["skymodel_spectral_index"], config["imaging"]["pb_cutoff"])


def choose(catalogue: pd.DataFrame | None, times_jd: np.ndarray, pointing_dec_app: float,
           opts: SubtractOptions) -> pd.DataFrame:
    """The catalogue sources to subtract (columns :data:`.skymodel.MODEL_COLUMNS`), brightest first."""
    pick = skymodel.SkyModelOptions(opts.min_apparent_jy, opts.radius_deg, opts.spectral_index)
    found = skymodel.catalogue_sources(catalogue, times_jd, pointing_dec_app, pick)
    return found.sort_values("flux_jy", ascending=False, ignore_index=True)


def subtract(ms: str, sources: pd.DataFrame, pointing_dec_app: float, opts: SubtractOptions, log=None,
             averaging: skymodel.Averaging | None = None) -> dict:
    """Subtract ``sources`` from DATA of ``ms`` in place (the caller's own MS); returns the sidecar record.

    ``averaging``: how the MS was averaged (the predictions smear as the data do; without it a source
    1-2 deg out fits 0.5-2% low). Each source's flux factor is fitted to DATA first (all sources at once);
    the record lists, per source, the factor and its error, the mean beam and
    mean apparent flux, and whether it was restored.
    """
    say = log.info if log else print
    record: dict[str, Any] = {"options": asdict(opts), "sources": []}
    if sources.empty:
        record.update(status="none", reason=f"no catalogue source reaches {opts.min_apparent_jy:g} Jy apparent")
        say(f"subtract: {record['reason']}")
        return record
    groups = [np.array([i]) for i in range(len(sources))]
    scale, scale_err = skymodel.fit_scales(ms, sources, groups, pointing_dec_app, column="DATA", averaging=averaging)
    meta = msmeta.read(ms)
    freq = meta.freq_hz
    ra, dec = np.radians(sources.ra_deg.to_numpy(float)), np.radians(sources.dec_deg.to_numpy(float))
    tb = casa_env.casatools().table()
    tb.open(ms, nomodify=False)
    try:
        time_s = tb.getcol("TIME")
        times = np.unique(time_s)
        lmn = np.column_stack(geometry.ms_direction_cosines(times.mean() / 86400.0 + 2400000.5, ra, dec,
                                                            meta.ra_rad, meta.dec_rad))
        pb = skymodel.beam_track(times / 86400.0 + 2400000.5, pointing_dec_app, ra, dec, freq)  # (Nsrc, Nt, Nf)
        amp = scale[:, None, None] * standards.spectra(sources, freq)[:, None, :] * pb
        mean_beam = pb.mean(axis=(1, 2))
        mean_apparent = amp.mean(axis=(1, 2))
        restore = mean_beam >= opts.restore_min_beam  # put back by the image stage
        n_chan = freq.size
        chunk = max(1, int(2e7 // max(1, n_chan * len(sources))))
        for start in range(0, tb.nrows(), chunk):
            n = min(chunk, tb.nrows() - start)
            uvw = tb.getcol("UVW", start, n).T
            t_idx = np.searchsorted(times, time_s[start:start + n])
            vis = skymodel.predict(uvw, t_idx, lmn, amp, freq, averaging).T  # (Nf, rows)
            data = tb.getcol("DATA", start, n)  # (pol, Nf, rows)
            tb.putcol("DATA", (data - vis[None]).astype(data.dtype), start, n)
    finally:
        tb.close()
    for i, src in enumerate(sources.itertuples()):
        row = {"name": src.name, "ra_deg": src.ra_deg, "dec_deg": src.dec_deg, "catalogue_jy_1400": src.flux_jy,
               "spectral_index": float(src.spectral_index), "flux_standard": _standard(src),
               "flux_factor": float(scale[i]), "flux_factor_err": float(scale_err[i]),
               "mean_beam": float(mean_beam[i]), "mean_apparent_jy": float(mean_apparent[i]),
               "restored": bool(restore[i])}
        record["sources"].append(row)
        say(f"subtracted {src.name} ({src.flux_jy:.2f} Jy at 1.4 GHz x fitted {scale[i]:.4f} +- {scale_err[i]:.4f}; "
            f"mean beam {mean_beam[i]:.3f}): {'to be restored in the image' if restore[i] else 'removed'}")
    record.update(status="ok", n_subtracted=len(sources), n_restored=int(restore.sum()))
    return record


def _standard(src) -> str | None:
    """The source's flux standard (its spectrum is Perley-Butler's), or None."""
    std = getattr(src, "flux_standard", None)
    return std if isinstance(std, str) and std else None
