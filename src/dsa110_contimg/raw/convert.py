"""One observation's 16 UVH5 subbands -> one CASA Measurement Set.

The telescope's files are read as the correlator writes them (see DESIGN.md):
a "drift" header whose data are in fact fringe-stopped, per integration, to
hour angle 0 at the pointing declination; float32 uvw for a reference epoch;
descending channels; unsorted baselines. The converter

* checks every subband's header and data shapes against the others and
  against the frequencies its name promises, with an error naming the file;
* rephases every integration to one phase centre, the meridian at the
  observation's mid time in ICRS, and recomputes uvw from the antenna
  positions in that frame;
* writes a single spectral window in ascending frequency, antenna 1 < antenna
  2, in CASA's conjugation convention (pyuvdata's ``flip_conj``), the
  autocorrelations kept and flagged;
* streams the data a few integrations at a time, so memory stays at a few
  hundred MB whatever the file size.

The MS is written with python-casacore through pyuvdata's MS helpers; casatools
is never imported in the same process (the two casacore builds must not meet).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.time import Time

from .. import geometry, naming, telescope
from ..config import default, options
from ..constants import C_M_S

# CASA correlation codes for XX, YY (pyuvdata -5, -6).
XX_YY = np.array([-5, -6])


class ConversionError(RuntimeError):
    """A group that cannot be converted; the message names the file and problem."""


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert."""

    telescope_name: str = default("convert.telescope_name")
    """Telescope name written to the MS: one CASA places at the OVRO site."""
    flag_autocorrelations: bool = default("convert.flag_autocorrelations")
    """Keep autocorrelations but flag them, so calibration and imaging skip them."""
    integrations_per_chunk: int = 2
    """Integrations converted at once (about 100 MB of buffers each at full size)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConvertOptions:
        return options(cls, config["convert"])


@dataclass
class Subband:
    """One subband file's header, checked."""

    path: Path
    index: int
    freq_hz: np.ndarray  # as stored (descending)
    channel_width: float
    time_jd: np.ndarray  # per blt
    ant_1: np.ndarray
    ant_2: np.ndarray
    pols: np.ndarray
    dec_rad: float
    antenna_numbers: np.ndarray
    antenna_names: list[str]
    antenna_positions: np.ndarray
    antenna_diameters: np.ndarray | None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_header(path: str | os.PathLike) -> Subband:
    """Read and check one subband file's header (no visibilities read)."""
    path = Path(path)
    try:
        _, index = naming.parse_raw_filename(path.name)
    except ValueError as exc:
        raise ConversionError(f"{path}: not a DSA-110 subband file name ({exc})") from exc
    try:
        with h5py.File(path, "r") as f:
            h = f["Header"]
            n_blts, n_freqs, n_pols = int(h["Nblts"][()]), int(h["Nfreqs"][()]), int(h["Npols"][()])
            freq = np.asarray(h["freq_array"][()], dtype=float).reshape(-1)
            ek = h["extra_keywords"]
            dec = float(ek["phase_center_dec"][()]) if "phase_center_dec" in ek else float(h["phase_center_app_dec"][()])
            sub = Subband(
                path=path,
                index=index,
                freq_hz=freq,
                channel_width=float(np.atleast_1d(h["channel_width"][()])[0]),
                time_jd=np.asarray(h["time_array"][()], dtype=float),
                ant_1=np.asarray(h["ant_1_array"][()], dtype=int),
                ant_2=np.asarray(h["ant_2_array"][()], dtype=int),
                pols=np.asarray(h["polarization_array"][()], dtype=int),
                dec_rad=dec,
                antenna_numbers=np.asarray(h["antenna_numbers"][()], dtype=int),
                antenna_names=[_text(n) for n in h["antenna_names"][()]],
                antenna_positions=np.asarray(h["antenna_positions"][()], dtype=float),
                antenna_diameters=np.asarray(h["antenna_diameters"][()], dtype=float)
                if "antenna_diameters" in h
                else None,
            )
            shapes = {name: f["Data"][name].shape for name in ("visdata", "flags", "nsamples")}
    except OSError as exc:
        raise ConversionError(f"{path}: unreadable or truncated HDF5 file ({exc})") from exc
    except KeyError as exc:
        raise ConversionError(f"{path}: missing header or data item {exc}") from exc
    expected = (n_blts, 1, n_freqs, n_pols)
    for name, shape in shapes.items():
        if shape != expected:
            raise ConversionError(f"{path}: Data/{name} has shape {shape}, header says {expected}")
    if freq.size != n_freqs or sub.time_jd.size != n_blts or sub.ant_1.size != n_blts:
        raise ConversionError(f"{path}: header arrays disagree with Nblts={n_blts}, Nfreqs={n_freqs}")
    if not np.array_equal(np.sort(sub.pols), np.sort(XX_YY)):
        raise ConversionError(f"{path}: polarizations {sub.pols.tolist()} are not XX, YY")
    lo, hi = telescope.subband_edges(index)
    if freq.min() < lo or freq.max() > hi or np.any(np.diff(freq) >= 0):
        raise ConversionError(
            f"{path}: frequencies {freq.min() / 1e6:.3f}-{freq.max() / 1e6:.3f} MHz are not the "
            f"descending channels of subband {index} ({lo / 1e6:.3f}-{hi / 1e6:.3f} MHz)"
        )
    return sub


