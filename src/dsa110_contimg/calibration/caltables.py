"""Bandpass and gain calibration on a calibrator transit, and applying it.

Solve (on the calibrator group's MS, in a private copy: CASA writes MODEL_DATA
and flags into whatever it is given):

1. flag autocorrelations, exact zeros and (optionally) RFI with ``tfcrop``;
2. model: the sky model of :mod:`.skymodel`: the calibrator (flux standards
   at Perley-Butler 2017, secondaries at their list flux times a bootstrapped
   scale) plus the reference-catalogue sources in the beam, each attenuated
   per integration and channel by the primary beam at its offset from that
   integration's pointing (the sky drifts ~1 deg through the beam during one
   observation), predicted exactly into MODEL_DATA;
3. a phase-only gain per integration, then a bandpass (one solution per
   channel over the whole observation, amplitude normalised; smoothed over
   channels when its predicted per-channel SNR is low, :mod:`.bandpass`), then
   complex gains per integration (``faint_gain_solint`` for a faint
   calibrator) with the bandpass applied.

CASA gains are the complex conjugates of the simulator's (pyuvdata-convention)
gains; see ``tests/test_calibration.py``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg.calibration import bandpass, msmeta, skymodel
from dsa110_contimg.calibration.calibrators import load_calibrators
from dsa110_contimg.calibration.transits import calibrator_transits

from .. import beam, casa_env, geometry
from ..config import default
from ..constants import MJD_ZERO_JD, SECONDS_PER_DAY

BANDPASS = "bandpass.B"
GAINS = "gains.G"


class CalibrationError(RuntimeError):
    """A calibration that cannot be solved or applied; the message says why."""


@dataclass(frozen=True)
class SolveOptions:
    """How to solve."""

    refant: tuple[str, ...] = default("calibration.refant")
    """Reference antenna names in order of preference; empty: the antenna with most data."""
    flag_rfi: bool = default("calibration.flag_rfi")
    """Run CASA flagdata tfcrop on the calibrator data before solving."""
    min_snr: float = 3.0
    """Solutions below this SNR are flagged by CASA."""
    qa_min_snr: float = default("calibration.qa_min_snr")
    """QA fails when the median gain SNR is below this (calibrator absent or too faint)."""
    qa_max_flagged: float = default("calibration.qa_max_flagged")
    """QA fails when more than this fraction of gain solutions is flagged."""
    qa_max_phase_scatter_deg: float = 20.0
    """QA fails when gain phases jump more than this between integrations (median)."""
    skymodel: skymodel.SkyModelOptions | None = None
    """What the sky model holds besides the calibrator (None: the calibrator alone)."""
    gain_solint: str = default("calibration.gain_solint")
    """CASA solution interval of the complex gains."""
    faint_gain_solint: str = default("calibration.faint_gain_solint")
    """... used instead when the calibrator's apparent flux at transit is below ``faint_calibrator_jy``."""
    faint_calibrator_jy: float = default("calibration.faint_calibrator_jy")
    """Apparent (beam-attenuated) calibrator flux below which ``faint_gain_solint`` is used."""
    bandpass_target_snr: float = default("calibration.bandpass_target_snr")
    """Per-channel bandpass SNR below which the bandpass is smoothed (:mod:`.bandpass`), to reach this."""
    bandpass_max_smooth_mhz: float = default("calibration.bandpass_max_smooth_mhz")
    """The smoothing window never spans more than this (MHz)."""
    sefd_jy: float = default("imaging.sefd_jy")
    """SEFD of one dish and polarisation (Jy), for the predicted bandpass SNR."""


@dataclass(frozen=True)
class MsInfo:
    """What the calibration needs to know about an MS."""

    field_ra: float  # rad, ICRS
    field_dec: float
    times_jd: np.ndarray  # unique integration centres
    freq_hz: np.ndarray
    antenna_names: list[str]
    pointing_dec_app: float  # rad, apparent
    chan_width_hz: float = float("nan")
    integration_s: float = float("nan")


