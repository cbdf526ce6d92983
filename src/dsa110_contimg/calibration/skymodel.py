"""The calibration sky model: the calibrator plus its field, seen through the drifting beam.

A calibrator transit is not a lone point source: ~10 Jy of other sources lie
within a degree of 3C286, and a model of the calibrator alone makes the gain
solutions absorb them. The model here is

* the calibrator: a flux standard with its Perley-Butler 2017 spectrum (as
  CASA ``setjy`` computes it, :mod:`.standards`); a secondary at its VLA-list
  flux times ``flux_scale`` (its bootstrapped correction, 1 until a standard
  has measured it) with the reference catalogue's spectral index, if any;
* every reference-catalogue source (config section ``catalogue``, the one
  photometry uses) within ``radius_deg`` of the pointing whose flux times the
  primary beam reaches ``min_apparent_jy`` at some time of the observation,

each attenuated by the Airy beam of the dish pointed at the meridian, per
integration and channel (the sky drifts ~1.1 deg through the beam in one
observation), predicted exactly into MODEL_DATA:
``V = sum_s S_s(f) B_s(t, f) exp(-2 pi i (u l + v m + w (n - 1)) f / c)``
in the MS's J2000 frame (CASA's sign; ``tests/test_skymodel.py`` checks the
prediction against CASA ``ft`` of a component list), with (l, m, n) the
sources' apparent (aberrated) offsets as the data hold them
(:func:`..geometry.ms_direction_cosines`; CASA ``ft`` leaves the aberration out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import beam, casa_env, geometry
from ..imaging.smearing import OMEGA_EARTH
from . import msmeta, standards
from .bandpass import effective_flux

C_M_S = 299792458.0
MODEL_COLUMNS = ["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index", "flux_standard", "role"]


@dataclass(frozen=True)
class SkyModelOptions:
    """What goes into the model (config calibration.skymodel_*)."""

    min_apparent_jy: float
    """Catalogue sources whose flux times the beam never reaches this are left out."""
    radius_deg: float
    """Catalogue sources further than this from the pointing at mid time are left out."""
    spectral_index: float
    """Spectral index of sources whose catalogue gives none."""
    match_arcsec: float = 30.0
    """A catalogue source this close to the calibrator is the calibrator (not added twice)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SkyModelOptions:
        """From config["calibration"]."""
        return cls(cfg["skymodel_min_flux_jy"], cfg["skymodel_radius_deg"], cfg["skymodel_spectral_index"])


def beam_track(times_jd: np.ndarray, pointing_dec_app: float, ra, dec, freq_hz) -> np.ndarray:
    """Primary-beam power of sources (ICRS rad) per integration and channel, (Nsrc, Nt, Nf).

    The dish points at hour angle 0, apparent declination ``pointing_dec_app``.
    """
    p_ra, p_dec = np.array([geometry.meridian_icrs(t, pointing_dec_app) for t in times_jd]).T
    ra, dec = np.atleast_1d(ra)[:, None], np.atleast_1d(dec)[:, None]
    dra = p_ra[None, :] - ra
    cos_sep = np.sin(dec) * np.sin(p_dec[None]) + np.cos(dec) * np.cos(p_dec[None]) * np.cos(dra)
    theta = np.arccos(np.clip(cos_sep, -1, 1))
    return beam.airy_power(theta[:, :, None], np.asarray(freq_hz)[None, None, :])


