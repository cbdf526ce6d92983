"""Simulated DSA-110 observations, written exactly as the correlator writes them.

The sky is a set of point sources with power-law spectra, seen through the Airy
primary beam of a dish pointed at the meridian, plus every usable calibrator of
the VLA list that drifts through the beam, each with its field: the sources of
several Jy within a degree that a real calibrator has around it (drawn once per
calibrator from its name, so every simulation sees the same field; they are in
``truth/sky.csv``, the reference catalogue the pipeline's sky model reads). The
flux standards have their Perley-Butler 2017 spectra; a secondary calibrator's
true flux differs from the list's approximate one (``calibrator_flux_error``).
The correlator fringe-stops each integration to hour angle 0 at the pointing
declination; antennas have complex bandpasses and gains that drift and
random-walk in time (``gain_amp_walk``, ``gain_phase_walk_deg`` per hour);
thermal noise follows from the SEFD; optional RFI (narrow-band channels and
impulsive integrations, strong, correlated between antennas). The ground truth
(sky, gains per antenna and time, bandpasses, noise, the RFI mask) is written
beside the data.

Gains convention of the truth files: ``V_ij(measured) = g_i conj(g_j)
(V_ij(true) + noise)`` with ``i = ant_1``, ``j = ant_2`` of the file and V in the
correlator's sign convention (see :mod:`dsa110_contimg.geometry`).
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from astropy.time import Time

from dsa110_contimg.calibration import standards
from dsa110_contimg.calibration.calibrators import load_calibrators

from .. import beam, geometry, naming, telescope
from ..constants import C_M_S

REFERENCE_FREQ_HZ = 1.4e9


@dataclass(frozen=True)
class SimOptions:
    """What to simulate."""

    start: datetime
    """UTC time the first observation's files are opened."""
    n_obs: int = 2
    """Number of consecutive observations (one every 309.2 s)."""
    dec_deg: float = 33.0
    """Pointing declination (apparent, as the telescope points), degrees."""
    n_ants: int = 96
    """Active antennas with data, spread over the array (96 = all)."""
    max_radius_m: float | None = None
    """Choose the antennas only within this distance of the array centre (None: whole array)."""
    n_chan: int = 48
    """Channels per subband (48 = full resolution; must divide 384)."""
    n_int: int = 24
    """Integrations of 12.884901888 s per observation."""
    subbands: tuple[int, ...] = tuple(range(16))
    """Subbands to write (all 16 unless testing incomplete groups)."""
    n_sources: int = 20
    """Random field sources in the strip the span covers."""
    flux_min_jy: float = 0.1
    flux_max_jy: float = 2.0
    calibrators: bool = True
    """Add every usable VLA-list calibrator that passes through the beam."""
    calibrator_fields: bool = True
    """Add each such calibrator's field (``field_sources`` within ``field_radius_deg``)."""
    field_sources: int = 12
    """Field sources around each calibrator."""
    field_jy: float = 10.0
    """Their total flux at 1.4 GHz (Jy)."""
    field_radius_deg: float = 1.0
    """They lie between 0.1 deg and this far from the calibrator."""
    calibrator_flux_error: float = 0.1
    """RMS fractional difference of a secondary calibrator's true flux from the VLA list's (standards: 0)."""
    sefd_jy: float = 5800.0
    noise: bool = True
    gains: bool = True
    gain_amp_walk: float = 0.03
    """RMS of the per-antenna amplitude random walk after one hour (fraction; 0 = none)."""
    gain_phase_walk_deg: float = 3.0
    """RMS of the per-antenna phase random walk after one hour (degrees; 0 = none)."""
    rfi: bool = False
    """Add RFI: narrow-band channels over whole observations and impulsive broadband integrations."""
    rfi_channel_fraction: float = 0.03
    """Fraction of channels hit by narrow-band RFI (each for a whole observation)."""
    rfi_time_fraction: float = 0.02
    """Fraction of integrations hit by impulsive broadband RFI (at least one per observation when > 0)."""
    rfi_jy: float = 300.0
    """Typical RFI power per antenna (Jy equivalent, log-normal spread of 2x)."""
    correlator_gain: float = 10.0
    """Voltage gain of an antenna in correlator units per sqrt(Jy)."""
    gain_epoch: datetime | None = None
    """When the system's gains were drawn (None: the span's start). Spans simulated with the same
    seed and the same earlier epoch see one system whose gains drifted (random walk, slow sinusoid)
    from that epoch to each span: e.g. two pointings hours apart."""
    jitter_s: float = 2.0
    """Subband file names differ by up to this many seconds."""
    seed: int = 1