def read_ms_info(ms: str) -> MsInfo:
    tb = casa_env.casatools().table()
    try:
        meta = msmeta.read(ms)
        tb.open(f"{ms}/ANTENNA")
        try:
            names = list(tb.getcol("NAME"))
        finally:
            tb.close()
        tb.open(ms)
        try:
            times = np.unique(tb.getcol("TIME")) / SECONDS_PER_DAY + MJD_ZERO_JD
            exposure = float(np.median(tb.getcol("EXPOSURE")))
        finally:
            tb.close()
    except RuntimeError as exc:
        raise CalibrationError(f"{ms}: cannot read the Measurement Set ({exc})") from exc
    mid = float(times.mean())
    _, dec_app = geometry.icrs_to_apparent(mid, meta.ra_rad, meta.dec_rad)
    return MsInfo(meta.ra_rad, meta.dec_rad, times, meta.freq_hz, names, float(dec_app), meta.chan_width_hz, exposure)


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


def calibrator_in_group(info: MsInfo, dec_tolerance_deg: float = 1.5, calibrators: pd.DataFrame | None = None):
    """The catalogue calibrator transiting during this MS's observation that is brightest in the
    beam (a table row with its name in ``name``); ``calibrators`` defaults to :func:`load_calibrators`."""
    cat = load_calibrators() if calibrators is None else calibrators
    half = (info.times_jd[-1] - info.times_jd[0]) / 2 + 7 / 86400
    found = calibrator_transits(info.times_jd[0] - half, info.times_jd[-1] + half,
                                np.degrees(info.pointing_dec_app), tolerance_deg=dec_tolerance_deg, catalogue=cat)
    if found.empty:
        raise CalibrationError(
            f"no catalogue calibrator within {dec_tolerance_deg} deg of dec "
            f"{np.degrees(info.pointing_dec_app):.2f} transits during this observation"
        )
    name = found.sort_values("apparent_jy", ascending=False).iloc[0]["name"]
    return cat.set_index("name").loc[name].to_dict() | {"name": name}


def write_model(ms: str, info: MsInfo, cal, catalogue: pd.DataFrame | None,
                opts: skymodel.SkyModelOptions | None, flux_scale: float = 1.0) -> dict:
    """MODEL_DATA = the sky model (calibrator + catalogue sources in the beam) x primary beam."""
    sky_opts = opts or skymodel.SkyModelOptions(min_apparent_jy=np.inf, radius_deg=0.0, spectral_index=-0.7)
    model = skymodel.build_model(cal, catalogue if opts else None, info.times_jd, info.pointing_dec_app,
                                 sky_opts, flux_scale=flux_scale)
    summary = skymodel.write_model(ms, model, info.pointing_dec_app)
    summary["components"] = [f"{r.name} {r.flux_jy:.3f} Jy" for r in model.itertuples()]
    return summary


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


def median_gain_amplitude(caldir: Path, per_pol: bool = False) -> dict:
    """Median |g| per antenna (name -> value) over unflagged gain solutions; with ``per_pol``,
    name -> [X, Y] (null for a polarisation without solutions)."""
    g = _table_solutions(str(caldir / GAINS))
    ct = casa_env.casatools()
    tb = ct.table()
    tb.open(str(caldir / GAINS / "ANTENNA"))
    try:
        names = list(tb.getcol("NAME"))
    finally:
        tb.close()
    out = {}
    for ant in np.unique(g["ant"]):
        sel = g["ant"] == ant
        amp, ok = np.abs(g["cparam"][:, 0, sel]), ~g["flag"][:, 0, sel]
        if per_pol:
            pols = [float(np.median(amp[p][ok[p]])) if ok[p].any() else None for p in range(amp.shape[0])]
            if any(v is not None for v in pols):
                out[names[ant]] = pols
        elif ok.any():
            out[names[ant]] = float(np.median(amp[ok]))
    return out