def build_model(cal: Mapping | pd.Series, catalogue: pd.DataFrame | None, times_jd: np.ndarray,
                pointing_dec_app: float, opts: SkyModelOptions, flux_scale: float = 1.0) -> pd.DataFrame:
    """The model's components (columns :data:`MODEL_COLUMNS`), the calibrator first.

    ``cal`` is a calibrator-catalogue row (name, ra_deg, dec_deg, flux_jy,
    spectral_index, flux_standard); ``catalogue`` the reference catalogue
    (name, ra_deg, dec_deg, flux_jy, optional spectral_index) or None.
    """
    is_std = bool(cal.get("flux_standard", ""))
    alpha = cal.get("spectral_index", np.nan)
    cat = catalogue if catalogue is not None else pd.DataFrame(columns=["name", "ra_deg", "dec_deg", "flux_jy"])
    cat = cat[np.isfinite(cat.flux_jy.astype(float))]
    sep_cal = np.degrees(_separation(cal["ra_deg"], cal["dec_deg"], cat.ra_deg.to_numpy(float),
                                     cat.dec_deg.to_numpy(float)))
    match = sep_cal * 3600 <= opts.match_arcsec
    if not is_std and not np.isfinite(alpha):
        own = cat[match]
        alpha = float(own.spectral_index.iloc[0]) if "spectral_index" in own and len(own) else opts.spectral_index
    rows = [dict(name=str(cal["name"]), ra_deg=float(cal["ra_deg"]), dec_deg=float(cal["dec_deg"]),
                 flux_jy=float(cal["flux_jy"]) * (1.0 if is_std else flux_scale),
                 spectral_index=float(alpha) if np.isfinite(alpha) else opts.spectral_index,
                 flux_standard=str(cal.get("flux_standard", "") or ""), role="calibrator")]
    field = catalogue_sources(cat[~match], times_jd, pointing_dec_app, opts)
    head = pd.DataFrame(rows, columns=MODEL_COLUMNS)
    return pd.concat([head, field], ignore_index=True) if len(field) else head


def catalogue_sources(cat: pd.DataFrame | None, times_jd: np.ndarray, pointing_dec_app: float,
                      opts: SkyModelOptions) -> pd.DataFrame:
    """Reference-catalogue sources in the beam (role "field"), columns :data:`MODEL_COLUMNS`:
    within ``radius_deg`` of the pointing at mid time and at least ``min_apparent_jy`` through the
    beam at the start, middle or end of the observation. The model of a target field."""
    if cat is None or not len(cat):
        return pd.DataFrame(columns=MODEL_COLUMNS)
    field = cat[np.isfinite(cat.flux_jy.astype(float))]
    if len(field):
        mid = float(np.mean(times_jd))
        p_ra, p_dec = geometry.meridian_icrs(mid, pointing_dec_app)
        near = np.degrees(_separation(np.degrees(p_ra), np.degrees(p_dec), field.ra_deg.to_numpy(float),
                                      field.dec_deg.to_numpy(float))) <= opts.radius_deg
        field = field[near]
    if len(field):
        ends = np.array([times_jd[0], times_jd[-1], float(np.mean(times_jd))])
        peak = beam_track(ends, pointing_dec_app, np.radians(field.ra_deg.to_numpy(float)),
                          np.radians(field.dec_deg.to_numpy(float)), np.array([1.4e9]))[:, :, 0].max(axis=1)
        field = field[field.flux_jy.to_numpy(float) * peak >= opts.min_apparent_jy]
    rows = []
    for src in field.itertuples():
        a = getattr(src, "spectral_index", np.nan)
        rows.append(dict(name=str(src.name), ra_deg=float(src.ra_deg), dec_deg=float(src.dec_deg),
                         flux_jy=float(src.flux_jy), spectral_index=float(a) if np.isfinite(a) else opts.spectral_index,
                         flux_standard="", role="field"))
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _separation(ra1_deg, dec1_deg, ra2_deg, dec2_deg) -> np.ndarray:
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, float)) for x in (ra1_deg, dec1_deg, ra2_deg, dec2_deg))
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra2 - ra1)
    return np.arccos(np.clip(c, -1, 1))


@dataclass(frozen=True)
class Averaging:
    """How an MS's samples were averaged from the correlator's, so a prediction smears as the data do.

    A source away from the phase centre changes phase across the averaged
    channels (by its delay) and integrations (by its fringe rate): the average
    of ``n`` point samples spaced ``step`` is the Dirichlet kernel
    ``sin(n pi x) / (n sin(pi x))`` (our simulator's samples), the average of
    ``n`` boxes of width ``step`` the sinc of the whole width (a correlator's
    channels and integrations: ``continuous``). See :mod:`dsa110_contimg.imaging.smearing`.
    """

    channels: int
    integrations: int
    chan_width_hz: float
    """Of one channel before averaging."""
    integration_s: float
    """Of one integration before averaging."""
    dec_rad: float
    """Phase centre declination (fringe rates)."""
    continuous: bool = False

    def factor(self, n: int, x: np.ndarray) -> np.ndarray:
        if self.continuous:
            return np.sinc(n * x)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.sin(n * np.pi * x) / (n * np.sin(np.pi * x))
        return np.where(np.abs(np.sin(np.pi * x)) < 1e-9, 1.0, d)


