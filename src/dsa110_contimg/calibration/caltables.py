"""Bandpass and gain calibration on a calibrator transit, and applying it.

Solve (on the calibrator group's MS, in a private copy: CASA writes MODEL_DATA
and flags into whatever it is given):

1. flag autocorrelations, exact zeros and (optionally) RFI with ``tfcrop``;
2. model: the calibrator at its catalogue flux and spectrum, predicted with
   ``ft``, then attenuated per integration and channel by the primary beam at
   its offset from that integration's pointing (it drifts ~1 deg through the
   beam during one observation);
3. a phase-only gain per integration, then a bandpass (one solution per
   channel over the whole observation, amplitude normalised), then complex
   gains per integration with the bandpass applied.

CASA gains are the complex conjugates of the simulator's (pyuvdata-convention)
gains; see ``tests/test_calibration.py``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.transits import calibrator_transits

from .. import beam, casa_env, geometry

BANDPASS = "bandpass.B"
GAINS = "gains.G"


class CalibrationError(RuntimeError):
    """A calibration that cannot be solved or applied; the message says why."""


@dataclass(frozen=True)
class SolveOptions:
    """How to solve."""

    refant: tuple[str, ...] = ()
    """Reference antenna names in order of preference; empty: the antenna with most data."""
    flag_rfi: bool = True
    """Run CASA flagdata tfcrop on the calibrator data before solving."""
    min_snr: float = 3.0
    """Solutions below this SNR are flagged by CASA."""
    qa_min_snr: float = 20.0
    """QA fails when the median gain SNR is below this (calibrator absent or too faint)."""
    qa_max_flagged: float = 0.3
    """QA fails when more than this fraction of gain solutions is flagged."""
    qa_max_phase_scatter_deg: float = 20.0
    """QA fails when gain phases jump more than this between integrations (median)."""


@dataclass(frozen=True)
class MsInfo:
    """What the calibration needs to know about an MS."""

    field_ra: float  # rad, ICRS
    field_dec: float
    times_jd: np.ndarray  # unique integration centres
    freq_hz: np.ndarray
    antenna_names: list[str]
    pointing_dec_app: float  # rad, apparent


def read_ms_info(ms: str) -> MsInfo:
    ct = casa_env.casatools()
    tb = ct.table()
    try:
        tb.open(f"{ms}/FIELD")
        ra, dec = tb.getcol("PHASE_DIR")[:, 0, 0]
        tb.close()
        tb.open(f"{ms}/SPECTRAL_WINDOW")
        freq = tb.getcol("CHAN_FREQ")[:, 0]
        tb.close()
        tb.open(f"{ms}/ANTENNA")
        names = list(tb.getcol("NAME"))
        tb.close()
        tb.open(ms)
        times = np.unique(tb.getcol("TIME")) / 86400.0 + 2400000.5
        tb.close()
    except RuntimeError as exc:
        raise CalibrationError(f"{ms}: cannot read the Measurement Set ({exc})") from exc
    mid = float(times.mean())
    _, dec_app = geometry.icrs_to_apparent(mid, ra, dec)
    return MsInfo(float(ra), float(dec), times, freq, names, float(dec_app))


def angular_separation(ra1, dec1, ra2, dec2):
    """Great-circle distance (rad), Vincenty's formula; broadcasts."""
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.arctan2(num, den)


def beam_on_source(info: MsInfo, ra: float, dec: float) -> np.ndarray:
    """Primary-beam power at (ra, dec) for every integration and channel, (time, chan)."""
    p_ra, p_dec = np.array([geometry.meridian_icrs(t, info.pointing_dec_app) for t in info.times_jd]).T
    theta = angular_separation(p_ra, p_dec, ra, dec)
    return beam.airy_power(theta[:, None], info.freq_hz[None, :])


def calibrator_in_group(info: MsInfo, dec_tolerance_deg: float = 1.5):
    """The catalogue calibrator transiting during this MS's observation (a table row)."""
    half = (info.times_jd[-1] - info.times_jd[0]) / 2 + 7 / 86400
    found = calibrator_transits(info.times_jd[0] - half, info.times_jd[-1] + half,
                                np.degrees(info.pointing_dec_app), tolerance_deg=dec_tolerance_deg)
    if found.empty:
        raise CalibrationError(
            f"no catalogue calibrator within {dec_tolerance_deg} deg of dec "
            f"{np.degrees(info.pointing_dec_app):.2f} transits during this observation"
        )
    return load_calibrators().set_index("name").loc[found.iloc[0]["name"]]