def _solve_tables(ms: str, work: str, caldir: Path, refant: str, opts: SolveOptions, solint: str = "int",
                  bandpass_window: int = 1) -> dict | None:
    """Phase-only gains per integration, bandpass over the observation (smoothed over
    ``bandpass_window`` channels when > 1, :mod:`.bandpass`), then complex gains. Returns the
    smoothing record (None without smoothing)."""
    cta = casa_env.casatasks()
    pre = str(caldir / "phase.G")
    shutil.rmtree(pre, ignore_errors=True)
    cta.gaincal(vis=work, caltable=pre, solint="int", calmode="p", refant=refant, minsnr=opts.min_snr)
    cta.bandpass(vis=work, caltable=str(caldir / BANDPASS), solint="inf", combine="scan", refant=refant,
                 solnorm=True, minsnr=opts.min_snr, gaintable=[pre])
    smoothed = None
    if bandpass_window > 1 and (caldir / BANDPASS).exists():
        smoothed = bandpass.smooth_table(str(caldir / BANDPASS), bandpass_window)
    cta.gaincal(vis=work, caltable=str(caldir / GAINS), solint=solint, calmode="ap", refant=refant,
                minsnr=opts.min_snr, gaintable=[str(caldir / BANDPASS)])
    for table in (BANDPASS, GAINS):
        if not (caldir / table).exists():
            raise CalibrationError(f"{ms}: CASA produced no {table} (no data to solve with?)")
    return smoothed


def bandpass_smoothing(effective_jy: float, n_ant: int, info: MsInfo, opts: SolveOptions) -> bandpass.SmoothingChoice:
    """The bandpass smoothing rule (:mod:`.bandpass`) for a model of ``effective_jy`` and this MS."""
    snr = bandpass.channel_snr(effective_jy, n_ant, len(info.times_jd), info.chan_width_hz, info.integration_s,
                               opts.sefd_jy)
    return bandpass.choose_window(snr, opts.bandpass_target_snr, info.chan_width_hz, 1e6 * opts.bandpass_max_smooth_mhz)


def fit_calibrator_flux(work: str, caldir: Path, info: MsInfo, cal, catalogue, sky_opts, flux_scale: float,
                        max_ratio_err: float = 0.02) -> dict:
    """The calibrator's flux over its model flux, fitted with its field on the calibrated data.

    ``used`` is True when the fit is good to ``max_ratio_err`` (the field is bright enough).
    """
    cta = casa_env.casatasks()
    cta.applycal(vis=work, gaintable=[str(caldir / BANDPASS), str(caldir / GAINS)], calwt=False,
                 flagbackup=False, applymode="calonly")
    model = skymodel.build_model(cal, catalogue, info.times_jd, info.pointing_dec_app, sky_opts, flux_scale)
    groups = [np.array([0]), np.arange(1, len(model))]
    a, err = skymodel.fit_scales(work, model, groups, info.pointing_dec_app)
    ratio = float(a[0] / a[1])
    ratio_err = float(abs(ratio) * np.hypot(err[0] / a[0], err[1] / a[1]))
    return {"ratio": ratio, "ratio_err": ratio_err, "calibrator_factor": float(a[0]), "field_factor": float(a[1]),
            "used": bool(np.isfinite(ratio) and ratio > 0 and ratio_err <= max_ratio_err)}