@dataclass
class GainModel:
    """Per-antenna, per-polarisation bandpass and slow gain drift (fixed per span)."""

    amp: np.ndarray  # (Nants_telescope, 2)
    phase0: np.ndarray  # rad
    phase_rate: np.ndarray  # rad / hour
    amp_period_h: np.ndarray
    amp_phase: np.ndarray
    delay_ns: np.ndarray
    ripple_amp: np.ndarray
    ripple_period_mhz: np.ndarray
    ripple_phase: np.ndarray
    t_ref_jd: float
    scale: float
    enabled: bool = True
    walk_jd: np.ndarray | None = None  # grid of the random walk (integration centres of the span)
    walk_log_amp: np.ndarray | None = None  # (Npads, Ngrid, 2)
    walk_phase: np.ndarray | None = None  # rad, (Npads, Ngrid, 2)

    @classmethod
    def draw(cls, rng: np.random.Generator, t_ref_jd: float, scale: float, enabled: bool,
             walk_rng: np.random.Generator | None = None, n_steps: int = 0,
             amp_walk: float = 0.0, phase_walk_deg: float = 0.0):
        """Draw the gains; with ``walk_rng`` add a random walk on ``n_steps`` integrations from ``t_ref_jd``."""
        n = (telescope.N_PADS, 2)
        walk = {}
        if walk_rng is not None and n_steps > 0:
            dt_h = telescope.INTEGRATION_S / 3600.0
            steps = walk_rng.standard_normal((2, telescope.N_PADS, n_steps, 2)) * np.sqrt(dt_h)
            steps[:, :, 0, :] = 0.0  # the walk starts at the drawn gains
            walk = dict(
                walk_jd=t_ref_jd + (np.arange(n_steps) + 0.5) * telescope.INTEGRATION_S / 86400.0,
                walk_log_amp=np.cumsum(steps[0], axis=1) * np.log1p(amp_walk),
                walk_phase=np.cumsum(steps[1], axis=1) * np.radians(phase_walk_deg),
            )
        return cls(
            amp=rng.uniform(0.8, 1.2, n),
            phase0=rng.uniform(-np.pi, np.pi, n),
            phase_rate=np.radians(rng.normal(0, 5.0, n)),
            amp_period_h=rng.uniform(3, 12, n),
            amp_phase=rng.uniform(0, 2 * np.pi, n),
            delay_ns=rng.normal(0, 2.0, n),
            ripple_amp=rng.uniform(0.02, 0.1, n),
            ripple_period_mhz=rng.uniform(20, 80, n),
            ripple_phase=rng.uniform(0, 2 * np.pi, n),
            t_ref_jd=t_ref_jd,
            scale=scale,
            enabled=enabled,
            **walk,
        )

    def bandpass(self, ants: np.ndarray, freq_hz: np.ndarray) -> np.ndarray:
        """Complex bandpass, shape (ants, freqs, 2)."""
        if not self.enabled:
            return np.ones((ants.size, freq_hz.size, 2), complex)
        f = freq_hz[None, :, None]
        df_mhz = (f - REFERENCE_FREQ_HZ) / 1e6
        amp = 1 + self.ripple_amp[ants, None] * np.sin(
            2 * np.pi * df_mhz / self.ripple_period_mhz[ants, None] + self.ripple_phase[ants, None]
        )
        phase = 2 * np.pi * self.delay_ns[ants, None] * 1e-9 * (f - REFERENCE_FREQ_HZ)
        return amp * np.exp(1j * phase)

    def gain(self, ants: np.ndarray, jd: np.ndarray) -> np.ndarray:
        """Complex time-variable gain including the correlator scale, shape (ants, times, 2)."""
        if not self.enabled:
            return np.full((ants.size, jd.size, 2), self.scale, complex)
        hours = (jd[None, :, None] - self.t_ref_jd) * 24.0
        amp = self.amp[ants, None] * (
            1 + 0.02 * np.sin(2 * np.pi * hours / self.amp_period_h[ants, None] + self.amp_phase[ants, None])
        )
        phase = self.phase0[ants, None] + self.phase_rate[ants, None] * hours
        if self.walk_jd is not None:
            for p in range(2):
                amp[..., p] = amp[..., p] * np.exp(_interp_rows(jd, self.walk_jd, self.walk_log_amp[ants, :, p]))
                phase[..., p] = phase[..., p] + _interp_rows(jd, self.walk_jd, self.walk_phase[ants, :, p])
        return self.scale * amp * np.exp(1j * phase)


