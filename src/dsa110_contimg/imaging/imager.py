"""Images of one calibrated observation: WSClean or CASA tclean, with the same parameters.

A calibrated Measurement Set has one field, the meridian at the observation's
mid time (ICRS), so both imagers make one image around that phase centre from
all 24 integrations (no smearing across the correlator's per-integration phase
centres). Stokes I, multi-frequency synthesis over the whole band, Hogbom
CLEAN, Briggs weighting; the cell size follows from the longest unflagged
baseline when the config does not give it.

Process layout: this module never imports casatools. The Measurement Set is
inspected with python-casacore (:func:`inspect_ms`); tclean runs in a child
Python (``python -m dsa110_contimg.imaging.imager tclean <request.json>``) with the
offline CASA set-up of :mod:`dsa110_contimg.casa_env`, and WSClean is its own
program. So the stage works from Snakemake, from the tests (whose process has
python-casacore loaded) and from a cluster job alike, and a crashing imager
cannot take the caller down.

Outputs of :func:`run_imager` are 2-D FITS images (RA, Dec; the degenerate
frequency and Stokes axes are dropped and the frequency written as keywords
``FREQ``, ``BANDWID``), named ``<prefix>.{image,residual,psf,model}.fits``
whichever imager made them, in Jy/beam (model: Jy/pixel). The image is then
restored again here from model and residual with a Gaussian fitted to the
PSF's main lobe (:func:`fit_restoring_beam`, :func:`restore`), the same way
for both imagers, and that beam is in ``BMAJ``/``BMIN``/``BPA`` of every
product: WSClean's own beam is ~12% narrower than the PSF's core for this
array, which would lower restored peaks by 2-3% and make the imagers disagree.

Checked against simulations (tests/test_imaging.py): the Briggs-weighted noise
below agrees with noise-only images from WSClean within 3%; uniform weighting
is only approximate (WSClean's noise is 25% lower than predicted).

Thermal noise (:func:`expected_noise`): each cross-correlation sample of one
polarisation has noise sigma = SEFD / sqrt(2 dnu tau) per real and imaginary
part (the radiometer equation for one baseline: dnu the channel width, tau the
integration time). Stokes I = (XX + YY) / 2 averages the n_p unflagged
polarisations, so sigma_I^2 = sigma^2 / n_p. An image pixel is the real part
of the weighted mean of the visibilities, so with imaging weights w_i

    sigma_image = sqrt(sum_i w_i^2 sigma_I,i^2) / sum_i w_i     (Jy/beam),

which for natural weighting and N identical samples is the familiar
SEFD / sqrt(n_pol N_ant (N_ant - 1) B T) with n_pol = 2, B the bandwidth and T
the observation time. The Briggs weights w_i are recomputed here exactly as
the imagers do: w = w_nat / (1 + W_k f^2), f^2 = (5 10^-R)^2 / (sum_k W_k^2 /
sum_i w_nat,i), with W_k the natural weight gridded (with the Hermitian
conjugates) on the image's uv cells.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import default, options
from ..constants import C_M_S, MJD_ZERO_JD, SECONDS_PER_DAY
from . import field as fieldsize

ARCSEC = np.pi / 180 / 3600

log = logging.getLogger("dsa110_contimg")

IMAGERS = ("wsclean", "tclean")
WEIGHTINGS = ("briggs", "natural", "uniform")
PRODUCTS = ("image", "residual", "psf", "model")


class ImagingError(RuntimeError):
    """An observation that cannot be imaged; the message names the MS and the problem."""


@dataclass(frozen=True)
class ImagingOptions:
    """How to image (the config's ``imaging`` section)."""

    imager: str = default("imaging.imager")
    """``wsclean`` (used when the program is found, tclean otherwise) or ``tclean``."""
    imsize: int | None = default("imaging.imsize")
    """Image width and height in pixels; None: the field where the primary beam reaches ``pb_cutoff``
    (:mod:`dsa110_contimg.imaging.field`)."""
    cell_arcsec: float | None = default("imaging.cell_arcsec")
    """Pixel size; None: the finest fringe (lambda_min / B_max) / ``pixels_per_beam``."""
    pixels_per_beam: float = default("imaging.pixels_per_beam")
    weighting: str = default("imaging.weighting")
    robust: float = default("imaging.robust")
    """Briggs robustness (-2 ~ uniform, +2 ~ natural)."""
    niter: int = default("imaging.niter")
    """Maximum number of CLEAN components."""
    gain: float = default("imaging.gain")
    """Minor-cycle loop gain."""
    mgain: float = default("imaging.mgain")
    """Major-cycle gain (WSClean ``-mgain``): a major cycle starts once the peak fell by this fraction."""
    cyclefactor: float = default("imaging.cyclefactor")
    """tclean's major-cycle trigger (its counterpart of mgain)."""
    max_major_cycles: int = default("imaging.max_major_cycles")
    """At most this many major cycles (WSClean ``-nmiter``, tclean ``nmajor``); 0: no limit."""
    auto_threshold: float = default("imaging.auto_threshold")
    """Stop CLEAN at this many sigma of the residual (WSClean -auto-threshold, tclean nsigma)."""
    auto_mask: float | None = default("imaging.auto_mask")
    """Grow a clean mask from peaks above this many sigma (WSClean -auto-mask; tclean
    auto-multithresh noisethreshold); None: clean the whole image."""
    spectral_terms: int = default("imaging.spectral_terms")
    """Terms of the sky's spectrum that CLEAN fits over the band: 1, one flat spectrum per component;
    2, a flux and a spectral slope (WSClean -join-channels -fit-spectral-pol 2, tclean mtmfs nterms 2)."""
    spectral_channels: int = default("imaging.spectral_channels")
    """WSClean -channels-out with spectral_terms > 1: the band is imaged in this many parts."""
    wproject_planes: int = default("imaging.wproject_planes")
    """tclean w-projection planes (-1: automatic; 0: no w-projection)."""
    wsclean_gridder: str = default("imaging.wsclean_gridder")
    """WSClean's gridder: ``wgridder`` (exact w-gridding) or ``wstacking`` (its default, whose
    automatic number of w-layers is too small here: -1.5% flux and 0.7" at 1.2 deg off axis)."""
    wgridder_accuracy: float = default("imaging.wgridder_accuracy")
    """Requested accuracy of the wgridder (WSClean -wgridder-accuracy)."""
    data_column: str = "DATA"
    pb_cutoff: float = default("imaging.pb_cutoff")
    """Primary-beam level below which the corrected image is blanked."""
    smearing_correction: str = default("imaging.smearing_correction")
    """Multiply the smearing response into the primary beam: ``averaging`` (what averaging added),
    ``total`` or ``none`` (:mod:`dsa110_contimg.imaging.smearing_map`)."""
    sefd_jy: float = default("imaging.sefd_jy")
    """System equivalent flux density of one dish and polarisation, for the thermal noise."""
    wsclean: str = default("imaging.wsclean")
    """WSClean executable (name on PATH or a path)."""

    def __post_init__(self) -> None:
        if self.imager not in IMAGERS:
            raise ValueError(f"imager must be one of {IMAGERS}, got {self.imager!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.wsclean_gridder not in ("wgridder", "wstacking"):
            raise ValueError(f"wsclean_gridder must be wgridder or wstacking, got {self.wsclean_gridder!r}")
        if self.imsize is not None and (self.imsize < 16 or self.imsize % 2):
            raise ValueError(f"imsize must be an even number >= 16, got {self.imsize}")

    @classmethod
    def from_config(cls, config: dict) -> ImagingOptions:
        """Options from a validated config (its ``imaging`` section; unknown keys ignored)."""
        return options(cls, config["imaging"])


# ----------------------------------------------------------- MS inspection


@dataclass
class MSInfo:
    """What imaging needs to know about a Measurement Set (read with python-casacore)."""

    path: str
    field_ra_rad: float
    field_dec_rad: float
    field_name: str
    freq_hz: np.ndarray  # (F,)
    chan_width_hz: np.ndarray  # (F,), positive
    times_mjd_s: np.ndarray  # (T,) unique integration mid times
    n_rows: int
    n_antennas: int  # antennas with unflagged cross-correlations
    n_cross: int  # cross-correlation rows (unflagged or not)
    n_cross_samples: int  # cross rows x channels x polarisations
    n_unflagged: int  # unflagged cross samples
    n_nonzero: int  # unflagged cross samples with nonzero data (0 when all are zero)
    max_baseline_m: float  # longest unflagged cross baseline (uv distance)
    # Per unflagged cross row: uvw (m), integration index, exposure (s).
    uvw: np.ndarray = field(repr=False)
    t_index: np.ndarray = field(repr=False)
    exposure_s: np.ndarray = field(repr=False)
    # Per unflagged cross row and channel: natural Stokes-I weight (sum over the
    # unflagged polarisations of WEIGHT_SPECTRUM) and number of unflagged polarisations.
    weight: np.ndarray = field(repr=False)
    n_pol: np.ndarray = field(repr=False)

    @property
    def mid_jd(self) -> float:
        return float(self.times_mjd_s.mean() / SECONDS_PER_DAY + MJD_ZERO_JD)

    @property
    def jd(self) -> np.ndarray:
        return self.times_mjd_s / SECONDS_PER_DAY + MJD_ZERO_JD

    @property
    def flagged_fraction(self) -> float:
        return 1.0 - self.n_unflagged / max(self.n_cross_samples, 1)


def inspect_ms(ms: str | os.PathLike, chunk_rows: int = 20000, data_column: str = "DATA") -> MSInfo:
    """Read the metadata, flags and weights imaging needs; check there is something to image.

    Raises :class:`ImagingError` when the MS is missing, has more than one
    field or spectral window, every cross-correlation is flagged, or every
    unflagged visibility is zero.
    """
    from casacore import tables

    ms = os.fspath(ms)
    if not os.path.isdir(ms):
        raise ImagingError(f"{ms}: no such Measurement Set")
    try:
        with tables.table(os.path.join(ms, "FIELD"), ack=False) as t:
            if t.nrows() != 1:
                raise ImagingError(f"{ms}: {t.nrows()} fields; imaging expects the single meridian field")
            ra0, dec0 = (float(x) for x in t.getcol("PHASE_DIR")[0, 0])
            name = str(t.getcol("NAME")[0])
        with tables.table(os.path.join(ms, "SPECTRAL_WINDOW"), ack=False) as t:
            if t.nrows() != 1:
                raise ImagingError(f"{ms}: {t.nrows()} spectral windows; imaging expects one")
            freq = np.asarray(t.getcol("CHAN_FREQ")[0], float)
            width = np.abs(np.asarray(t.getcol("CHAN_WIDTH")[0], float))
        main = tables.table(ms, ack=False)
    except RuntimeError as exc:
        raise ImagingError(f"{ms}: not a readable Measurement Set ({exc})") from exc
    try:
        n_rows = main.nrows()
        cols = set(main.colnames())
        if data_column not in cols:
            raise ImagingError(f"{ms}: no {data_column} column")
        has_ws = "WEIGHT_SPECTRUM" in cols and main.iscelldefined("WEIGHT_SPECTRUM", 0) if n_rows else False
        times_all = main.getcol("TIME")
        times = np.unique(times_all)
        uvw_l, t_l, exp_l, w_l, np_l = [], [], [], [], []
        antennas: set[int] = set()
        n_cross = n_samples = n_unflagged = n_nonzero = 0
        for start in range(0, n_rows, chunk_rows):
            n = min(chunk_rows, n_rows - start)
            a1 = main.getcol("ANTENNA1", start, n)
            a2 = main.getcol("ANTENNA2", start, n)
            cross = a1 != a2
            if not cross.any():
                continue
            flag = main.getcol("FLAG", start, n)[cross]  # (r, F, P)
            if "FLAG_ROW" in cols:
                flag |= main.getcol("FLAG_ROW", start, n)[cross][:, None, None]
            usable = ~flag
            n_cross += int(cross.sum())
            n_samples += flag.size
            n_ok = int(usable.sum())
            n_unflagged += n_ok
            if n_ok and n_nonzero == 0:
                data = main.getcol(data_column, start, n)[cross]
                n_nonzero += int(np.count_nonzero((data != 0) & usable))
            if has_ws:
                ws = main.getcol("WEIGHT_SPECTRUM", start, n)[cross]
            else:
                ws = np.broadcast_to(main.getcol("WEIGHT", start, n)[cross][:, None, :], flag.shape)
            w = np.where(usable, ws, 0).sum(axis=2).astype(np.float32)
            npol = usable.sum(axis=2).astype(np.uint8)
            keep = npol.any(axis=1)
            if not keep.any():
                continue
            antennas.update(a1[cross][keep].tolist())
            antennas.update(a2[cross][keep].tolist())
            uvw_l.append(main.getcol("UVW", start, n)[cross][keep])
            t_l.append(np.searchsorted(times, times_all[start:start + n][cross][keep]))
            exp_l.append(main.getcol("EXPOSURE", start, n)[cross][keep])
            w_l.append(w[keep])
            np_l.append(npol[keep])
    finally:
        main.close()

    if n_cross == 0:
        raise ImagingError(f"{ms}: no cross-correlations to image")
    if n_unflagged == 0:
        raise ImagingError(f"{ms}: every cross-correlation visibility is flagged; nothing to image")
    if n_nonzero == 0:
        raise ImagingError(f"{ms}: every unflagged visibility in {data_column} is zero; nothing to image")
    uvw = np.concatenate(uvw_l)
    return MSInfo(
        path=ms,
        field_ra_rad=ra0,
        field_dec_rad=dec0,
        field_name=name,
        freq_hz=freq,
        chan_width_hz=width,
        times_mjd_s=times,
        n_rows=n_rows,
        n_antennas=len(antennas),
        n_cross=n_cross,
        n_cross_samples=n_samples,
        n_unflagged=n_unflagged,
        n_nonzero=n_nonzero,
        max_baseline_m=float(np.hypot(uvw[:, 0], uvw[:, 1]).max()),
        uvw=uvw,
        t_index=np.concatenate(t_l),
        exposure_s=np.concatenate(exp_l),
        weight=np.concatenate(w_l),
        n_pol=np.concatenate(np_l),
    )


# ------------------------------------------------------------- parameters


def cell_size_arcsec(info: MSInfo, pixels_per_beam: float = 3.0) -> float:
    """Pixel size: lambda at the highest frequency over the longest baseline, / pixels_per_beam.

    Rounded down to three significant figures.
    """
    if info.max_baseline_m <= 0:
        raise ImagingError(f"{info.path}: longest unflagged baseline has zero length")
    return fieldsize.cell_arcsec(float(info.freq_hz.max()), info.max_baseline_m, pixels_per_beam)


def natural_weights_tf(info: MSInfo) -> np.ndarray:
    """Sum of the natural weights per (integration, channel), shape (T, F)."""
    out = np.zeros((info.times_mjd_s.size, info.freq_hz.size))
    for t in range(out.shape[0]):
        out[t] = info.weight[info.t_index == t].sum(axis=0)
    return out


def derive_field(info: MSInfo, opts: ImagingOptions) -> fieldsize.FieldSize:
    """Image size (to the primary beam's ``pb_cutoff``) and cell (from the synthesised beam) for ``info``."""
    from . import primary_beam

    if info.max_baseline_m <= 0:
        raise ImagingError(f"{info.path}: longest unflagged baseline has zero length")
    dec_app = primary_beam.pointing_declination(info.field_ra_rad, info.field_dec_rad, info.mid_jd)
    pointing = primary_beam.make_pointing(info.jd, info.freq_hz, natural_weights_tf(info), dec_app)
    half = fieldsize.beam_half_width_rad(pointing, info.field_ra_rad, info.field_dec_rad, opts.pb_cutoff)
    return fieldsize.field_size(half, float(info.freq_hz.max()), info.max_baseline_m, opts.pixels_per_beam,
                            cell=opts.cell_arcsec)


def resolve_options(opts: ImagingOptions, info: MSInfo, log_: logging.Logger | None = None) -> ImagingOptions:
    """Fill in what depends on the data or the machine: the image size, the cell size and the imager."""
    lg = log_ or log
    if opts.imsize is None:
        size = derive_field(info, opts)
        opts = replace(opts, imsize=size.imsize, cell_arcsec=size.cell_arcsec)
        lg.info("image %d^2 at %.3g arcsec (%.2f deg): the primary beam reaches %.2g at %.2f deg from the centre; "
                "finest fringe %.3g arcsec (longest baseline %.0f m) / %g", size.imsize, size.cell_arcsec,
                size.field_deg, opts.pb_cutoff, size.half_width_deg, size.fringe_arcsec, info.max_baseline_m,
                opts.pixels_per_beam)
    elif opts.cell_arcsec is None:
        opts = replace(opts, cell_arcsec=cell_size_arcsec(info, opts.pixels_per_beam))
        lg.info("cell size %.3g arcsec from the longest baseline (%.0f m)", opts.cell_arcsec, info.max_baseline_m)
    if opts.imager == "wsclean" and shutil.which(opts.wsclean) is None:
        lg.warning("imager wsclean chosen but %r is not installed: using CASA tclean", opts.wsclean)
        opts = replace(opts, imager="tclean")
    return opts


# --------------------------------------------------------- weights, noise


@dataclass(frozen=True)
class NoiseEstimate:
    """Expected thermal noise of the image and the weights of each (integration, channel)."""

    sigma_jy: float
    """Expected rms of the Stokes I image (Jy/beam)."""
    natural_sigma_jy: float
    """The same for natural weighting (the best the data can do)."""
    weights_tf: np.ndarray
    """Total imaging weight per (integration, channel), shape (T, F): the primary beam's averaging weights."""
    n_samples: int
    """Unflagged Stokes I samples (cross rows x channels)."""
    sample_channels: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    """A few channels spread over the band (indices) whose imaging weights are kept in ``sample_weights``."""
    sample_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Imaging weight of every unflagged cross row (as ``MSInfo.uvw``) in each of ``sample_channels``,
    shape (R, len(sample_channels)): what the smearing response is averaged with."""


def _grid_index(u_lambda: np.ndarray, v_lambda: np.ndarray, imsize: int, cell_rad: float) -> np.ndarray:
    """Flat index of the uv cell of each (u, v) (-1 outside the grid)."""
    du = 1.0 / (imsize * cell_rad)
    iu = np.rint(u_lambda / du).astype(np.int64) + imsize // 2
    iv = np.rint(v_lambda / du).astype(np.int64) + imsize // 2
    inside = (iu >= 0) & (iu < imsize) & (iv >= 0) & (iv < imsize)
    return np.where(inside, iv * imsize + iu, -1)


def expected_noise(
    info: MSInfo, opts: ImagingOptions, chunk_channels: int = 32, n_sample_channels: int = 8
) -> NoiseEstimate:
    """Thermal noise of the image from the radiometer equation and the imaging weights.

    See the module docstring for the formula. ``opts.cell_arcsec`` must be set.
    The imaging weights of ``n_sample_channels`` channels spread evenly over
    the band are kept (for the smearing response).
    """
    if opts.cell_arcsec is None:
        raise ValueError("expected_noise needs the cell size (resolve_options first)")
    cell = opts.cell_arcsec * ARCSEC
    n = opts.imsize
    n_t, n_f = info.times_mjd_s.size, info.freq_hz.size
    w_nat = info.weight  # (R, F) float32
    ok = info.n_pol > 0
    # sigma^2 / SEFD^2 per real part of one polarisation's sample: 1 / (2 dnu tau), (R, F)
    inv_bt = 1.0 / (2.0 * info.exposure_s[:, None] * info.chan_width_hz[None, :])

    density = None
    if opts.weighting != "natural":
        density = np.zeros(n * n)
        for c0 in range(0, n_f, chunk_channels):
            sl = slice(c0, min(c0 + chunk_channels, n_f))
            k = info.freq_hz[sl] / C_M_S
            u = info.uvw[:, 0:1] * k[None, :]
            v = info.uvw[:, 1:2] * k[None, :]
            wc = w_nat[:, sl]
            for sign in (1.0, -1.0):
                idx = _grid_index(sign * u, sign * v, n, cell)
                good = (idx >= 0) & (wc > 0)
                density += np.bincount(idx[good], weights=wc[good], minlength=n * n)
        if opts.weighting == "briggs":
            f2 = (5.0 * 10.0 ** (-opts.robust)) ** 2 / (np.sum(density**2) / density.sum())

    sum_w = sum_w2s2 = 0.0
    nat_w = nat_w2s2 = 0.0
    weights_tf = np.zeros((n_t, n_f))
    sample_channels = np.unique(np.floor((np.arange(n_sample_channels) + 0.5) * n_f / n_sample_channels).astype(int))
    sample_weights = np.zeros((w_nat.shape[0], sample_channels.size), np.float32)
    sefd2 = opts.sefd_jy**2
    for c0 in range(0, n_f, chunk_channels):
        sl = slice(c0, min(c0 + chunk_channels, n_f))
        wc = w_nat[:, sl].astype(float)
        npol = info.n_pol[:, sl]
        s2 = np.where(npol > 0, sefd2 * inv_bt[:, sl] / np.maximum(npol, 1), 0.0)  # sigma_I^2
        if density is None:
            w = wc
        else:
            k = info.freq_hz[sl] / C_M_S
            idx = _grid_index(info.uvw[:, 0:1] * k[None, :], info.uvw[:, 1:2] * k[None, :], n, cell)
            dens = np.where(idx >= 0, density[np.maximum(idx, 0)], 0.0)
            if opts.weighting == "briggs":
                w = wc / (1.0 + dens * f2)
            else:  # uniform
                w = np.where(dens > 0, wc / np.where(dens > 0, dens, 1.0), 0.0)
            w = np.where(idx >= 0, w, 0.0)
        sum_w += w.sum()
        sum_w2s2 += np.sum(w**2 * s2)
        nat_w += wc.sum()
        nat_w2s2 += np.sum(wc**2 * s2)
        for j in range(w.shape[1]):
            weights_tf[:, sl.start + j] = np.bincount(info.t_index, weights=w[:, j], minlength=n_t)
        for k in np.flatnonzero((sample_channels >= sl.start) & (sample_channels < sl.stop)):
            sample_weights[:, k] = w[:, sample_channels[k] - sl.start]
    if sum_w <= 0:
        raise ImagingError(f"{info.path}: no unflagged visibility falls on the uv grid of the image")
    return NoiseEstimate(
        sigma_jy=float(np.sqrt(sum_w2s2) / sum_w),
        natural_sigma_jy=float(np.sqrt(nat_w2s2) / nat_w),
        weights_tf=weights_tf,
        n_samples=int(ok.sum()),
        sample_channels=sample_channels,
        sample_weights=sample_weights,
    )


# --------------------------------------------------------------- imagers


def _clean_stale(prefix: Path) -> None:
    """Remove every ``prefix.*`` / ``prefix-*`` left by an earlier run (tclean reuses them)."""
    for p in list(prefix.parent.glob(prefix.name + ".*")) + list(prefix.parent.glob(prefix.name + "-*")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def wsclean_command(ms: str, prefix: Path, opts: ImagingOptions, threads: int, mem_mb: int | None) -> list[str]:
    """The WSClean command line for these options."""
    weight = ["-weight", "briggs", f"{opts.robust:g}"] if opts.weighting == "briggs" else ["-weight", opts.weighting]
    cmd = [
        opts.wsclean,
        "-name", str(prefix),
        "-size", str(opts.imsize), str(opts.imsize),
        "-scale", f"{opts.cell_arcsec:g}asec",
        *weight,
        "-pol", "I",
        "-data-column", opts.data_column,
        "-niter", str(opts.niter),
        "-gain", f"{opts.gain:g}",
        "-mgain", f"{opts.mgain:g}",
        "-auto-threshold", f"{opts.auto_threshold:g}",
        "-nmiter", str(opts.max_major_cycles),
        "-no-update-model-required",
        "-make-psf",
        "-j", str(max(1, threads)),
        "-temp-dir", str(prefix.parent),
    ]
    if opts.auto_mask is not None:
        cmd += ["-auto-mask", f"{opts.auto_mask:g}"]
    if opts.spectral_terms > 1:
        cmd += ["-join-channels", "-channels-out", str(opts.spectral_channels),
                "-fit-spectral-pol", str(opts.spectral_terms)]
    if mem_mb:
        cmd += ["-abs-mem", f"{mem_mb / 1024 * 0.9:.2f}"]
    if opts.wsclean_gridder == "wgridder":
        cmd += ["-use-wgridder", "-wgridder-accuracy", f"{opts.wgridder_accuracy:g}"]
    return cmd + [ms]


def tclean_parameters(ms: str, prefix: Path, opts: ImagingOptions) -> dict[str, Any]:
    """tclean keyword arguments for these options."""
    params: dict[str, Any] = dict(
        vis=ms,
        imagename=str(prefix),
        datacolumn=opts.data_column.lower().replace("_data", ""),
        imsize=[opts.imsize, opts.imsize],
        cell=f"{opts.cell_arcsec:g}arcsec",
        stokes="I",
        specmode="mfs",
        gridder="wproject" if opts.wproject_planes != 0 else "standard",
        deconvolver="mtmfs" if opts.spectral_terms > 1 else "hogbom",
        weighting=opts.weighting,
        niter=opts.niter,
        gain=opts.gain,
        cyclefactor=opts.cyclefactor,
        # A minor cycle goes down to (1 - mgain) of the peak, as WSClean's: with tclean's default (up to 0.8
        # x the peak, by the PSF's sidelobes) a sparse array needs dozens of major cycles.
        maxpsffraction=1.0 - opts.mgain,
        minpsffraction=min(0.05, 1.0 - opts.mgain),
        nmajor=opts.max_major_cycles if opts.max_major_cycles > 0 else -1,
        nsigma=opts.auto_threshold,
        threshold="0Jy",
        pblimit=-1e-4,  # no tclean primary-beam mask: the drift-scan beam is applied later
        savemodel="none",
        interactive=False,
        pbcor=False,
    )
    if opts.spectral_terms > 1:
        params["nterms"] = opts.spectral_terms
    if opts.wproject_planes != 0:
        params["wprojplanes"] = opts.wproject_planes
    if opts.weighting == "briggs":
        params["robust"] = opts.robust
    if opts.auto_mask is None:
        params["usemask"] = "user"
    else:
        params.update(
            usemask="auto-multithresh",
            noisethreshold=opts.auto_mask,
            lownoisethreshold=opts.auto_threshold / 2,
            sidelobethreshold=1.0,
            minbeamfrac=0.1,
            negativethreshold=0.0,
            # CASA's default of 75 binary dilations costs ~5 min per major cycle on a
            # 4096^2 image of a full-size observation; 10 grow the mask enough.
            growiterations=10,
        )
    return params


def _fits_2d(src: Path, dst: Path, imager: str) -> dict[str, Any]:
    """Copy an imager's 4-D FITS to a 2-D one with uniform keywords; return the header facts."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with fits.open(src) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdr = hdul[0].header
        data = np.asarray(hdul[0].data, dtype=np.float32)
        while data.ndim > 2:
            data = data[0]
        wcs = WCS(hdr)
        freq = bandwidth = None
        for i in range(1, hdr.get("NAXIS", 0) + 1):
            if str(hdr.get(f"CTYPE{i}", "")).startswith("FREQ"):
                freq, bandwidth = float(hdr[f"CRVAL{i}"]), abs(float(hdr.get(f"CDELT{i}", 0.0)))
        wcs2 = wcs.celestial
        wcs2.wcs.crval[0] %= 360.0  # WSClean writes RA in -180..180
        out = wcs2.to_header()
        out["RADESYS"] = "ICRS"
        for key in ("EQUINOX", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "OBSGEO-L", "OBSGEO-B", "OBSGEO-H"):
            out.remove(key, ignore_missing=True)
        for key in ("BUNIT", "BMAJ", "BMIN", "BPA", "BTYPE", "OBJECT", "TELESCOP", "DATE-OBS", "MJD-OBS", "TIMESYS"):
            if key in hdr:
                out[key] = hdr[key]
        if freq is not None:
            out["FREQ"] = (freq, "[Hz] reference frequency of the image")
            out["BANDWID"] = (bandwidth, "[Hz] bandwidth")
        out["IMAGER"] = (imager, "program that made the image")
        fits.PrimaryHDU(data=data, header=out).writeto(dst, overwrite=True)
    return {"freq_hz": freq, "bandwidth_hz": bandwidth}


def run_wsclean(ms: str, prefix: Path, opts: ImagingOptions, threads: int, mem_mb: int | None,
                logfile: Path) -> dict[str, Any]:
    """Run WSClean; its log goes to ``logfile``. Returns the FITS paths it wrote."""
    _clean_stale(prefix)
    cmd = wsclean_command(ms, prefix, opts, threads, mem_mb)
    log.info("running %s", " ".join(cmd))
    with open(logfile, "w") as lf:
        proc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, text=True,
                              env=os.environ | {"OMP_NUM_THREADS": str(max(1, threads))})
    text = Path(logfile).read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise ImagingError(f"{ms}: wsclean failed (exit {proc.returncode}):\n{tail}")
    stem = f"{prefix}-MFS" if opts.spectral_terms > 1 else str(prefix)  # joined channels: the band's sum
    out = {k: Path(f"{stem}-{k}.fits") for k in PRODUCTS}
    if opts.niter == 0:  # without CLEAN WSClean writes no residual (= the dirty image) and no model
        out["residual"] = Path(f"{stem}-dirty.fits")
        out.pop("model")
    missing = [str(p) for p in out.values() if not p.exists()]
    if missing:
        raise ImagingError(f"{ms}: wsclean did not write {missing}")
    return {"files": out, "command": cmd, "log_tail": text.splitlines()[-8:]}


_TCLEAN_CHILD_LOG = "casa-tclean.log"


def run_tclean(ms: str, prefix: Path, opts: ImagingOptions, threads: int, logfile: Path) -> dict[str, Any]:
    """Run tclean in a child Python with the offline CASA set-up; export FITS there."""
    _clean_stale(prefix)
    request = {"params": tclean_parameters(ms, prefix, opts), "export": list(PRODUCTS),
               "casa_log": str(logfile)}
    req_file = Path(f"{prefix}.request.json")
    req_file.write_text(json.dumps(request))
    log.info("running tclean (%s)", ", ".join(f"{k}={v!r}" for k, v in request["params"].items() if k != "vis"))
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, threads)), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "dsa110_contimg.imaging.imager", "tclean", str(req_file)],
                          capture_output=True, text=True, env=env, cwd=str(prefix.parent))
    req_file.unlink(missing_ok=True)
    result_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")]
    if proc.returncode != 0 or not result_lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise ImagingError(f"{ms}: tclean failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_lines[-1][len("RESULT="):])
    if result.get("error"):
        raise ImagingError(f"{ms}: tclean failed: {result['error']}")
    out = {k: Path(f"{prefix}.{k}.fits") for k in PRODUCTS}
    return {"files": out, "summary": result.get("summary", {})}


def _tclean_child(request_file: str) -> int:
    """Child process: run tclean as requested and export the products to FITS."""
    from .. import casa_env

    request = json.loads(Path(request_file).read_text())
    os.environ.pop(casa_env.JOB_LOG_ENV, None)  # CASA's log goes to the imager's, not the job's (inherited)
    casa_env.configure(logfile=request["casa_log"])
    cta = casa_env.casatasks()
    params = request["params"]
    try:
        summary = cta.tclean(**params) or {}
        prefix = params["imagename"]
        taylor = ".tt0" if params.get("deconvolver") == "mtmfs" else ""  # mtmfs: the band-centre term
        for kind in request["export"]:
            src = f"{prefix}.{kind}{taylor}"
            if not os.path.isdir(src):
                raise RuntimeError(f"tclean did not write {src}")
            cta.exportfits(imagename=src, fitsimage=f"{prefix}.{kind}.fits", overwrite=True, dropdeg=False)
        keep = {k: summary[k] for k in ("iterdone", "nmajordone", "stopcode", "stopDescription") if k in summary}
        result = {"summary": json.loads(json.dumps(keep, default=str))}
    except Exception as exc:  # noqa: BLE001 - a process boundary: any CASA failure goes to the parent as text
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT=" + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------- restoring beam


def _sky_jacobian(wcs, x0: float, y0: float) -> np.ndarray:
    """Pixels per degree of (east, north) offsets at pixel (x0, y0): a 2x2 matrix."""
    ra0, dec0 = wcs.all_pix2world([[x0, y0]], 0)[0]
    eps = 1e-4  # deg
    cosd = np.cos(np.radians(dec0))
    jac = np.empty((2, 2))
    for k, (dra, ddec) in enumerate(((eps / cosd, 0.0), (0.0, eps))):
        px = wcs.all_world2pix([[ra0 + dra, dec0 + ddec]], 0)[0]
        jac[:, k] = (px - (x0, y0)) / eps
    return jac


FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def beam_inverse_covariance(wcs, x0: float, y0: float, beam: tuple[float, float, float]) -> np.ndarray:
    """Inverse covariance (pixel units) of a Gaussian beam (BMAJ, BMIN deg; BPA deg, north through east)."""
    bmaj, bmin, bpa = beam
    pa = np.radians(bpa)
    major = np.array([np.sin(pa), np.cos(pa)])  # (east, north)
    minor = np.array([np.cos(pa), -np.sin(pa)])
    s = np.array([bmaj, bmin]) / FWHM_PER_SIGMA
    cov_sky = s[0] ** 2 * np.outer(major, major) + s[1] ** 2 * np.outer(minor, minor)
    jac = _sky_jacobian(wcs, x0, y0)
    return np.linalg.inv(jac @ cov_sky @ jac.T)


def fit_restoring_beam(psf: np.ndarray, wcs, cutoff: float = 0.35) -> tuple[float, float, float]:
    """(BMAJ, BMIN, BPA) in degrees of a Gaussian fitted to the PSF's main lobe.

    The pixels of the main lobe above ``cutoff`` (connected to the peak) are
    fitted with a unit-peak elliptical Gaussian, as tclean does. Both imagers'
    images are restored with this beam (:func:`restore`), so their images
    mean the same thing: WSClean's own fit is ~12% narrower for this array's
    non-Gaussian PSF, which lowers restored peaks by a few per cent.
    """
    from scipy import ndimage, optimize

    psf = np.nan_to_num(np.asarray(psf, float))
    cy, cx = np.unravel_index(np.argmax(psf), psf.shape)
    labels, _ = ndimage.label(psf > cutoff * psf[cy, cx])
    ys, xs = np.nonzero(labels == labels[cy, cx])
    vals = psf[ys, xs] / psf[cy, cx]
    dx, dy = xs - cx, ys - cy
    # Start from second moments of the lobe; parametrise by a Cholesky factor of the inverse covariance.
    m = np.cov(np.vstack([dx, dy]), aweights=vals) * 2 + np.eye(2) * 0.25
    chol0 = np.linalg.cholesky(np.linalg.inv(m))

    def resid(p):
        c = np.array([[p[0], 0.0], [p[1], p[2]]])
        q = c @ c.T
        return np.exp(-0.5 * (q[0, 0] * dx * dx + 2 * q[0, 1] * dx * dy + q[1, 1] * dy * dy)) - vals

    sol = optimize.least_squares(resid, [chol0[0, 0], chol0[1, 0], chol0[1, 1]], method="lm")
    c = np.array([[sol.x[0], 0.0], [sol.x[1], sol.x[2]]])
    cov_pix = np.linalg.inv(c @ c.T)
    jac = _sky_jacobian(wcs, float(cx), float(cy))
    jinv = np.linalg.inv(jac)
    cov_sky = jinv @ cov_pix @ jinv.T  # deg^2 in (east, north)
    evals, evecs = np.linalg.eigh(cov_sky)
    bmin, bmaj = np.sqrt(evals) * FWHM_PER_SIGMA
    east, north = evecs[:, 1]
    bpa = np.degrees(np.arctan2(east, north))
    bpa = (bpa + 90.0) % 180.0 - 90.0
    return float(bmaj), float(bmin), float(bpa)


def gaussian_kernel(wcs, shape: tuple[int, int], beam: tuple[float, float, float], n_sigma: float = 6.0) -> np.ndarray:
    """A unit-peak image of ``beam`` centred in an odd-sized stamp (at the image centre's scale)."""
    x0, y0 = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    inv = beam_inverse_covariance(wcs, x0, y0, beam)
    half = int(np.ceil(n_sigma * np.sqrt(np.max(np.linalg.eigvalsh(np.linalg.inv(inv))))))
    yy, xx = np.mgrid[-half: half + 1, -half: half + 1]
    return np.exp(-0.5 * (inv[0, 0] * xx * xx + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy * yy))


def restore(model: np.ndarray, residual: np.ndarray, wcs, beam: tuple[float, float, float]) -> np.ndarray:
    """Restored image (Jy/beam): CLEAN components (Jy/pixel) convolved with ``beam`` plus the residual."""
    from scipy.signal import oaconvolve

    model = np.nan_to_num(np.asarray(model, np.float64))
    if not model.any():
        return np.asarray(residual, np.float64).copy()
    kernel = gaussian_kernel(wcs, model.shape, beam)
    return oaconvolve(model, kernel, mode="same") + residual


@dataclass
class ImagerResult:
    """FITS products of one imaging run and how they were made."""

    files: dict[str, Path]
    imager: str
    options: ImagingOptions
    freq_hz: float | None
    bandwidth_hz: float | None
    wall_s: float
    details: dict[str, Any]


def run_imager(ms: str, workdir: Path, name: str, opts: ImagingOptions, threads: int = 1,
               mem_mb: int | None = None) -> ImagerResult:
    """Image ``ms`` with ``opts.imager`` into ``workdir``; 2-D FITS ``<name>.<product>.fits``.

    ``opts`` must be resolved (cell size set). The imager's own files stay in
    ``workdir``; the caller decides what to keep.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ms = os.path.abspath(os.fspath(ms))
    prefix = workdir / f"{name}-{opts.imager}"
    logfile = workdir / f"{name}-{opts.imager}.log"
    t0 = time.perf_counter()
    if opts.imager == "wsclean":
        raw = run_wsclean(os.fspath(ms), prefix, opts, threads, mem_mb, logfile)
    else:
        raw = run_tclean(os.fspath(ms), prefix, opts, threads, logfile)
    wall = time.perf_counter() - t0
    files, facts = {}, {}
    for kind, src in raw["files"].items():
        dst = workdir / f"{name}.{kind}.fits"
        facts = _fits_2d(src, dst, opts.imager)
        files[kind] = dst
    details = {k: v for k, v in raw.items() if k != "files"}
    details["imager_log"] = str(logfile)
    details["imager_beam"] = _restore_in_place(files)
    return ImagerResult(files, opts.imager, opts, facts.get("freq_hz"), facts.get("bandwidth_hz"), wall, details)


def _restore_in_place(files: dict[str, Path]) -> list[float] | None:
    """Restore ``files["image"]`` again from model + residual with the beam fitted to the PSF.

    Returns the imager's own beam (BMAJ, BMIN arcsec, BPA deg) for the record.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(files["image"]) as hdul:
        header = hdul[0].header.copy()
    own = [header.get("BMAJ", np.nan) * 3600, header.get("BMIN", np.nan) * 3600, header.get("BPA", np.nan)]
    wcs = WCS(header).celestial
    psf = fits.getdata(files["psf"])
    residual = np.asarray(fits.getdata(files["residual"]), np.float64)
    model = np.asarray(fits.getdata(files["model"]), np.float64) if "model" in files else np.zeros_like(residual)
    beam = fit_restoring_beam(psf, wcs)
    image = restore(model, residual, wcs, beam)
    header["BMAJ"], header["BMIN"], header["BPA"] = beam
    header["BUNIT"] = "Jy/beam"
    header["HISTORY"] = "Restored by dsa110_contimg: CLEAN model (x) Gaussian fitted to the PSF main lobe + residual."
    fits.PrimaryHDU(data=image.astype(np.float32), header=header).writeto(files["image"], overwrite=True)
    for kind in ("residual", "psf"):
        with fits.open(files[kind], mode="update") as hdul:
            hdul[0].header["BMAJ"], hdul[0].header["BMIN"], hdul[0].header["BPA"] = beam
    return [float(x) for x in own]


def options_record(opts: ImagingOptions) -> dict[str, Any]:
    """The options as a plain dict (for sidecars)."""
    return asdict(opts)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "tclean":
        raise SystemExit(_tclean_child(sys.argv[2]))
    print("usage: python -m dsa110_contimg.imaging.imager tclean REQUEST.json", file=sys.stderr)
    raise SystemExit(2)