def check_group(subbands: list[Subband]) -> list[Subband]:
    """Check the subbands belong together; return them in ascending frequency."""
    if not subbands:
        raise ConversionError("no subband files given")
    ref = subbands[0]
    for sb in subbands[1:]:
        for what in ("time_jd", "ant_1", "ant_2", "antenna_numbers", "antenna_positions"):
            a, b = getattr(ref, what), getattr(sb, what)
            if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9):
                raise ConversionError(f"{sb.path}: {what} differs from {ref.path.name}")
        if sb.freq_hz.size != ref.freq_hz.size or not np.isclose(sb.channel_width, ref.channel_width):
            raise ConversionError(f"{sb.path}: {sb.freq_hz.size} channels of {sb.channel_width} Hz, "
                                  f"{ref.path.name} has {ref.freq_hz.size} of {ref.channel_width} Hz")
        if not np.isclose(sb.dec_rad, ref.dec_rad, atol=1e-9):
            raise ConversionError(f"{sb.path}: pointing declination differs from {ref.path.name}")
    indices = sorted(sb.index for sb in subbands)
    if len(set(indices)) != len(indices):
        raise ConversionError(f"duplicate subbands in {[str(s.path) for s in subbands]}")
    if indices != list(range(indices[0], indices[-1] + 1)):
        raise ConversionError(f"subbands {indices} are not contiguous")
    n_times = np.unique(ref.time_jd).size
    if ref.time_jd.size % n_times or not np.all(
        ref.time_jd.reshape(n_times, -1) == ref.time_jd.reshape(n_times, -1)[:, :1]
    ):
        raise ConversionError(f"{ref.path}: baseline-times are not time-major and rectangular")
    return sorted(subbands, key=lambda s: s.freq_hz[0])


@dataclass
class Geometry:
    """Phase centre and per-row factors for the conversion."""

    ra_rad: float
    dec_rad: float
    mid_jd: float
    ms_ant_1: np.ndarray
    ms_ant_2: np.ndarray
    swapped: np.ndarray  # rows whose antennas were swapped to make ant1 < ant2
    ms_uvw: np.ndarray  # (Nblts, 3), CASA convention
    delta_w: np.ndarray  # (Nblts,) w_old - w_new of the file's baseline, m