def _interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row of ``fp`` (rows, len(xp)) at ``x``; held constant outside."""
    return np.stack([np.interp(x, xp, row) for row in fp]) if fp.shape[0] else np.zeros((0, x.size))


def observation_starts(opts: SimOptions) -> list[datetime]:
    """Start time of each observation of the span."""
    return [opts.start + timedelta(seconds=k * opts.n_int * telescope.INTEGRATION_S) for k in range(opts.n_obs)]


def make_sky(opts: SimOptions, rng: np.random.Generator) -> pd.DataFrame:
    """Random field sources in the strip the span sweeps, plus calibrators in the beam."""
    starts = observation_starts(opts)
    t0 = Time(starts[0]).jd
    t1 = Time(starts[-1]).jd + opts.n_int * telescope.INTEGRATION_S / 86400
    lst0, lst1 = np.degrees(geometry.lst(np.array([t0, t1])))
    lst1 = lst1 if lst1 >= lst0 else lst1 + 360.0
    fwhm_deg = np.degrees(beam.fwhm_rad(1.4e9))
    cosd = np.cos(np.radians(opts.dec_deg))
    ra = rng.uniform(lst0 - 0.3 * fwhm_deg / cosd, lst1 + 0.3 * fwhm_deg / cosd, opts.n_sources) % 360
    dec = opts.dec_deg + rng.uniform(-0.4, 0.4, opts.n_sources) * fwhm_deg
    flux = np.exp(rng.uniform(np.log(opts.flux_min_jy), np.log(opts.flux_max_jy), opts.n_sources))
    sky = pd.DataFrame(
        {
            "name": [f"SIM{i:04d}" for i in range(opts.n_sources)],
            "ra_deg": ra,
            "dec_deg": dec,
            "flux_jy": flux,
            "spectral_index": rng.normal(-0.7, 0.2, opts.n_sources),
            "kind": "field",
            "flux_standard": "",
        }
    )
    if opts.calibrators:
        cals = load_calibrators()
        # Calibrators whose track passes within 2 beam widths of the pointing.
        near = cals[(cals.dec_deg - opts.dec_deg).abs() < 2 * fwhm_deg].copy()
        dra = (near.ra_deg - lst0) % 360
        near = near[dra <= (lst1 - lst0) + 2 * fwhm_deg / cosd]
        parts = [sky]
        for cal in near.itertuples():
            parts.append(pd.DataFrame([true_calibrator(cal, opts)]))
            if opts.calibrator_fields:
                parts.append(calibrator_field(cal, opts))
        sky = pd.concat(parts, ignore_index=True)
    return sky


def _name_rng(name: str, salt: int = 0) -> np.random.Generator:
    """A generator fixed by a source's name: its simulated properties are the same in every simulation."""
    return np.random.default_rng([zlib.crc32(name.encode()), salt])


def true_calibrator(cal, opts: SimOptions) -> dict:
    """A calibrator as the sky has it: standards exactly Perley-Butler 2017; a secondary's flux
    off the VLA list's by ``calibrator_flux_error`` (rms) and its spectral index its own."""
    row = dict(name=cal.name, ra_deg=cal.ra_deg, dec_deg=cal.dec_deg, flux_jy=float(cal.flux_jy),
               spectral_index=cal.spectral_index, kind="calibrator", flux_standard=cal.flux_standard)
    if not cal.flux_standard:
        rng = _name_rng(cal.name, 1)
        row.update(flux_jy=float(cal.flux_jy) * float(np.exp(rng.normal(0, opts.calibrator_flux_error))),
                   spectral_index=float(rng.normal(-0.7, 0.1)))
    return row