def averaging_of(ms: str, channels: int, integrations: int, continuous: bool) -> Averaging:
    """The :class:`Averaging` of an MS written with ``channels`` x ``integrations`` averaged."""
    meta = msmeta.read(ms)
    tb = casa_env.casatools().table()
    tb.open(ms)
    try:
        exposure = float(tb.getcell("EXPOSURE", 0))
    finally:
        tb.close()
    return Averaging(channels, integrations, meta.chan_width_hz / channels, exposure / integrations, meta.dec_rad,
                     continuous)


def predict(uvw_m: np.ndarray, t_idx: np.ndarray, lmn: np.ndarray, amp: np.ndarray, freq_hz: np.ndarray,
            averaging: Averaging | None = None) -> np.ndarray:
    """Point-source visibilities, (rows, Nf) complex: exact, or smeared as ``averaging`` made the data.

    ``uvw_m`` (rows, 3); ``t_idx`` (rows,) index into ``amp``'s time axis;
    ``lmn`` (Nsrc, 3) direction cosines; ``amp`` (Nsrc, Nt, Nf) apparent flux.
    Evenly spaced channels are filled by recurrence (one complex multiply per
    source, row and channel instead of an exponential).
    """
    path = uvw_m @ np.column_stack([lmn[:, 0], lmn[:, 1], lmn[:, 2] - 1]).T  # (rows, Nsrc), metres
    out = np.empty((uvw_m.shape[0], freq_hz.size), complex)
    df = np.diff(freq_hz)
    even = freq_hz.size > 1 and np.allclose(df, df[0], rtol=1e-9, atol=1e-3)
    phasor = np.exp(2j * np.pi * path * (freq_hz[0] / C_M_S))
    step = np.exp(2j * np.pi * path * (df[0] / C_M_S)) if even else None
    smear_f = smear_rate = None
    if averaging is not None and averaging.channels > 1:
        smear_f = averaging.factor(averaging.channels, averaging.chan_width_hz * path / C_M_S)
    if averaging is not None and averaging.integrations > 1:
        u, v, w = uvw_m[:, 0:1], uvw_m[:, 1:2], uvw_m[:, 2:3]
        sd, cd = np.sin(averaging.dec_rad), np.cos(averaging.dec_rad)
        # d(path)/dt (m/s) from the Earth's rotation: du, dv as imaging.smearing.fringe_rate_hz, and dw = -cos(dec) u
        smear_rate = OMEGA_EARTH * ((cd * w - sd * v) * lmn[None, :, 0] + sd * u * lmn[None, :, 1]
                                    - cd * u * (lmn[None, :, 2] - 1))
    for c in range(freq_hz.size):
        if c and not even:
            phasor = np.exp(2j * np.pi * path * (freq_hz[c] / C_M_S))
        term = phasor if smear_f is None else phasor * smear_f
        if smear_rate is not None:
            x = averaging.integration_s * freq_hz[c] / C_M_S * smear_rate
            term = term * averaging.factor(averaging.integrations, x)
        out[:, c] = np.einsum("rs,sr->r", term, amp[:, t_idx, c])
        if even:
            phasor *= step
    return out