def plan_geometry(ref: Subband) -> Geometry:
    """Phase centre at mid time and everything row-wise the rephasing needs."""
    jd = ref.time_jd
    times = np.unique(jd)
    mid = float(times.mean())
    ra0, dec0 = geometry.meridian_icrs(mid, ref.dec_rad)
    lst = geometry.lst(times)
    t_idx = np.searchsorted(times, jd)
    app_ra_t, app_dec_t = geometry.icrs_to_apparent(times, ra0, dec0)
    frame_pa_t = geometry.frame_position_angle(times, app_ra_t, app_dec_t)
    pos, nums = ref.antenna_positions, ref.antenna_numbers
    w_old = geometry.uvw(pos, nums, ref.ant_1, ref.ant_2, lst[t_idx], lst[t_idx],
                         np.full(jd.size, ref.dec_rad))[:, 2]
    uvw_new = geometry.uvw(pos, nums, ref.ant_1, ref.ant_2, lst[t_idx], app_ra_t[t_idx],
                           app_dec_t[t_idx], frame_pa_t[t_idx])
    swapped = ref.ant_1 > ref.ant_2
    # pyuvdata convention for (a1 < a2) is uvw = x[a2] - x[a1]; CASA's is its negative.
    ms_uvw = np.where(swapped[:, None], uvw_new, -uvw_new)
    return Geometry(
        ra_rad=ra0,
        dec_rad=dec0,
        mid_jd=mid,
        ms_ant_1=np.minimum(ref.ant_1, ref.ant_2),
        ms_ant_2=np.maximum(ref.ant_1, ref.ant_2),
        swapped=swapped,
        ms_uvw=ms_uvw,
        delta_w=w_old - uvw_new[:, 2],
    )


def _metadata_uvdata(ref: Subband, ordered: list[Subband], geo: Geometry, opts: ConvertOptions, group: str):
    """A metadata-only UVData describing the MS, for pyuvdata's subtable writers."""
    from pyuvdata import UVData

    uv = UVData.from_file(str(ref.path), file_type="uvh5", read_data=False, run_check=False)
    freq = np.concatenate([s.freq_hz[::-1] for s in ordered])
    uv.freq_array = freq
    uv.Nfreqs = freq.size
    uv.channel_width = np.full(freq.size, ref.channel_width)
    uv.spw_array = np.array([0])
    uv.flex_spw_id_array = np.zeros(freq.size, dtype=int)
    uv.telescope.name = opts.telescope_name
    # Without a mount type CASA warns on every parallactic-angle computation.
    uv.telescope.mount_type = ["alt-az"] * uv.telescope.Nants
    uv.phase_center_catalog = {}
    cat_id = uv._add_phase_center(
        f"meridian_{group}", cat_type="sidereal", cat_lon=geo.ra_rad, cat_lat=geo.dec_rad,
        cat_frame="icrs", cat_epoch=2000.0,
    )
    uv.phase_center_id_array = np.full(uv.Nblts, cat_id)
    uv.history = (
        f"Converted by dsa110_contimg from {len(ordered)} DSA-110 subbands "
        f"({', '.join(s.path.name for s in ordered)}); rephased to the meridian at mid time."
    )
    return uv


def _write_subtables(ms: str, uv, pol_order) -> None:
    from pyuvdata.utils.io import ms as ms_utils

    ms_utils.write_ms_antenna(ms, uvobj=uv)
    ms_utils.write_ms_data_description(ms, uvobj=uv)
    ms_utils.write_ms_feed(ms, uvobj=uv)
    ms_utils.write_ms_field(ms, uvobj=uv)
    ms_utils.write_ms_history(ms, uvobj=uv)
    ms_utils.write_ms_observation(ms, uvobj=uv)
    ms_utils.write_ms_pointing(ms, uvobj=uv)
    ms_utils.write_ms_polarization(ms, pol_order=pol_order, uvobj=uv)
    ms_utils.write_ms_source(ms, uvobj=uv)
    ms_utils.write_ms_spectral_window(ms, uvobj=uv)