def calibrator_field(cal, opts: SimOptions) -> pd.DataFrame:
    """The field of a calibrator: ``field_sources`` sources of ``field_jy`` in total, 0.1 deg to
    ``field_radius_deg`` from it, log-uniform fluxes, spectral indices around -0.7."""
    rng = _name_rng(cal.name, 2)
    n = opts.field_sources
    r = np.sqrt(rng.uniform(0.1**2, opts.field_radius_deg**2, n))
    pa = rng.uniform(0, 2 * np.pi, n)
    dec = cal.dec_deg + r * np.cos(pa)
    ra = (cal.ra_deg + r * np.sin(pa) / np.cos(np.radians(dec))) % 360
    flux = np.exp(rng.uniform(np.log(0.1), np.log(3.0), n))
    flux *= opts.field_jy / flux.sum() if n else 1.0
    return pd.DataFrame({"name": [f"{cal.name}_F{k:02d}" for k in range(n)], "ra_deg": ra, "dec_deg": dec,
                         "flux_jy": flux, "spectral_index": rng.normal(-0.7, 0.2, n), "kind": "field",
                         "flux_standard": ""})


def rfi_mask(opts: SimOptions, n_t: int, n_f: int, rng: np.random.Generator) -> np.ndarray:
    """Which (integration, channel) of one observation carry RFI, (n_t, n_f) bool."""
    mask = np.zeros((n_t, n_f), bool)
    if not opts.rfi:
        return mask
    n_ch = int(round(opts.rfi_channel_fraction * n_f))
    mask[:, rng.choice(n_f, n_ch, replace=False)] = True
    if opts.rfi_time_fraction > 0:
        hit = rng.random(n_t) < opts.rfi_time_fraction
        if not hit.any():
            hit[rng.integers(n_t)] = True
        mask[hit] = True
    return mask