def write_model(ms: str, model: pd.DataFrame, pointing_dec_app: float, beam_on: bool = True) -> dict:
    """MODEL_DATA of ``ms`` = the model through the drifting beam (``beam_on``); returns a summary.

    The MS must be private to the caller (it is modified).
    """
    ct, cta = casa_env.casatools(), casa_env.casatasks()
    meta = msmeta.read(ms)
    ra0, dec0, freq = meta.ra_rad, meta.dec_rad, meta.freq_hz
    tb = ct.table()
    tb.open(ms)
    try:
        has_model = "MODEL_DATA" in tb.colnames()
    finally:
        tb.close()
    if not has_model:
        cta.clearcal(vis=ms, addmodel=True)
    ra, dec = np.radians(model.ra_deg.to_numpy(float)), np.radians(model.dec_deg.to_numpy(float))
    spectra = standards.spectra(model, freq)  # (Nsrc, Nf)
    tb.open(ms, nomodify=False)
    try:
        time_s = tb.getcol("TIME")
        times = np.unique(time_s)
        times_jd = times / 86400.0 + 2400000.5
        lmn = np.column_stack(geometry.ms_direction_cosines(times_jd.mean(), ra, dec, ra0, dec0))
        pb = (beam_track(times_jd, pointing_dec_app, ra, dec, freq) if beam_on
              else np.ones((len(model), times.size, freq.size)))
        amp = spectra[:, None, :] * pb
        n_pol = tb.getcell("DATA", 0).shape[0]
        rows = tb.nrows()
        chunk = max(1, int(4e7 // max(1, freq.size * max(1, len(model)))))
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            uvw = tb.getcol("UVW", start, n).T
            t_idx = np.searchsorted(times, time_s[start:start + n])
            vis = predict(uvw, t_idx, lmn, amp, freq)  # (rows, Nf)
            tb.putcol("MODEL_DATA", np.broadcast_to(vis.T[None], (n_pol, freq.size, n)).astype(np.complex64),
                      start, n)
    finally:
        tb.close()
    apparent = amp.max(axis=(1, 2))
    return {"n_components": len(model), "calibrator_jy_1400": float(model.flux_jy.iloc[0]),
            "effective_jy": effective_flux(amp[:, :, freq.size // 2]),
            "field_jy_1400": float(model.flux_jy.iloc[1:].sum()),
            "field_apparent_peak_jy": float(apparent[1:].sum()) if len(model) > 1 else 0.0}


def fit_scales(ms: str, model: pd.DataFrame, groups: list[np.ndarray], pointing_dec_app: float,
               column: str = "CORRECTED_DATA", averaging: Averaging | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares flux factors of groups of model components in ``column`` of ``ms``.

    Fits ``D = sum_k a_k M_k`` (real a_k) over unflagged cross-correlations,
    ``M_k`` the prediction (through the beam) of the components ``groups[k]``
    (index arrays into ``model``). Returns (a, 1-sigma errors from the
    residual rms). With a calibrated ``column``, a_cal / a_field is the
    calibrator's flux on the catalogue's scale.
    """
    meta = msmeta.read(ms)
    ra0, dec0, freq = meta.ra_rad, meta.dec_rad, meta.freq_hz
    tb = casa_env.casatools().table()
    ra, dec = np.radians(model.ra_deg.to_numpy(float)), np.radians(model.dec_deg.to_numpy(float))
    spectra = standards.spectra(model, freq)
    k = len(groups)
    normal, rhs, dd, n_vis = np.zeros((k, k)), np.zeros(k), 0.0, 0
    tb.open(ms)
    try:
        time_s = tb.getcol("TIME")
        times = np.unique(time_s)
        lmn = np.column_stack(geometry.ms_direction_cosines(times.mean() / 86400.0 + 2400000.5, ra, dec, ra0, dec0))
        amp = spectra[:, None, :] * beam_track(times / 86400.0 + 2400000.5, pointing_dec_app, ra, dec, freq)
        rows = tb.nrows()
        chunk = max(1, int(2e7 // max(1, freq.size * len(model))))
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cross = tb.getcol("ANTENNA1", start, n) != tb.getcol("ANTENNA2", start, n)
            uvw = tb.getcol("UVW", start, n).T[cross]
            t_idx = np.searchsorted(times, time_s[start:start + n][cross])
            data = tb.getcol(column, start, n)[..., cross]  # (pol, chan, row)
            ok = ~tb.getcol("FLAG", start, n)[..., cross]
            preds = np.stack([predict(uvw, t_idx, lmn[g], amp[g], freq, averaging).T.ravel()
                              for g in groups])  # (k, chan*row)
            for pol in range(data.shape[0]):  # the normal matrix as one product (BLAS): k^2 sums
                masked = preds * ok[pol].ravel()
                normal += np.real(masked.conj() @ masked.T)
                rhs += np.real(masked.conj() @ np.where(ok[pol], data[pol], 0).ravel())
            dd += np.sum(np.abs(data[ok]) ** 2)
            n_vis += int(ok.sum())
    finally:
        tb.close()
    a = np.linalg.solve(normal, rhs)
    resid = max(dd - 2 * a @ rhs + a @ normal @ a, 0.0)
    sigma2 = resid / max(1, 2 * n_vis - k) * 2  # per complex visibility
    return a, np.sqrt(np.diag(np.linalg.inv(normal)) * sigma2 / 2)