def solve(ms: str, caldir: Path, opts: SolveOptions, dec_tolerance_deg: float = 1.5, log=None,
          catalogue: pd.DataFrame | None = None, calibrators: pd.DataFrame | None = None,
          flux_scale: float = 1.0) -> dict:
    """Solve bandpass and gains on a calibrator group; tables go to ``caldir``.

    ``caldir`` must exist and be private to this job (it is the atomic
    temporary of the product). ``catalogue`` is the reference catalogue for
    the sky model (None: the calibrator alone), ``calibrators`` the calibrator
    list (default :func:`load_calibrators`), ``flux_scale`` a secondary
    calibrator's bootstrapped flux over its list flux. Returns QA, including
    the verdict; a failed QA still returns (the caller records it) unless
    nothing could be solved.
    """
    cta = casa_env.casatasks()
    say = log.info if log else print
    info = read_ms_info(ms)
    cal = calibrator_in_group(info, dec_tolerance_deg, calibrators)
    is_standard = bool(cal.get("flux_standard"))
    say(f"calibrator {cal['name']}: {cal['flux_jy']:.3f} Jy at 1.4 GHz "
        + ("(Perley-Butler 2017)" if is_standard else f"(VLA list, x {flux_scale:.3f} bootstrapped)"))
    work = str(caldir / "work.ms")
    shutil.copytree(ms, work)
    try:
        cta.flagdata(vis=work, mode="manual", autocorr=True, flagbackup=False)
        cta.flagdata(vis=work, mode="clip", clipzeros=True, flagbackup=False)
        if opts.flag_rfi:
            cta.flagdata(vis=work, mode="tfcrop", datacolumn="data", flagbackup=False)
        model_qa = write_model(work, info, cal, catalogue, opts.skymodel, flux_scale)
        say(f"sky model: {model_qa['n_components']} components, {model_qa['field_jy_1400']:.2f} Jy of field sources")
        names, counts = antenna_data(work)
        refant = choose_refant(names, counts, opts.refant)
        say(f"reference antenna {refant}; {int((counts > 0).sum())} antennas with data")
        apparent = float(cal["flux_jy"]) * (1.0 if is_standard else flux_scale) * float(
            skymodel.beam_track(info.times_jd, info.pointing_dec_app, np.radians(cal["ra_deg"]),
                                np.radians(cal["dec_deg"]), np.array([1.4e9])).max())
        solint = opts.gain_solint if apparent >= opts.faint_calibrator_jy else opts.faint_gain_solint
        say(f"{cal['name']}: {apparent:.2f} Jy in the beam at transit: gains every {solint}")
        smoothing = bandpass_smoothing(model_qa["effective_jy"], int((counts > 0).sum()), info, opts)
        say(f"bandpass: predicted SNR {smoothing.snr_channel:.0f} per channel (model {model_qa['effective_jy']:.2f} Jy "
            f"effective); " + (f"smoothed over {smoothing.window} channels (SNR {smoothing.snr_smoothed:.0f})"
                               if smoothing.window > 1 else "per channel"))
        smoothed = _solve_tables(ms, work, caldir, refant, opts, solint, smoothing.window)
        fit = None
        if not is_standard and model_qa["n_components"] > 1:
            # A secondary's list flux is approximate: fit it against its field (the catalogue's
            # scale), make the model consistent, solve again. The absolute scale is then set by a
            # flux standard when applied (bootstrap.py).
            fit = fit_calibrator_flux(work, caldir, info, cal, catalogue, opts.skymodel, flux_scale)
            if fit["used"]:
                say(f"{cal['name']}: flux fitted against its field: {fit['ratio']:.3f} +- {fit['ratio_err']:.3f} "
                    "x the list's; solving again")
                flux_scale = flux_scale * fit["ratio"]
                model_qa = write_model(work, info, cal, catalogue, opts.skymodel, flux_scale)
                for table in (BANDPASS, GAINS):
                    shutil.rmtree(caldir / table, ignore_errors=True)
                smoothed = _solve_tables(ms, work, caldir, refant, opts, solint, smoothing.window)
        qa = solution_qa(caldir, opts, np.flatnonzero(counts > 0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(caldir / "phase.G", ignore_errors=True)
    transit = calibrator_transits(info.times_jd[0] - 0.01, info.times_jd[-1] + 0.01,
                                  np.degrees(info.pointing_dec_app), 90.0,
                                  catalogue=load_calibrators() if calibrators is None else calibrators)
    transit = transit[transit["name"] == cal["name"]].iloc[0]
    qa.update(
        calibrator=str(cal["name"]),
        flux_standard=is_standard,
        flux_scale=1.0 if is_standard else float(flux_scale),
        flux_fit=fit,
        apparent_jy=apparent,
        gain_solint=solint,
        bandpass_smoothing=smoothing.record() | (smoothed or {}),
        skymodel=model_qa,
        refant=refant,
        transit_time=str(transit["transit_utc"]),
        transit_jd=float(transit["transit_jd"]),
        dec_deg=float(np.degrees(info.pointing_dec_app)),
        flux_expected_jy=float(cal["flux_jy"]) * (1.0 if is_standard else float(flux_scale)),
        gain_amplitudes=median_gain_amplitude(caldir),
        gain_amplitudes_pol=median_gain_amplitude(caldir, per_pol=True),
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
    tb = casa_env.casatools().table()
    try:
        meta = msmeta.read(ms)
        tb.open(ms)
        try:
            a1, a2 = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2")
            cross = a1 != a2
            uvw = tb.getcol("UVW").T[cross]
            times = tb.getcol("TIME")[cross]
            exposure = float(np.median(tb.getcol("EXPOSURE")))
        finally:
            tb.close()
    except RuntimeError as exc:
        raise CalibrationError(f"{ms}: cannot read the Measurement Set ({exc})") from exc
    return {"uvw_m": uvw, "time_mjd_s": times, "freq_hz": meta.freq_hz, "chan_width_hz": meta.chan_width_hz,
            "integration_s": exposure, "field_ra_rad": meta.ra_rad, "field_dec_rad": meta.dec_rad}


def _callib(caldir: Path, path: Path) -> None:
    """A CASA cal library applying the bandpass (nearest) and the gains (linear in time), as applycal would."""
    path.write_text(
        f"caltable='{caldir / BANDPASS}' calwt=False tinterp='nearest'\n"
        f"caltable='{caldir / GAINS}' calwt=False tinterp='linear'\n"
    )


def drop_uniform_weight_spectrum(tb, chunk_rows: int = 20000, rtol: float = 1e-6) -> bool:
    """Remove WEIGHT_SPECTRUM from the table open (writable) in ``tb`` when every channel of every row and
    polarisation carries that row's WEIGHT; True when removed.

    Then it adds nothing: CASA, WSClean and python-casacore readers fall back
    to WEIGHT, and every later reader (imaging's inspection, each WSClean
    pass) reads 1/n_channels of the bytes. Flagged samples count too: a
    spectrum that is zero where flagged is not uniform and is kept.
    """
    if "WEIGHT_SPECTRUM" not in tb.colnames():
        return False
    n = tb.nrows()
    for start in range(0, n, chunk_rows):
        k = min(chunk_rows, n - start)
        try:
            ws = tb.getcol("WEIGHT_SPECTRUM", start, k)  # (P, F, R)
        except RuntimeError:  # cells undefined: leave the column as it is
            return False
        w = tb.getcol("WEIGHT", start, k)  # (P, R)
        if not np.allclose(ws, w[:, None, :], rtol=rtol, atol=0.0):
            return False
    tb.removecols("WEIGHT_SPECTRUM")
    return True


def apply(ms: str, caldir: Path, out_ms: str, width: int = 1, timebin: int = 1, log=None) -> dict:
    """Write ``ms`` calibrated with ``caldir``'s tables as DATA of a new ``out_ms``, cross-correlations only.

    One pass of CASA ``mstransform`` with on-the-fly calibration (a cal
    library): the corrected data are computed while reading ``ms`` and written
    once, averaged over ``width`` channels and ``timebin`` integrations; flagged
    solutions flag their data (applycal's ``calflag``). The input MS is never
    modified and no copy of it is made. SIGMA_SPECTRUM (imaging reads
    WEIGHT_SPECTRUM) is dropped from the result, and so is WEIGHT_SPECTRUM when
    it says no more than WEIGHT (:func:`drop_uniform_weight_spectrum`).
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
        dropped = drop_uniform_weight_spectrum(tb)
    finally:
        tb.close()
    if log is not None and dropped:
        log.info("%s: WEIGHT_SPECTRUM equals WEIGHT in every channel: dropped (imagers read WEIGHT)", out_ms)
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