def rfi_voltages(opts: SimOptions, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Complex RFI voltage per pad, integration and channel (sqrt Jy), zero outside ``mask``.

    The visibility it adds is ``a_i conj(a_j)``: one emitter seen by every antenna
    with its own path and coupling, so autocorrelations get ``|a_i|^2``.
    """
    n_t, n_f = mask.shape
    level = opts.rfi_jy * np.exp(rng.normal(0, np.log(2), (1, n_t, n_f)))
    a = (rng.standard_normal((telescope.N_PADS, n_t, n_f)) + 1j * rng.standard_normal((telescope.N_PADS, n_t, n_f)))
    return a * np.sqrt(level / 2) * mask[None]


def noise_sigma_jy(opts: SimOptions) -> float:
    """Thermal noise (Jy) per real or imaginary part of one cross-correlation."""
    return opts.sefd_jy / np.sqrt(2 * telescope.channel_width(opts.n_chan) * telescope.INTEGRATION_S)


def _model_visibilities(uvw_m, app_l, app_m, app_n, amp, freq_hz):
    """Sum over sources of amp * exp(+2 pi i (ul + vm + w(n-1)) f / c).

    uvw_m (Ntimes, Nbls, 3); app_l/m/n (Nsrc, Ntimes); amp (Nsrc, Ntimes, Nfreq).
    Returns (Ntimes, Nbls, Nfreq) complex128. The frequency axis is filled by
    recurrence (channels are evenly spaced) to avoid an exp per channel.
    """
    n_t, n_b, _ = uvw_m.shape
    path = (
        uvw_m[None, :, :, 0] * app_l[:, :, None]
        + uvw_m[None, :, :, 1] * app_m[:, :, None]
        + uvw_m[None, :, :, 2] * (app_n[:, :, None] - 1)
    )  # (Nsrc, Ntimes, Nbls), metres
    phasor = np.exp(2j * np.pi * path * (freq_hz[0] / C_M_S))
    step = np.exp(2j * np.pi * path * ((freq_hz[1] - freq_hz[0]) / C_M_S)) if freq_hz.size > 1 else None
    out = np.empty((n_t, n_b, freq_hz.size), complex)
    for c in range(freq_hz.size):
        out[:, :, c] = np.einsum("st,stb->tb", amp[:, :, c], phasor)
        if step is not None:
            phasor *= step
    return out


def simulate_observation(opts: SimOptions, start: datetime, sky: pd.DataFrame, gains: GainModel, rng,
                         rfi_rng: np.random.Generator | None = None):
    """Visibilities of one observation: a dict of arrays for every subband (RFI drawn from ``rfi_rng``)."""
    rfi_rng = rfi_rng if rfi_rng is not None else np.random.default_rng([opts.seed, 3])
    ants = telescope.choose_antennas(opts.n_ants, opts.max_radius_m)
    a1, a2 = telescope.baselines(ants)
    n_bls, n_t = a1.size, opts.n_int
    jd = Time(start).jd + (np.arange(n_t) + 0.5) * telescope.INTEGRATION_S / 86400.0
    lst = geometry.lst(jd)
    dec0 = np.radians(opts.dec_deg)
    lay = telescope.layout()

    ant_1 = np.tile(a1, n_t)
    ant_2 = np.tile(a2, n_t)
    lst_blt = np.repeat(lst, n_bls)
    uvw_true = geometry.uvw(lay.ecef, lay.numbers, ant_1, ant_2, lst_blt, lst_blt, np.full(lst_blt.size, dec0))
    uvw_true = uvw_true.reshape(n_t, n_bls, 3)

    src_ra, src_dec = np.radians(sky.ra_deg.to_numpy()), np.radians(sky.dec_deg.to_numpy())
    app_ra, app_dec = geometry.icrs_to_apparent(jd[None, :], src_ra[:, None], src_dec[:, None])
    ell, m, n = geometry.direction_cosines(app_ra, app_dec, lst[None, :], dec0)
    theta = np.arccos(np.clip(n, -1, 1))

    freqs = {sb: telescope.subband_frequencies(sb, opts.n_chan) for sb in opts.subbands}
    all_f = np.concatenate([freqs[sb] for sb in opts.subbands])
    spectra = standards.spectra(sky, all_f)
    pb = beam.airy_power(theta[:, :, None], all_f[None, None, :])
    amp = spectra[:, None, :] * pb  # (Nsrc, Ntimes, Nfreq), apparent flux
    visible = (n > 0).all(axis=1) & (amp.max(axis=(1, 2)) > 1e-6 * max(opts.flux_min_jy, 1e-3))
    sigma = noise_sigma_jy(opts)
    auto = a1 == a2

    rfi = rfi_mask(opts, n_t, all_f.size, rfi_rng)
    rfi_v = rfi_voltages(opts, rfi, rfi_rng) if rfi.any() else None  # (Npads, Ntimes, Nfreq)
    out = {"jd": jd, "lst": lst, "ant_1": ant_1, "ant_2": ant_2, "antennas": ants, "subbands": {},
           "rfi_mask": rfi, "freq_hz": all_f}
    bp_all = gains.bandpass(lay.numbers, all_f)  # (Npads, Nfreq, 2)
    g_t = gains.gain(lay.numbers, jd)  # (Npads, Ntimes, 2)
    offset = 0
    for sb in opts.subbands:
        f = freqs[sb]
        sl = slice(offset, offset + f.size)
        offset += f.size
        vis = _model_visibilities(
            uvw_true, ell[visible], m[visible], n[visible], amp[visible][:, :, sl], f
        )  # (Ntimes, Nbls, Nfreq)
        total_auto = amp[visible][:, :, sl].sum(axis=0)  # (Ntimes, Nfreq)
        data = np.empty((n_t, n_bls, f.size, 2), np.complex64)
        for p in range(2):
            v = vis.copy()
            v[:, auto, :] = (opts.sefd_jy + total_auto)[:, None, :]
            if opts.noise:
                noise = rng.normal(0, sigma, v.shape) + 1j * rng.normal(0, sigma, v.shape)
                noise[:, auto, :] = rng.normal(0, 1, (n_t, auto.sum(), f.size)) * (
                    (opts.sefd_jy + total_auto)[:, None, :] / np.sqrt(telescope.channel_width(opts.n_chan) * telescope.INTEGRATION_S)
                )
                v += noise
            if rfi_v is not None:
                v += rfi_v[a1][:, :, sl].transpose(1, 0, 2) * np.conj(rfi_v[a2][:, :, sl]).transpose(1, 0, 2)
            g = bp_all[:, sl, p][:, None, :] * g_t[:, :, p][:, :, None]  # (Npads, Ntimes, Nfreq)
            v *= g[a1][:, :, :].transpose(1, 0, 2) * np.conj(g[a2]).transpose(1, 0, 2)
            data[..., p] = v
        out["subbands"][sb] = {"freq": f, "data": data.reshape(n_t * n_bls, 1, f.size, 2)}
    out["uvw_true"] = uvw_true.reshape(-1, 3)
    return out


def _file_uvw(ant_1: np.ndarray, ant_2: np.ndarray, dec0: float) -> np.ndarray:
    """The correlator's uvw: toward HA = 0 at dec0 at MJD 58849, float32, per baseline."""
    lay = telescope.layout()
    lst_ref = geometry.lst(np.array([telescope.UVW_REFERENCE_JD]))[0]
    n = ant_1.size
    return geometry.uvw(
        lay.ecef, lay.numbers, ant_1, ant_2, np.full(n, lst_ref), np.full(n, lst_ref), np.full(n, dec0)
    ).astype(np.float32)


def write_subband_file(path: Path, obs: dict, sb: int, opts: SimOptions) -> None:
    """Write one subband exactly as the correlator does (h5py, 2018 UVH5 memo)."""
    lay = telescope.layout()
    sbd = obs["subbands"][sb]
    n_blts = obs["ant_1"].size
    n_t = obs["jd"].size
    n_bls = n_blts // n_t
    dec0 = np.radians(opts.dec_deg)
    uvw_bl = _file_uvw(obs["ant_1"][:n_bls], obs["ant_2"][:n_bls], dec0)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        h = f.create_group("Header")
        h["latitude"] = telescope.LATITUDE_DEG
        h["longitude"] = telescope.LONGITUDE_DEG
        h["altitude"] = telescope.ALTITUDE_M
        h["telescope_name"] = np.bytes_(telescope.TELESCOPE_NAME_IN_FILES)
        h["instrument"] = np.bytes_(telescope.INSTRUMENT)
        h["history"] = np.bytes_("Written by the DSA-110 correlator (dsa110_contimg simulation).")
        h["phase_type"] = np.bytes_("drift")
        h["phase_center_app_dec"] = dec0
        h["Nants_data"] = obs["antennas"].size
        h["Nants_telescope"] = telescope.N_PADS
        h["Nbls"] = n_bls
        h["Nblts"] = n_blts
        h["Nfreqs"] = sbd["freq"].size
        h["Npols"] = 2
        h["Nspws"] = 1
        h["Ntimes"] = n_t
        h["ant_1_array"] = obs["ant_1"].astype(np.int64)
        h["ant_2_array"] = obs["ant_2"].astype(np.int64)
        h["antenna_names"] = np.array([np.bytes_(n) for n in lay.names])
        h["antenna_numbers"] = lay.numbers.astype(np.int64)
        h["antenna_positions"] = lay.ecef
        h["antenna_diameters"] = np.full(telescope.N_PADS, telescope.DISH_DIAMETER_M)
        h["uvw_array"] = np.tile(uvw_bl, (n_t, 1))
        h["time_array"] = np.repeat(obs["jd"], n_bls)
        h["integration_time"] = np.full(n_blts, telescope.INTEGRATION_S, dtype=np.float64)
        h["freq_array"] = sbd["freq"][None, :]
        h["channel_width"] = telescope.channel_width(opts.n_chan)
        h["spw_array"] = np.array([1])
        h["polarization_array"] = np.array([-5, -6])
        ek = h.create_group("extra_keywords")
        ek["phase_center_dec"] = dec0
        ek["ha_phase_center"] = 0.0
        ek["phase_center_epoch"] = np.bytes_("HADEC")
        ek["fs_table"] = np.bytes_("/home/ubuntu/data/fs_tables/fringestopping_table.npz")
        ek["applied_delays_ns"] = np.bytes_(" ".join("0" for _ in range(2 * obs["antennas"].size)))
        d = f.create_group("Data")
        d.create_dataset("visdata", data=sbd["data"])
        d.create_dataset("flags", data=np.zeros(sbd["data"].shape, bool))
        d.create_dataset("nsamples", data=np.ones(sbd["data"].shape, np.float32))
    os.replace(tmp, path)


def simulate_span(
    out_dir: str | os.PathLike, opts: SimOptions, truth_dir=None, sky: pd.DataFrame | None = None
) -> list[Path]:
    """Simulate a span of observations into ``out_dir``; truth goes to ``truth_dir``.

    ``sky`` (columns name, ra_deg, dec_deg, flux_jy, spectral_index, kind)
    replaces the random sky (an optional column flux_standard gives a flux
    standard its Perley-Butler 2017 spectrum). Returns the paths written.
    ``truth_dir`` (default ``<out_dir>/../truth``) receives ``sky.csv``,
    ``observations.csv``, ``simulation.json``, ``gains/{group}.npz`` (antennas,
    jd, freq_hz, bandpass (ant, freq, pol), gain (ant, time, pol), in the
    convention of the module docstring) and, with RFI, ``rfi/{group}.npz``
    (jd, freq_hz, mask (time, freq): every baseline and polarisation of a
    masked integration and channel carries RFI).
    """
    spacing = opts.n_int * telescope.INTEGRATION_S
    if opts.n_obs > 1 and spacing < 60 + 2 * opts.jitter_s:
        raise ValueError(
            f"{opts.n_int} integrations make observations {spacing:.0f} s apart, too close to "
            "tell apart by file name (subbands are grouped within 60 s): use at least 5"
        )
    out_dir = Path(out_dir)
    truth_dir = Path(truth_dir) if truth_dir else out_dir.parent / "truth"
    out_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "gains").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    sky = make_sky(opts, rng) if sky is None else sky.reset_index(drop=True)
    if "flux_standard" not in sky:
        sky = sky.assign(flux_standard="")
    starts = observation_starts(opts)
    epoch = Time(opts.gain_epoch if opts.gain_epoch is not None else starts[0]).jd
    if epoch > Time(starts[0]).jd + 1e-9:
        raise ValueError(f"gain_epoch {opts.gain_epoch} is after the span's start {starts[0]}")
    before = int(np.ceil((Time(starts[0]).jd - epoch) * 86400 / telescope.INTEGRATION_S))
    gains = GainModel.draw(rng, epoch, opts.correlator_gain, opts.gains,
                           walk_rng=np.random.default_rng([opts.seed, 2]),
                           n_steps=before + len(starts) * opts.n_int,
                           amp_walk=opts.gain_amp_walk, phase_walk_deg=opts.gain_phase_walk_deg)
    written, rows = [], []
    for k, start in enumerate(starts):
        obs = simulate_observation(opts, start, sky, gains, rng, np.random.default_rng([opts.seed, 3, k]))
        jitter = rng.uniform(0, opts.jitter_s, len(opts.subbands))
        names = {}
        for sb, dt in zip(opts.subbands, jitter, strict=True):
            stamp = (start + timedelta(seconds=float(dt))).replace(microsecond=0)
            path = out_dir / naming.raw_filename(stamp, sb)
            write_subband_file(path, obs, sb, opts)
            names[sb] = path.name
            written.append(path)
        group = min(names.values())[:19]
        all_f = np.concatenate([obs["subbands"][sb]["freq"] for sb in opts.subbands])
        lay = telescope.layout()
        np.savez_compressed(
            truth_dir / "gains" / f"{group}.npz",
            antennas=obs["antennas"],
            jd=obs["jd"],
            freq_hz=all_f,
            bandpass=gains.bandpass(obs["antennas"], all_f),
            gain=gains.gain(obs["antennas"], obs["jd"]),
            ecef=lay.ecef,
        )
        if opts.rfi:
            (truth_dir / "rfi").mkdir(exist_ok=True)
            np.savez_compressed(truth_dir / "rfi" / f"{group}.npz", jd=obs["jd"], freq_hz=obs["freq_hz"],
                                mask=obs["rfi_mask"])
        rows.append(
            {
                "group": group,
                "start": start.isoformat(),
                "mid_jd": float(obs["jd"].mean()),
                "dec_deg": opts.dec_deg,
                "noise_sigma_jy": noise_sigma_jy(opts) if opts.noise else 0.0,
                "rfi_fraction": float(obs["rfi_mask"].mean()),
                "files": " ".join(names[sb] for sb in sorted(names)),
            }
        )
        print(f"simulated {group}: {len(names)} subbands, {obs['antennas'].size} antennas", flush=True)
    sky.to_csv(truth_dir / "sky.csv", index=False)
    pd.DataFrame(rows).to_csv(truth_dir / "observations.csv", index=False)
    meta = asdict(opts) | {"start": opts.start.isoformat(),
                           "gain_epoch": opts.gain_epoch.isoformat() if opts.gain_epoch else None,
                           "gains_convention": __doc__.split("Gains convention")[1].strip()}
    (truth_dir / "simulation.json").write_text(json.dumps(meta, indent=1, default=str))
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``contimg simulate``."""
    d = SimOptions(start=datetime(2025, 6, 15, tzinfo=UTC))
    p.add_argument("--out", required=True, help="folder for the UVH5 files (raw/)")
    p.add_argument("--truth", default=None, help="folder for the ground truth (default: OUT/../truth)")
    p.add_argument("--start", required=True, help="UTC start, e.g. 2025-06-15T06:00:00 (use dates in 2025)")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--n-obs", type=int, default=None, help=f"observations (default {d.n_obs})")
    span.add_argument("--hours", type=float, default=None, help="span length in hours instead of --n-obs")
    p.add_argument("--dec", type=float, default=d.dec_deg, help="pointing declination, deg")
    p.add_argument("--n-ants", type=int, default=d.n_ants)
    p.add_argument("--max-radius", type=float, default=d.max_radius_m,
                   help="choose the antennas within this many metres of the array centre (default: whole array)")
    p.add_argument("--n-chan", type=int, default=d.n_chan, help="channels per subband")
    p.add_argument("--n-int", type=int, default=d.n_int, help="integrations per observation")
    p.add_argument("--n-sources", type=int, default=d.n_sources)
    p.add_argument("--subbands", default=None, help="comma-separated subbands to write (default all)")
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--no-gains", action="store_true")
    p.add_argument("--no-calibrators", action="store_true")
    p.add_argument("--no-fields", action="store_true", help="calibrators without their fields of other sources")
    p.add_argument("--gain-walk", type=float, nargs=2, metavar=("AMP", "PHASE_DEG"),
                   default=(d.gain_amp_walk, d.gain_phase_walk_deg),
                   help="per-antenna gain random walk, rms after one hour: fraction and degrees "
                   "(default %(default)s; 0 0 = none)")
    p.add_argument("--rfi", action="store_true", help="add narrow-band and impulsive RFI (mask in TRUTH/rfi/)")
    p.add_argument("--seed", type=int, default=d.seed)


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """SimOptions from parsed ``contimg simulate`` arguments."""
    start = naming.parse_timestamp(args.start[:19]) if len(args.start) >= 19 else datetime.fromisoformat(args.start)
    opts = SimOptions(
        start=start,
        dec_deg=args.dec,
        n_ants=args.n_ants,
        max_radius_m=args.max_radius,
        n_chan=args.n_chan,
        n_int=args.n_int,
        n_sources=args.n_sources,
        noise=not args.no_noise,
        gains=not args.no_gains,
        calibrators=not args.no_calibrators,
        calibrator_fields=not args.no_fields,
        gain_amp_walk=args.gain_walk[0],
        gain_phase_walk_deg=args.gain_walk[1],
        rfi=args.rfi,
        seed=args.seed,
    )
    if args.subbands:
        opts = replace(opts, subbands=tuple(int(s) for s in args.subbands.split(",")))
    if args.hours is not None:
        opts = replace(opts, n_obs=max(1, int(np.ceil(args.hours * 3600 / (opts.n_int * telescope.INTEGRATION_S)))))
    elif args.n_obs is not None:
        opts = replace(opts, n_obs=args.n_obs)
    return opts


def main(args: argparse.Namespace) -> int:
    """Entry point of ``contimg simulate``."""
    opts = options_from_args(args)
    paths = simulate_span(args.out, opts, args.truth)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