def write_model(ms: str, info: MsInfo, cal) -> None:
    """MODEL_DATA = the calibrator (catalogue flux and spectrum) x primary beam."""
    ct, cta = casa_env.casatools(), casa_env.casatasks()
    cl_path = f"{ms}.cl"
    shutil.rmtree(cl_path, ignore_errors=True)
    cl = ct.componentlist()
    cl.addcomponent(dir=f"J2000 {cal.ra_deg}deg {cal.dec_deg}deg", flux=float(cal.flux_jy), fluxunit="Jy",
                    freq="1.4GHz", shape="point", spectrumtype="spectral index", index=float(cal.spectral_index))
    cl.rename(cl_path)
    cl.close()
    cta.ft(vis=ms, complist=cl_path, usescratch=True)
    shutil.rmtree(cl_path, ignore_errors=True)
    pb = beam_on_source(info, np.radians(cal.ra_deg), np.radians(cal.dec_deg))  # (time, chan)
    tb = ct.table()
    tb.open(ms, nomodify=False)
    try:
        times = tb.getcol("TIME") / 86400.0 + 2400000.5
        t_idx = np.searchsorted(info.times_jd, times)
        rows = tb.nrows()
        step = max(1, rows // info.times_jd.size)
        for start in range(0, rows, step):
            n = min(step, rows - start)
            model = tb.getcol("MODEL_DATA", start, n)  # (pol, chan, row)
            model *= pb[t_idx[start:start + n]].T[None, :, :]
            tb.putcol("MODEL_DATA", model, start, n)
    finally:
        tb.close()


def antenna_data(ms: str) -> tuple[list[str], np.ndarray]:
    """Antenna names and the number of unflagged cross-correlation rows of each."""
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(ms)
    try:
        a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
        good = ~tb.getcol("FLAG").all(axis=(0, 1)) & (a1 != a2)
    finally:
        tb.close()
    tb.open(f"{ms}/ANTENNA")
    names = list(tb.getcol("NAME"))
    tb.close()
    return names, np.bincount(np.concatenate([a1[good], a2[good]]), minlength=len(names))


def choose_refant(names: list[str], counts: np.ndarray, preferred: tuple[str, ...]) -> str:
    """First preferred antenna that has data, else the antenna with the most data."""
    for name in preferred:
        if name in names and counts[names.index(name)] > 0:
            return name
    if counts.max() == 0:
        raise CalibrationError("every cross-correlation is flagged")
    return str(names[int(np.argmax(counts))])


def _table_solutions(path: str):
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(path)
    try:
        out = dict(cparam=tb.getcol("CPARAM"), flag=tb.getcol("FLAG"), snr=tb.getcol("SNR"),
                   ant=tb.getcol("ANTENNA1"), time=tb.getcol("TIME"))
    finally:
        tb.close()
    return out


def solution_qa(caldir: Path, opts: SolveOptions, antennas: np.ndarray) -> dict:
    """QA of the solutions of the ``antennas`` (indices) that had data, with a verdict."""
    g = _table_solutions(str(caldir / GAINS))
    b = _table_solutions(str(caldir / BANDPASS))
    keep = np.isin(g["ant"], antennas)
    g = {k: (v[..., keep] if v.ndim == 3 else v[keep]) for k, v in g.items()}
    b_keep = np.isin(b["ant"], antennas)
    gain, flag, snr = g["cparam"], g["flag"], g["snr"]  # (pol, 1, row)
    good = ~flag
    flagged = float(flag.mean())
    snr_median = float(np.median(snr[good])) if good.any() else 0.0
    amp_scatter, phase_scatter = [], []
    for ant in np.unique(g["ant"]):
        sel = g["ant"] == ant
        for p in range(gain.shape[0]):
            ok = good[p, 0, sel]
            if ok.sum() < 2:
                continue
            vals = gain[p, 0, sel][ok]
            amp_scatter.append(np.std(np.abs(vals)) / np.mean(np.abs(vals)))
            phase_scatter.append(np.degrees(np.median(np.abs(np.angle(vals[1:] * np.conj(vals[:-1]))))))
    amp_s = float(np.median(amp_scatter)) if amp_scatter else float("nan")
    ph_s = float(np.median(phase_scatter)) if phase_scatter else float("nan")
    reasons = []
    if snr_median < opts.qa_min_snr:
        reasons.append(f"median gain SNR {snr_median:.1f} < {opts.qa_min_snr}: calibrator absent or too faint")
    if flagged > opts.qa_max_flagged:
        reasons.append(f"{100 * flagged:.0f}% of gain solutions flagged (limit {100 * opts.qa_max_flagged:.0f}%)")
    if not np.isfinite(ph_s) or ph_s > opts.qa_max_phase_scatter_deg:
        reasons.append(f"gain phase scatter {ph_s:.1f} deg > {opts.qa_max_phase_scatter_deg} deg")
    return {
        "n_antennas": int(np.unique(g["ant"][good.any(axis=(0, 1))]).size),
        "flagged_fraction": flagged,
        "bandpass_flagged_fraction": float(b["flag"][..., b_keep].mean()),
        "amp_scatter": amp_s,
        "phase_scatter_deg": ph_s,
        "snr_median": snr_median,
        "passed": not reasons,
        "reason": "; ".join(reasons) if reasons else "ok",
    }


def median_gain_amplitude(caldir: Path) -> dict[str, float]:
    """Median |g| per antenna (name -> value) over unflagged gain solutions."""
    g = _table_solutions(str(caldir / GAINS))
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(str(caldir / GAINS / "ANTENNA"))
    names = list(tb.getcol("NAME"))
    tb.close()
    out = {}
    for ant in np.unique(g["ant"]):
        sel = g["ant"] == ant
        vals = np.abs(g["cparam"][:, 0, sel])[~g["flag"][:, 0, sel]]
        if vals.size:
            out[names[ant]] = float(np.median(vals))
    return out


def solve(ms: str, caldir: Path, opts: SolveOptions, dec_tolerance_deg: float = 1.5, log=None) -> dict:
    """Solve bandpass and gains on a calibrator group; tables go to ``caldir``.

    ``caldir`` must exist and be private to this job (it is the atomic
    temporary of the product). Returns QA, including the verdict; a failed QA
    still returns (the caller records it) unless nothing could be solved.
    """
    cta = casa_env.casatasks()
    say = log.info if log else print
    info = read_ms_info(ms)
    cal = calibrator_in_group(info, dec_tolerance_deg)
    say(f"calibrator {cal.name}: {cal.flux_jy} Jy at 1.4 GHz, spectral index {cal.spectral_index}")
    work = str(caldir / "work.ms")
    shutil.copytree(ms, work)
    try:
        cta.flagdata(vis=work, mode="manual", autocorr=True, flagbackup=False)
        cta.flagdata(vis=work, mode="clip", clipzeros=True, flagbackup=False)
        if opts.flag_rfi:
            cta.flagdata(vis=work, mode="tfcrop", datacolumn="data", flagbackup=False)
        write_model(work, info, cal)
        names, counts = antenna_data(work)
        refant = choose_refant(names, counts, opts.refant)
        say(f"reference antenna {refant}; {int((counts > 0).sum())} antennas with data")
        pre = str(caldir / "phase.G")
        cta.gaincal(vis=work, caltable=pre, solint="int", calmode="p", refant=refant, minsnr=opts.min_snr)
        cta.bandpass(vis=work, caltable=str(caldir / BANDPASS), solint="inf", combine="scan", refant=refant,
                     solnorm=True, minsnr=opts.min_snr, gaintable=[pre])
        cta.gaincal(vis=work, caltable=str(caldir / GAINS), solint="int", calmode="ap", refant=refant,
                    minsnr=opts.min_snr, gaintable=[str(caldir / BANDPASS)])
        for table in (BANDPASS, GAINS):
            if not (caldir / table).exists():
                raise CalibrationError(f"{ms}: CASA produced no {table} (no data to solve with?)")
        qa = solution_qa(caldir, opts, np.flatnonzero(counts > 0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(caldir / "phase.G", ignore_errors=True)
    transit = calibrator_transits(info.times_jd[0] - 0.01, info.times_jd[-1] + 0.01,
                                  np.degrees(info.pointing_dec_app), 90.0)
    transit = transit[transit["name"] == cal.name].iloc[0]
    qa.update(
        calibrator=str(cal.name),
        refant=refant,
        transit_time=str(transit["transit_utc"]),
        transit_jd=float(transit["transit_jd"]),
        dec_deg=float(np.degrees(info.pointing_dec_app)),
        flux_expected_jy=float(cal.flux_jy),
        gain_amplitudes=median_gain_amplitude(caldir),
    )
    return qa


def check_caltable(caldir: Path) -> None:
    """Raise CalibrationError unless ``caldir`` holds readable bandpass and gain tables."""
    ct = casa_env.casatools()
    tb = ct.table()
    for table in (BANDPASS, GAINS):
        path = caldir / table
        try:
            ok = tb.open(str(path))
            if not ok:
                raise RuntimeError("open failed")
            n = tb.nrows()
            cols = tb.colnames()
            tb.close()
        except RuntimeError as exc:
            raise CalibrationError(f"{path}: corrupted or unreadable calibration table ({exc})") from exc
        if n == 0 or "CPARAM" not in cols:
            raise CalibrationError(f"{path}: calibration table has no solutions")


def averaging_inputs(ms: str) -> dict:
    """The metadata :func:`dsa110_contimg.imaging.averaging.plan_for_observation` needs (no data, no flags)."""
    ct = casa_env.casatools()
    tb = ct.table()
    try:
        tb.open(f"{ms}/FIELD")
        ra, dec = tb.getcol("PHASE_DIR")[:, 0, 0]
        tb.close()
        tb.open(f"{ms}/SPECTRAL_WINDOW")
        freq = tb.getcol("CHAN_FREQ")[:, 0]
        width = float(np.abs(tb.getcol("CHAN_WIDTH")[:, 0]).mean())
        tb.close()
        tb.open(ms)
        a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
        cross = a1 != a2
        uvw = tb.getcol("UVW").T[cross]
        times = tb.getcol("TIME")[cross]
        exposure = float(np.median(tb.getcol("EXPOSURE")))
        tb.close()
    except RuntimeError as exc:
        raise CalibrationError(f"{ms}: cannot read the Measurement Set ({exc})") from exc
    return {"uvw_m": uvw, "time_mjd_s": times, "freq_hz": freq, "chan_width_hz": width,
            "integration_s": exposure, "field_ra_rad": float(ra), "field_dec_rad": float(dec)}


def _callib(caldir: Path, path: Path) -> None:
    """A CASA cal library applying the bandpass (nearest) and the gains (linear in time), as applycal would."""
    path.write_text(
        f"caltable='{caldir / BANDPASS}' calwt=False tinterp='nearest'\n"
        f"caltable='{caldir / GAINS}' calwt=False tinterp='linear'\n"
    )


def apply(ms: str, caldir: Path, out_ms: str, width: int = 1, timebin: int = 1, log=None) -> dict:
    """Write ``ms`` calibrated with ``caldir``'s tables as DATA of a new ``out_ms``, cross-correlations only.

    One pass of CASA ``mstransform`` with on-the-fly calibration (a cal
    library): the corrected data are computed while reading ``ms`` and written
    once, averaged over ``width`` channels and ``timebin`` integrations; flagged
    solutions flag their data (applycal's ``calflag``). The input MS is never
    modified and no copy of it is made. SIGMA_SPECTRUM (imaging reads
    WEIGHT_SPECTRUM) is dropped from the result.
    """
    cta = casa_env.casatasks()
    check_caltable(caldir)
    if width < 1 or timebin < 1:
        raise ValueError(f"averaging factors must be >= 1, got width {width}, timebin {timebin}")
    lib = Path(f"{out_ms}.callib.txt")
    _callib(Path(caldir).resolve(), lib)
    shutil.rmtree(out_ms, ignore_errors=True)
    params = dict(vis=ms, outputvis=out_ms, datacolumn="corrected", docallib=True, callib=str(lib),
                  antenna="*&", chanaverage=width > 1, timeaverage=timebin > 1)
    if width > 1:
        params["chanbin"] = width
    if timebin > 1:
        info = read_ms_info(ms)
        step = float(np.median(np.diff(info.times_jd))) * 86400.0 if info.times_jd.size > 1 else 0.0
        params["timebin"] = f"{step * timebin * 1.0001:.4f}s"
    try:
        ok = cta.mstransform(**params)
    finally:
        lib.unlink(missing_ok=True)
    if ok is False or not Path(out_ms).exists():
        raise CalibrationError(f"{ms}: CASA mstransform of the corrected data failed")
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(out_ms, nomodify=False)
    try:
        if "SIGMA_SPECTRUM" in tb.colnames():
            tb.removecols("SIGMA_SPECTRUM")
    finally:
        tb.close()
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(out_ms)
    try:
        flags = tb.getcol("FLAG")
        a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
        cross = a1 != a2
        flagged = float(flags[:, :, cross].mean()) if cross.any() else 1.0
        times = tb.getcol("TIME")
        n_chan = flags.shape[1]
    finally:
        tb.close()
    if flagged >= 1.0:
        raise CalibrationError(f"{ms}: every visibility is flagged after applying {caldir}")
    info = read_ms_info(out_ms)
    from astropy.time import Time

    return {
        "flagged_fraction": flagged,
        "n_channels": int(n_chan),
        "average_channels": int(width),
        "average_integrations": int(timebin),
        "ra_deg": float(np.degrees(info.field_ra)),
        "dec_deg": float(np.degrees(info.field_dec)),
        "time_start": Time(times.min() / 86400.0, format="mjd").isot,
        "time_end": Time(times.max() / 86400.0, format="mjd").isot,
    }
