"""Stage of rule ``image``: calibrated MS -> image, residual, PSF, primary beam,
corrected image, thumbnail, QA sidecar and database row."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dsa110_contimg.imaging import imager as imaging
from dsa110_contimg.imaging import peeled, primary_beam, smearing_map, thumbnail
from dsa110_contimg.imaging import qa as image_qa

from .. import fitsimage, naming
from ..photometry import new_sources
from .common import stage_run

#: The products of one image job, by kind (the registry's kinds of rule ``image``).
OUTPUT_KINDS = tuple(k for k in naming.rule_outputs("", "image", group="g") if not k.endswith("_sidecar"))


def _write_fits(path: Path, data: np.ndarray, header, **cards: Any) -> None:
    from astropy.io import fits

    hdr = header.copy()
    for key, value in cards.items():
        hdr[key] = value
    fits.PrimaryHDU(data=np.asarray(data, np.float32), header=hdr).writeto(path, overwrite=True)


def image(
    ms: str,
    outputs: Mapping[str, str],
    group: str,
    config: Mapping[str, Any],
    threads: int = 1,
    mem_mb: int | None = None,
    log: str | None = None,
    averaged: tuple[int, int] | None = None,
    restore: list[dict] | None = None,
) -> dict:
    """Rule ``image``: image one calibrated observation; returns the QA figures.

    ``averaged``: (channels, integrations) averaged into ``ms`` (default: from
    its sidecar, see :func:`dsa110_contimg.imaging.smearing_map.averaging_factors`).
    ``restore``: the sources subtracted from ``ms`` to put back into the image
    (default: from its sidecar, see :mod:`dsa110_contimg.imaging.peeled`).

    ``outputs`` maps each of :data:`OUTPUT_KINDS` to its path (see
    :func:`dsa110_contimg.naming.rule_outputs`); the QA sidecar (kind ``image``) goes beside
    ``outputs["image"]`` and the image is registered in the database. Every
    product is written to a temporary name and renamed into place, the sidecar
    last; on any error nothing is replaced or registered. An MS that is fully
    flagged or whose unflagged data are all zero raises
    :class:`~dsa110_contimg.imaging.imager.ImagingError` before imaging.
    """
    from astropy.io import fits
    from astropy.time import Time
    from astropy.wcs import WCS

    missing = [k for k in OUTPUT_KINDS if k not in outputs]
    if missing:
        raise ValueError(f"outputs lacks {missing}")
    cfg = dict(config.get("imaging", {}))
    opts = imaging.ImagingOptions.from_config(dict(config))
    thresholds = image_qa.GradeThresholds.from_mapping(cfg.get("grade"))
    final = {k: Path(outputs[k]) for k in OUTPUT_KINDS}
    with stage_run("image", config, {"group": group}, log) as run:
        logger = run.logger
        t0 = time.perf_counter()
        info = imaging.inspect_ms(ms, data_column=opts.data_column)
        logger.info(
            "%s: %d antennas, %d integrations, %d channels %.1f-%.1f MHz, %.1f%% of cross-correlations flagged, "
            "longest baseline %.0f m", ms, info.n_antennas, info.times_mjd_s.size, info.freq_hz.size,
            info.freq_hz.min() / 1e6, info.freq_hz.max() / 1e6, 100 * info.flagged_fraction, info.max_baseline_m,
        )
        opts = imaging.resolve_options(opts, info, logger)
        noise = imaging.expected_noise(info, opts)
        t_inspect = time.perf_counter()
        logger.info("thermal noise expected %.3g mJy/beam (%s weighting; natural %.3g)",
                    noise.sigma_jy * 1e3, opts.weighting, noise.natural_sigma_jy * 1e3)

        workdir = final["image"].parent / f".{group}.image-work-{os.getpid()}"
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            result = imaging.run_imager(ms, workdir, group, opts, threads=threads, mem_mb=mem_mb)
            logger.info("%s made the image in %.1f s", result.imager, result.wall_s)
            t_imager = time.perf_counter()
            with fits.open(result.files["image"]) as hdul:
                header = hdul[0].header.copy()
                img = np.asarray(hdul[0].data, float)
            residual = np.asarray(fits.getdata(result.files["residual"]), float)
            if not np.isfinite(img).any() or not np.any(img[np.isfinite(img)] != 0):
                raise imaging.ImagingError(f"{ms}: the imager produced an empty image")

            wcs = WCS(header).celestial
            dec_app = primary_beam.pointing_declination(info.field_ra_rad, info.field_dec_rad, info.mid_jd)
            pointing = primary_beam.make_pointing(info.jd, info.freq_hz, noise.weights_tf, dec_app)
            pb = primary_beam.beam_image(wcs, img.shape, pointing)
            averaged = smearing_map.averaging_factors(ms) if averaged is None else tuple(averaged)
            response = smearing_map.response_image(
                wcs, img.shape, info, noise, averaged=averaged if opts.smearing_correction != "total" else None)
            smear = smearing_map.record(response, pb, opts.pb_cutoff, opts.smearing_correction)
            smear["averaged"] = list(averaged)
            logger.info("smearing %s (channel %.3g kHz, integration %.3g s, %d x %d averaged): %.2f%% of the peak "
                        "lost at the field's edge, %.3f%% at its centre; %s",
                        "added by averaging" if opts.smearing_correction != "total" else "in all",
                        info.chan_width_hz.max() / 1e3, info.exposure_s.max(), *averaged,
                        100 * smear["smearing_edge_loss"], 100 * smear["smearing_centre_loss"],
                        "not corrected" if opts.smearing_correction == "none" else "corrected in the beam written")
            restore = peeled.from_sidecar(ms) if restore is None else restore
            if restore:
                _restore_peeled(img, header, wcs, restore, info, noise, dec_app,
                                response if opts.smearing_correction != "none" else None, logger)
                _write_fits(result.files["image"], img, header)
            if opts.smearing_correction != "none":
                pb = pb * response
            del response
            pbcor = primary_beam.correct(img, pb, opts.pb_cutoff)
            t_pb = time.perf_counter()

            qa = image_qa.measure(img, residual, pb, header, opts.pb_cutoff, noise.sigma_jy, thresholds)
            # The PSF's sidelobes by distance, before the PSF is cropped: new-source vetting reads them.
            qa["psf_envelope"] = new_sources.psf_envelope(
                np.squeeze(fits.getdata(result.files["psf"])), opts.cell_arcsec, 2 * qa["beam_major_arcsec"])
            ra_deg, dec_deg = (float(x) for x in wcs.wcs.crval)
            freq = result.freq_hz if result.freq_hz else float(np.average(info.freq_hz, weights=noise.weights_tf.sum(0)))
            qa.update(
                imager=result.imager,
                ra_deg=ra_deg,
                dec_deg=dec_deg,
                freq_hz=freq,
                bandwidth_hz=result.bandwidth_hz,
                natural_thermal_rms_jy=noise.natural_sigma_jy,
                pointing_dec_deg=float(np.degrees(dec_app)),
                mid_time=Time(info.mid_jd, format="jd").isot,
                cell_arcsec=opts.cell_arcsec,
                imsize=opts.imsize,
                n_antennas=info.n_antennas,
                flagged_fraction=info.flagged_fraction,
                max_baseline_m=info.max_baseline_m,
                imager_summary=result.details.get("summary"),
                imager_beam=result.details.get("imager_beam"),
                **smear,
            )
            logger.info(
                "QA: rms %.3g mJy/beam (%.2f x thermal), peak %.4g Jy/beam, DR %.0f, beam %.1f\" x %.1f\" "
                "PA %.0f, %d islands > 5 sigma, grade %s%s",
                qa["rms_jy"] * 1e3, qa["rms_over_thermal"], qa["peak_jy"], qa["dynamic_range"],
                qa["beam_major_arcsec"], qa["beam_minor_arcsec"], qa["beam_pa_deg"], qa["n_sources_5sigma"],
                qa["grade"], f" ({'; '.join(qa['grade_reasons'])})" if qa["grade_reasons"] else "",
            )

            pb_file = workdir / f"{group}.pb.fits"
            pbcor_file = workdir / f"{group}.pbcor.fits"
            png = workdir / f"{group}.png"
            _write_fits(pb_file, pb, fits.Header(wcs.to_header()), BUNIT="", BTYPE="Beam",
                        PBCUTOFF=opts.pb_cutoff, FREQ=header.get("FREQ", freq),
                        SMEARCOR=(opts.smearing_correction, "smearing response in the beam"),
                        SMEARMAX=(smear["smearing_edge_loss"], "smearing peak loss at the field edge"),
                        COMMENT="drift- and band-averaged Airy power beam of the 4.65 m dishes"
                        + (", times the bandwidth and time smearing response" if opts.smearing_correction != "none"
                           else ""))
            _write_fits(pbcor_file, pbcor, header, PBCUTOFF=(opts.pb_cutoff, "blanked where the beam is lower"),
                        BTYPE="Intensity")
            thumbnail.render(result.files["image"], png, rms=qa["rms_jy"], pb_fits=pb_file, pb_cutoff=opts.pb_cutoff,
                             title=f"{group} ({result.imager}, grade {qa['grade']})")
            made = {
                "image": result.files["image"], "residual": result.files["residual"], "psf": result.files["psf"],
                "pb": pb_file, "pbcor": pbcor_file, "thumbnail": png,
            }
            _bound_disk(made, config["retention"])
            for kind in OUTPUT_KINDS:
                with run.output(final[kind]) as tmp:
                    os.replace(made[kind], tmp)
            imager_log = Path(result.details["imager_log"])
            if imager_log.exists() and log:
                logger.info("imager log (last lines):\n%s",
                            "\n".join(imager_log.read_text(errors="replace").splitlines()[-12:]))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        wall = time.perf_counter() - t0
        timings = {
            "wall_s": wall, "inspect_s": t_inspect - t0, "imager_s": result.wall_s,
            "primary_beam_s": t_pb - t_imager,
        }
        run.publish(
            final["image"], kind="image", inputs=[ms], qa=qa, timings=timings,
            status="ok" if qa["grade"] != "bad" else "failed_qa",
            extra={"products": {k: os.fspath(v) for k, v in final.items()},
                   "options": imaging.options_record(opts)},
        )
        if qa["grade"] == "bad":
            logger.warning("%s is graded bad: %s", final["image"], "; ".join(qa["grade_reasons"]))
    return qa


def _restore_peeled(img, header, wcs, sources, info, noise, dec_app, response, logger) -> None:
    """Put the sources subtracted before imaging back into the restored image ``img`` (in place)."""
    ra, dec = [s["ra_deg"] for s in sources], [s["dec_deg"] for s in sources]
    flux = peeled.apparent_fluxes(sources, info.jd, info.freq_hz, noise.weights_tf, dec_app)
    if response is not None:  # as the beam written with the image, so the corrected image reads the fit
        flux = flux * peeled.sample(response, wcs, ra, dec)
    on_image = np.isfinite(peeled.sample(np.ones(img.shape), wcs, ra, dec))
    if not np.all(np.isfinite(flux[on_image])):
        raise imaging.ImagingError(f"no beam or smearing response at the subtracted sources "
                                   f"{[s['name'] for s, ok in zip(sources, on_image, strict=True) if ok]}")
    peeled.add_points(img, wcs, (header["BMAJ"], header["BMIN"], header["BPA"]), ra, dec, flux)
    header["HISTORY"] = f"{int(on_image.sum())} sources subtracted before imaging restored at their positions."
    logger.info("restored %d subtracted sources at their catalogue positions with their fitted fluxes "
                "(%.4g Jy apparent in all)", int(on_image.sum()), float(np.sum(flux[on_image])))


def _bound_disk(made: dict[str, Path], retention: dict) -> None:
    """What the image stage keeps (retention): the PSF's centre only, the images tile-compressed."""
    if retention["psf_pixels"]:
        fitsimage.crop_centre(made["psf"], retention["psf_pixels"])
    if retention["compress_images"]:
        for kind, level in fitsimage.QUANTIZE.items():
            fitsimage.compress(made[kind], level)
