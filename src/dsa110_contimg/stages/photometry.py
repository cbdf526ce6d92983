"""Stages of rules ``photometry`` (per image) and ``lightcurves`` (fan-in over all photometry).

``photometry``: the beam-corrected image, its primary beam and residual ->
forced photometry at every catalogue position in the footprint
(``results/photometry/{group}.parquet``) and blind detections not in the
catalogue (``{group}.new_sources.csv``), each with its sidecar, registered.

``lightcurves``: every photometry table -> ``results/lightcurves/all.parquet``
(one row per source and epoch, flux-scale corrected), the per-epoch scale
table ``all.epochs.csv``, ``results/variability/all.parquet`` (metrics per
source) and ``results/variability/ese_candidates.csv`` (+ a picture of the
candidates' light curves). Bad input never stops it: an unreadable table, one
with missing columns or an empty one is logged, left out and listed in the
sidecar.

The fan-in's science (buckets, flux scale, metrics, ESE, recurrence of new
sources) is :mod:`dsa110_contimg.photometry.lightcurves`; this module only
writes through the stage wrapper.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dsa110_contimg.photometry import catalogue as catmod
from dsa110_contimg.photometry import forced as phot

from .. import naming, provenance
from ..constants import MJD_UNIX_EPOCH
from ..photometry.lightcurves import LightcurveOptions, build_lightcurves
from .common import stage_run

# ============================================================ photometry


def _mjd_of_image(sidecar: Mapping[str, Any] | None, header, group: str) -> tuple[float, str]:
    """Epoch (MJD) of an image and where it came from: sidecar mid_time, FITS header, or group id."""
    qa = (sidecar or {}).get("qa") or {}
    if qa.get("mid_time"):
        from astropy.time import Time

        return float(Time(qa["mid_time"], scale="utc").mjd), "sidecar mid_time"
    if header is not None:
        if "MJD-OBS" in header:
            return float(header["MJD-OBS"]), "header MJD-OBS"
        if "DATE-OBS" in header:
            from astropy.time import Time

            return float(Time(header["DATE-OBS"], scale="utc").mjd), "header DATE-OBS"
    start = naming.parse_timestamp(group)
    return start.timestamp() / 86400.0 + MJD_UNIX_EPOCH, "group id"


def _read_image_sidecar(path: str | os.PathLike | None, logger) -> dict | None:
    if not path:
        return None
    try:
        return provenance.read_sidecar(path)
    except provenance.SidecarError as exc:
        logger.warning("image sidecar unusable (%s): epoch from the FITS header or the group id", exc)
        return None


def _measurement_table(frame: pd.DataFrame) -> Any:
    """The measurements as an arrow table with fixed column types (a 0-row table too)."""
    import pyarrow as pa

    fields = []
    for name in phot.MEASUREMENT_COLUMNS:
        if name == "source":
            fields.append(pa.field(name, pa.string()))
        elif name in ("flags", "n_blend"):
            fields.append(pa.field(name, pa.int32()))
        else:
            fields.append(pa.field(name, pa.float64()))
    schema = pa.schema(fields)
    arrays = [pa.array(frame[f.name].to_numpy() if len(frame) else [], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def photometry(
    pbcor: str,
    pb: str | None,
    residual: str | None,
    image_sidecar: str | None,
    output: str,
    new_sources: str,
    group: str,
    config: Mapping[str, Any],
    log: str | None = None,
    register: bool = True,
) -> dict:
    """Rule ``photometry``: forced photometry of one image + new-source candidates; returns the QA.

    An image with no catalogue source in its footprint gives an empty table
    (and a warning), not an error: the fan-in must still run. A catalogue
    that is missing or lacks columns raises
    :class:`~dsa110_contimg.photometry.catalogue.CatalogueError` naming the file.
    """
    opts = phot.PhotometryOptions.from_config(config)
    copts = catmod.CatalogueOptions.from_config(config)
    with stage_run("photometry", config, {"group": group}, log, record=register) as run:
        logger = run.logger
        t0 = time.perf_counter()
        cat = catmod.load_catalogue(copts)
        targets = catmod.flux_cut(cat, copts.flux_min_jy)
        logger.info("catalogue %s: %d sources, %d at least %.3g Jy", copts.path, len(cat), len(targets),
                    copts.flux_min_jy)
        side = _read_image_sidecar(image_sidecar, logger)
        images = phot.load_images(pbcor, pb, residual)
        mjd, mjd_from = _mjd_of_image(side, images.header, group)
        grade = ((side or {}).get("qa") or {}).get("grade")
        t_read = time.perf_counter()
        prep = phot.prepare(images.wcs, images.beam, opts, images.noise)
        meas = phot.measure_catalogue(images, targets, mjd, opts, prep)
        meas["flags"] = (meas["flags"].to_numpy() | phot.grade_flag(grade)).astype(np.int32)
        t_forced = time.perf_counter()
        envelope = ((side or {}).get("qa") or {}).get("psf_envelope")
        if envelope is None and opts.sidelobe_psf_fraction > 0:
            logger.warning("no PSF sidelobe envelope in the image's sidecar (made before it was recorded): "
                           "new-source candidates are vetted against sidelobes only by sidelobe_fraction (%g) "
                           "within %g'; re-image to vet along the PSF", opts.sidelobe_fraction,
                           opts.sidelobe_radius_arcmin)
        cands, n_islands = phot.find_new_sources(images, cat, mjd, opts, prep, envelope)
        t_blind = time.perf_counter()

        flags = meas["flags"].to_numpy() if len(meas) else np.zeros(0, np.int32)
        counts = {f.name.lower(): int(((flags & f) != 0).sum()) for f in phot.Flag}
        finite = np.isfinite(meas.flux_jy.to_numpy()) if len(meas) else np.zeros(0, bool)
        qa = {
            "mjd": mjd,
            "mjd_from": mjd_from,
            "n_sources": int(len(meas)),
            "n_measured": int(finite.sum()),
            "n_flagged": int((flags != 0).sum()),
            "flag_counts": counts,
            "n_catalogue": int(len(targets)),
            "median_rms_jy": float(np.nanmedian(meas.local_rms_jy)) if finite.any() else None,
            "median_snr": float(np.nanmedian(meas.snr)) if finite.any() else None,
            "n_new_sources": int(len(cands)),
            "n_rejected_sidelobe": cands.attrs.get("rejected", {}).get("sidelobe", 0),
            "n_rejected_edge": cands.attrs.get("rejected", {}).get("edge", 0),
            "n_islands": int(n_islands),
            "threshold_sigma": opts.new_source_sigma,
            "noise_correlation": prep.correlation,
            "beam_fwhm_pixels": prep.fwhm_px,
            "fit_box_pixels": 2 * prep.r + 1,
            "image_grade": grade,
            "systematic": meas.attrs.get("systematic"),
        }
        if len(meas) == 0:
            qa["note"] = "no catalogue source in the image footprint"
            logger.warning("%s: no catalogue source in the footprint (catalogue %s): writing an empty table",
                           pbcor, copts.path)
        sys_est = qa["systematic"]
        if sys_est and sys_est["method"] == "fallback":
            logger.warning("systematic fraction: %s", sys_est["reason"])
        elif sys_est:
            logger.info("systematic fraction %.4f (%s%s): %s", sys_est["fraction"], sys_est["method"],
                        f" +- {sys_est['fraction_err']:.4f}" if sys_est["fraction_err"] is not None else "",
                        sys_est["reason"])
        if counts["no_data"]:
            bad = meas.source[(flags & phot.Flag.NO_DATA) != 0].tolist()
            logger.warning("%d source(s) have blank (NaN) pixels at their position, flux NaN, flagged no_data: %s",
                           len(bad), ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
        logger.info(
            "%d sources measured (%d flagged: %s), median rms %.3g mJy/beam, noise correlation %s; "
            "%d islands above %.1f sigma, %d new-source candidates (%d rejected as sidelobes, %d at edges)",
            qa["n_measured"], qa["n_flagged"], ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none",
            1e3 * (qa["median_rms_jy"] or float("nan")), prep.correlation, n_islands, opts.new_source_sigma, len(cands),
            qa["n_rejected_sidelobe"], qa["n_rejected_edge"],
        )

        import pyarrow.parquet as pq

        # The image product (what docs/products.md links a measurement to) and the catalogue first.
        image = naming.product_of_sidecar(image_sidecar) if image_sidecar else None
        inputs = [p for p in (image, copts.path, pbcor, pb, residual) if p]
        with run.output(output) as tmp:
            pq.write_table(_measurement_table(meas), tmp)
        with run.output(new_sources) as tmp:
            cands.to_csv(tmp, index=False)
        wall = time.perf_counter() - t0
        timings = {"wall_s": wall, "read_s": t_read - t0, "forced_s": t_forced - t_read, "blind_s": t_blind - t_forced}
        run.publish(output, kind="photometry", inputs=inputs, qa=qa, timings=timings,
                    extra={"options": _options_record(opts), "catalogue": str(copts.path)})
        run.publish(new_sources, kind="new_sources", inputs=inputs,
                    qa={"threshold_sigma": opts.new_source_sigma, "n_candidates": int(len(cands)),
                        "n_islands": int(n_islands), "mjd": mjd, "n_rejected_sidelobe": qa["n_rejected_sidelobe"],
                        "n_rejected_edge": qa["n_rejected_edge"]}, timings=timings)
    return qa


def _options_record(opts) -> dict:
    from dataclasses import asdict

    return provenance.to_json(asdict(opts))


def lightcurves(
    photometry_files: Sequence[str],
    outputs: Mapping[str, str],
    config: Mapping[str, Any],
    log: str | None = None,
    mem_mb: int | None = None,
    register: bool = True,
    new_source_files: Sequence[str] = (),
    left_out: Mapping[str, str] | None = None,
) -> dict:
    """Rule ``lightcurves``: the fan-in over all photometry tables; returns the QA figures.

    ``left_out`` maps the groups the workflow did not wait for (held back by a
    failure, incomplete) to why: logged and listed in the sidecars.

    ``outputs`` maps ``lightcurves``, ``variability``, ``ese_candidates``
    (and optionally ``lightcurve_epochs``, ``ese_plot``) to paths (see
    :func:`dsa110_contimg.naming.rule_outputs`). Writes each atomically, then the sidecars,
    then registers the three products.
    """
    opts = LightcurveOptions.from_config(config, mem_mb)
    with stage_run("lightcurves", config, {}, log, record=register, left_out=left_out) as run:
        logger = run.logger
        qa = build_lightcurves(photometry_files, outputs, opts, logger, new_source_files=new_source_files)
        qa["n_groups_left_out"] = len(run.left_out)
        wall = run.elapsed_s
        timings = {"wall_s": wall, "read_s": qa.pop("read_s"), "lightcurves_s": qa.pop("lightcurves_s")}
        inputs = list(photometry_files)
        extra = {"epochs_table": outputs.get("lightcurve_epochs"), "ese_plot": outputs.get("ese_plot"),
                 "new_source_summary": outputs.get("new_source_summary")}
        run.publish(outputs["lightcurves"], kind="lightcurves", inputs=inputs, qa=qa, timings=timings,
                    extra={k: v for k, v in extra.items() if v})
        run.publish(outputs["variability"], kind="variability", inputs=[outputs["lightcurves"]],
                    qa={"n_sources": qa["n_sources"], "n_variable": qa["n_variable"],
                        "systematic_fraction": opts.systematic_fraction, "p_value_max": opts.p_value_max,
                        "v_min": opts.v_min}, timings=timings)
        run.publish(outputs["ese_candidates"], kind="ese_candidates", inputs=[outputs["variability"]],
                    qa={"preset": opts.ese_preset, "n_candidates": qa["n_ese_candidates"],
                        "criteria": _options_record(opts.ese)}, timings=timings)
    return qa


__all__ = ["LightcurveOptions", "build_lightcurves", "lightcurves", "photometry"]