def _phasors(delta_w: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """exp(+2 pi i delta_w f / c), shape (channels, rows), complex64.

    Channels are evenly spaced, so the frequency axis is filled by recurrence
    (one complex multiply per element, contiguous rows) instead of an exp per
    element; it restarts every 64 channels so rounding cannot accumulate.
    """
    out = np.empty((freq.size, delta_w.size), np.complex64)
    k = 2 * np.pi * delta_w / C_M_S
    step = np.exp(1j * k * (freq[1] - freq[0])) if freq.size > 1 else None
    for c in range(freq.size):
        if c % 64 == 0:
            cur = np.exp(1j * k * freq[c])
        else:
            cur *= step
        out[c] = cur
    return out


def _stream_data(table, ordered: list[Subband], geo: Geometry, opts: ConvertOptions, pol_order) -> dict:
    """Copy visibilities chunk by chunk: reorder, rephase, conjugate, flag; return counts."""
    ref = ordered[0]
    n_blts = ref.time_jd.size
    n_bls = n_blts // np.unique(ref.time_jd).size
    n_chan = ref.freq_hz.size
    freq = np.concatenate([s.freq_hz[::-1] for s in ordered])
    chunk = n_bls * max(1, opts.integrations_per_chunk)
    auto = ref.ant_1 == ref.ant_2
    pols = slice(None) if list(pol_order) == list(range(len(pol_order))) else list(pol_order)
    files = [h5py.File(s.path, "r") for s in ordered]
    counts = {"flagged": 0, "zero": 0, "total": 0, "auto_flagged": 0, "auto_total": 0}
    weights = np.empty((n_blts, 2), np.float32)
    bufs = {}
    try:
        for start in range(0, n_blts, chunk):
            stop = min(start + chunk, n_blts)
            n = stop - start
            rows = slice(start, stop)
            data = np.empty((n, freq.size, 2), np.complex64)
            flags = np.empty(data.shape, bool)
            nsamp = np.empty(data.shape, np.float32)
            for k, f in enumerate(files):
                cols = slice(k * n_chan, (k + 1) * n_chan)
                for name, out in (("visdata", data), ("flags", flags), ("nsamples", nsamp)):
                    dset = f["Data"][name]
                    buf = bufs.get((name, n))
                    if buf is None:
                        buf = bufs[(name, n)] = np.empty((n, 1, n_chan, 2), dset.dtype)
                    try:
                        dset.read_direct(buf, np.s_[start:stop])
                    except OSError as exc:
                        raise ConversionError(
                            f"{ordered[k].path}: cannot read Data/{name} rows {start}-{stop} ({exc})"
                        ) from exc
                    out[:, cols] = buf[:, 0, ::-1][:, :, pols]
            # Rephase from each integration's own meridian to the common centre:
            # V' = V exp(+2 pi i (w_old - w_new) f / c) in the correlator's convention.
            data *= _phasors(geo.delta_w[rows], freq).T[:, :, None]
            # CASA's convention is the conjugate, except for rows whose antennas we
            # swapped to make antenna 1 < antenna 2 (swapping conjugates too).
            np.conjugate(data, out=data, where=~geo.swapped[rows, None, None])
            zero = data == 0
            flags |= zero
            auto_rows = auto[rows]
            if opts.flag_autocorrelations:
                flags[auto_rows] = True
            counts["zero"] += int(np.count_nonzero(zero))
            counts["flagged"] += int(np.count_nonzero(flags))
            counts["total"] += flags.size
            counts["auto_flagged"] += int(np.count_nonzero(flags[auto_rows]))
            counts["auto_total"] += int(auto_rows.sum()) * freq.size * 2
            table.putcol("DATA", data, start, n)
            table.putcol("FLAG", flags, start, n)
            table.putcol("WEIGHT_SPECTRUM", nsamp, start, n)
            weights[rows] = np.einsum("ncp->np", nsamp) / freq.size
    finally:
        for f in files:
            f.close()
    table.putcol("WEIGHT", weights)
    table.putcol("SIGMA", np.where(weights > 0, 1 / np.sqrt(np.maximum(weights, 1e-30)), 0).astype(np.float32))
    counts["cross_flagged"] = counts["flagged"] - counts["auto_flagged"]
    counts["cross_total"] = counts["total"] - counts["auto_total"]
    return counts


def convert_group(
    files: list[str | os.PathLike], ms_path: str | os.PathLike, opts: ConvertOptions | None = None,
    group: str | None = None,
) -> dict:
    """Convert one group's subband files into the MS at ``ms_path`` (written as given).

    The caller makes the write atomic (see :func:`provenance.atomic_output`).
    Returns the MS's QA figures for the sidecar and the database.
    """
    from pyuvdata.utils.io import ms as ms_utils
    from pyuvdata.utils.pol import determine_pol_order

    opts = opts or ConvertOptions()
    t0 = time.perf_counter()
    ordered = check_group([read_header(f) for f in files])
    ref = ordered[0]
    group = group or naming.format_timestamp(min(naming.parse_raw_filename(Path(f).name)[0] for f in files))
    geo = plan_geometry(ref)
    pol_order = determine_pol_order(ref.pols, order="CASA")
    uv = _metadata_uvdata(ref, ordered, geo, opts, group)
    t_meta = time.perf_counter()

    ms = str(ms_path)
    table = ms_utils.init_ms_file(ms)
    try:
        n_blts = ref.time_jd.size
        table.addrows(n_blts)
        mjd_s = Time(ref.time_jd, format="jd", scale="utc").mjd * 86400.0
        table.putcol("ANTENNA1", geo.ms_ant_1)
        table.putcol("ANTENNA2", geo.ms_ant_2)
        table.putcol("UVW", geo.ms_uvw)
        table.putcol("TIME", mjd_s)
        table.putcol("TIME_CENTROID", mjd_s)
        table.putcol("INTERVAL", np.full(n_blts, telescope.INTEGRATION_S) if uv.integration_time is None
                     else uv.integration_time)
        table.putcol("EXPOSURE", uv.integration_time)
        table.putcol("FIELD_ID", np.zeros(n_blts, dtype=np.int32))
        table.putcol("DATA_DESC_ID", np.zeros(n_blts, dtype=np.int32))
        table.putcol("SCAN_NUMBER", np.ones(n_blts, dtype=np.int32))
        table.putcolkeyword("DATA", "QuantumUnits", "uncalib")
        counts = _stream_data(table, ordered, geo, opts, pol_order)
    finally:
        table.done()
    _write_subtables(ms, uv, pol_order)
    t_end = time.perf_counter()

    freq = uv.freq_array
    times = np.unique(ref.time_jd)
    half = telescope.INTEGRATION_S / 2 / 86400
    return {
        "n_rows": int(ref.time_jd.size),
        "n_times": int(times.size),
        "n_baselines": int(ref.time_jd.size // times.size),
        "n_antennas": int(np.unique(np.concatenate([ref.ant_1, ref.ant_2])).size),
        "n_subbands": len(ordered),
        "n_channels": int(freq.size),
        "freq_min_hz": float(freq.min()),
        "freq_max_hz": float(freq.max()),
        "time_start": Time(times[0] - half, format="jd").isot,
        "time_end": Time(times[-1] + half, format="jd").isot,
        "ra_deg": float(np.degrees(geo.ra_rad)),
        "dec_deg": float(np.degrees(geo.dec_rad)),
        "pointing_dec_deg": float(np.degrees(ref.dec_rad)),
        "flagged_fraction": counts["flagged"] / max(counts["total"], 1),
        "cross_flagged_fraction": counts["cross_flagged"] / max(counts["cross_total"], 1),
        "zero_fraction": counts["zero"] / max(counts["total"], 1),
        "telescope_name": opts.telescope_name,
        "seconds_metadata": t_meta - t0,
        "seconds_data": t_end - t_meta,
    }
