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

Memory: the fan-in reads the tables one at a time; measurements are kept
compactly (32 bytes each) in ``B`` buckets by source, spilled to disk when all
of them would not fit ``memory_mb``; then one bucket at a time is sorted,
corrected, measured and written. Memory is bounded by the largest bucket,
not by the number of images.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsa110_contimg.photometry import catalogue as catmod
from dsa110_contimg.photometry import ese as esemod
from dsa110_contimg.photometry import forced as phot
from dsa110_contimg.photometry import variability as var

from .. import naming, provenance
from ..db import Database
from .common import logged

MJD_UNIX_EPOCH = 40587.0

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
    with logged(log, "photometry", group, config if register else None) as logger:
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
        t_forced = time.perf_counter()
        cands, n_islands = phot.find_new_sources(images, cat, mjd, opts, prep)
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
            "n_islands": int(n_islands),
            "threshold_sigma": opts.new_source_sigma,
            "noise_correlation": prep.correlation,
            "beam_fwhm_pixels": prep.fwhm_px,
            "fit_box_pixels": 2 * prep.r + 1,
            "image_grade": grade,
        }
        if len(meas) == 0:
            qa["note"] = "no catalogue source in the image footprint"
            logger.warning("%s: no catalogue source in the footprint (catalogue %s): writing an empty table",
                           pbcor, copts.path)
        if counts["no_data"]:
            bad = meas.source[(flags & phot.Flag.NO_DATA) != 0].tolist()
            logger.warning("%d source(s) have blank (NaN) pixels at their position, flux NaN, flagged no_data: %s",
                           len(bad), ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
        logger.info(
            "%d sources measured (%d flagged: %s), median rms %.3g mJy/beam, noise correlation %s; "
            "%d islands above %.1f sigma, %d new-source candidates",
            qa["n_measured"], qa["n_flagged"], ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none",
            1e3 * (qa["median_rms_jy"] or float("nan")), prep.correlation, n_islands, opts.new_source_sigma, len(cands),
        )

        import pyarrow.parquet as pq

        # The image product (what docs/products.md links a measurement to) and the catalogue first.
        image = str(image_sidecar)[: -len(".json")] if image_sidecar and str(image_sidecar).endswith(".json") else None
        inputs = [p for p in (image, copts.path, pbcor, pb, residual) if p]
        with provenance.atomic_output(output) as tmp:
            pq.write_table(_measurement_table(meas), tmp)
        with provenance.atomic_output(new_sources) as tmp:
            cands.to_csv(tmp, index=False)
        wall = time.perf_counter() - t0
        timings = {"wall_s": wall, "read_s": t_read - t0, "forced_s": t_forced - t_read, "blind_s": t_blind - t_forced}
        config_record = dict(config)
        provenance.write_sidecar(output, kind="photometry", group=group, inputs=inputs, config=config_record, qa=qa,
                                 timings=timings, extra={"options": _options_record(opts), "catalogue": str(copts.path)})
        provenance.write_sidecar(new_sources, kind="new_sources", group=group, inputs=inputs, config=config_record,
                                 qa={"threshold_sigma": opts.new_source_sigma, "n_candidates": int(len(cands)),
                                     "n_islands": int(n_islands), "mjd": mjd}, timings=timings)
        if register:
            with Database.from_config(config) as db:
                db.register_product(output)
                db.register_product(new_sources)
            logger.info("registered %s and %s (%.1f s in all)", output, new_sources, wall)
    return qa


def _options_record(opts) -> dict:
    from dataclasses import asdict

    return provenance.to_json(asdict(opts))


# ============================================================ light curves

#: One measurement as the fan-in keeps it (32 bytes).
RECORD = np.dtype([("sid", "<i4"), ("epoch", "<i4"), ("mjd", "<f8"), ("flux", "<f4"), ("err", "<f4"),
                   ("rms", "<f4"), ("pb", "<f4"), ("flags", "<i4")])
REF_RECORD = np.dtype([("sid", "<i4"), ("epoch", "<i4"), ("flux", "<f4")])  # a reference measurement
_BYTES_PER_ROW_WORKING = 400  # a bucket's rows plus the temporaries of sorting, metrics and writing
_BYTES_PER_REF_WORKING = 120  # a reference measurement plus the temporaries of the flux-scale medians
REQUIRED = ("source", "flux_jy", "flux_err_jy", "mjd")


@dataclass(frozen=True)
class LightcurveOptions:
    """How the fan-in builds light curves (config section ``variability``)."""

    exclude_mask: int = int(phot.Flag.EDGE | phot.Flag.NAN_PIXELS | phot.Flag.NO_DATA | phot.Flag.NO_RMS)
    """Measurements with any of these flag bits are left out of the light curves."""
    skip_bad_images: bool = True
    """Leave out tables whose sidecar says the image was graded bad."""
    reference_min_snr: float = 50.0
    """A source whose median SNR reaches this is a flux-scale reference candidate."""
    reference_min_sources: int = 3
    """Epochs with fewer references keep scale 1."""
    reference_max_scatter: float = 0.05
    """References whose corrected fractional rms exceeds this are dropped as variable."""
    systematic_fraction: float = 0.01
    """Fractional error added in quadrature for chi2_red."""
    vs_threshold: float = 4.3
    """|Vs| of a significant two-epoch pair (for m_max)."""
    p_value_max: float = 1e-4
    """is_variable: probability of chi2_red for a constant source below this ..."""
    v_min: float = 0.05
    """... and V at least this."""
    min_epochs: int = 2
    """Fewer usable epochs: no metrics (NaN)."""
    ese_preset: str = "moderate"
    """Name of the ESE preset (recorded with the candidates)."""
    ese: esemod.EseCriteria = esemod.PRESETS["moderate"]
    """The ESE detector's thresholds."""
    memory_mb: float = 1000.0
    """Memory budget of the buffers (MB); beyond it measurements spill to disk by source."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], mem_mb: float | None = None) -> LightcurveOptions:
        v = dict(config.get("variability", {}))
        preset, criteria = esemod.criteria_from_config(v.get("ese", {}))
        memory = v.get("memory_mb") or (0.5 * (mem_mb or config.get("resources", {}).get("lightcurves", {}).get("mem_mb", 2000)))
        keys = ("skip_bad_images", "reference_min_snr", "reference_min_sources", "reference_max_scatter",
                "systematic_fraction", "vs_threshold", "p_value_max", "v_min", "min_epochs")
        return cls(
            exclude_mask=phot.flag_mask(v.get("exclude_flags", ["edge", "nan_pixels", "no_data", "no_rms"])),
            ese_preset=preset, ese=criteria, memory_mb=float(memory), **{k: v[k] for k in keys if k in v},
        )


class _Buckets:
    """Measurements by source bucket (source id % n), in memory or spilled to files."""

    def __init__(self, n: int, workdir: Path, flush_rows: int):
        self.n = n
        self.workdir = workdir
        self.flush_rows = flush_rows
        self.buffers: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.buffered = 0
        self.spilled = False

    def add(self, rec: np.ndarray) -> None:
        if self.n == 1:
            self.buffers[0].append(rec)
            return
        b = rec["sid"] % self.n
        order = np.argsort(b, kind="stable")
        rec, b = rec[order], b[order]
        cuts = np.searchsorted(b, np.arange(self.n + 1))
        for k in range(self.n):
            if cuts[k + 1] > cuts[k]:
                self.buffers[k].append(rec[cuts[k] : cuts[k + 1]])
        self.buffered += len(rec)
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for k, parts in enumerate(self.buffers):
            if parts:
                with open(self.workdir / f"bucket{k:04d}.bin", "ab") as f:
                    np.concatenate(parts).tofile(f)
        self.buffers = [[] for _ in range(self.n)]
        self.buffered = 0
        self.spilled = True

    def get(self, k: int) -> np.ndarray:
        parts = list(self.buffers[k])
        path = self.workdir / f"bucket{k:04d}.bin"
        if path.exists():
            parts.insert(0, np.fromfile(path, dtype=RECORD))
            path.unlink()
        self.buffers[k] = []
        return np.concatenate(parts) if parts else np.empty(0, RECORD)


@dataclass
class _Epoch:
    path: str
    group: str
    mjd: float
    n_rows: int
    n_used: int
    grade: str | None


def _read_photometry(path: str, logger) -> tuple[pd.DataFrame | None, str | None]:
    """The columns the fan-in needs, or (None, why not)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
        return None, f"cannot read: {exc}"
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        return None, f"lacks columns {missing} (has {schema.names})"
    cols = [c for c in ("source", "ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "local_rms_jy", "pb", "flags",
                        "snr", "mjd") if c in schema.names]
    try:
        frame = pq.read_table(path, columns=cols).to_pandas()
    except Exception as exc:  # noqa: BLE001
        return None, f"cannot read: {exc}"
    return frame, None


def _group_of(path: str, side: Mapping | None) -> str:
    if side and side.get("group"):
        return str(side["group"])
    name = Path(path).name
    return name[: -len(".parquet")] if name.endswith(".parquet") else name


def _sidecar_of(path: str) -> dict | None:
    try:
        return provenance.read_sidecar(provenance.sidecar_path(path))
    except provenance.SidecarError:
        return None


def build_lightcurves(photometry_files: Sequence[str], outputs: Mapping[str, str], opts: LightcurveOptions,
                      logger, workdir: str | os.PathLike | None = None) -> dict:
    """The fan-in itself (no sidecars, no database); returns the QA figures. See the module docstring."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    files = sorted(photometry_files)
    skipped: dict[str, str] = {}
    epochs: list[_Epoch] = []
    names: dict[str, int] = {}
    name_list: list[str] = []
    ra: list[float] = []
    dec: list[float] = []

    # Size the buckets from the files' footers (row counts; nothing else is read).
    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path).num_rows
        except Exception:  # noqa: BLE001 - reported when the file is read
            pass
    budget = opts.memory_mb * 2**20
    n_buckets = max(1, math.ceil(total * _BYTES_PER_ROW_WORKING / (0.75 * budget)))
    spill_dir = Path(workdir or Path(outputs["lightcurves"]).parent)
    spill_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lightcurves-spill-", dir=spill_dir))
    buckets = _Buckets(n_buckets, tmp, flush_rows=max(256, int(budget / 8 / RECORD.itemsize)))
    ref_parts: list[np.ndarray] = []
    ref_rows, ref_stride = 0, 1
    ref_cap = max(10000, int(0.25 * budget / _BYTES_PER_REF_WORKING))  # a quarter of the budget for references
    n_rows = np.zeros(1024, np.int64)  # per source id: usable measurements
    n_bright = np.zeros(1024, np.int64)  # ... of them at least reference_min_snr
    n_rows_total = n_used_total = 0
    try:
        # ---------------------------------------------------- pass 1: read every table once
        for path in files:
            side = _sidecar_of(path)
            qa = (side or {}).get("qa") or {}
            grade = qa.get("image_grade")
            if opts.skip_bad_images and grade == "bad":
                skipped[path] = "image graded bad"
                logger.warning("%s: image graded bad, left out", path)
                continue
            frame, why = _read_photometry(path, logger)
            if frame is None:
                skipped[path] = why
                logger.warning("%s: %s; left out", path, why)
                continue
            epoch = len(epochs)
            mjd_col = pd.to_numeric(frame["mjd"], errors="coerce").to_numpy(float)
            emjd = float(qa["mjd"]) if isinstance(qa.get("mjd"), int | float) else (
                float(np.nanmedian(mjd_col)) if np.isfinite(mjd_col).any() else float("nan"))
            flux = pd.to_numeric(frame["flux_jy"], errors="coerce").to_numpy(float)
            err = pd.to_numeric(frame["flux_err_jy"], errors="coerce").to_numpy(float)
            flags = frame["flags"].fillna(int(phot.Flag.NO_DATA)).to_numpy(np.int64) if "flags" in frame else np.zeros(len(frame), np.int64)
            mjd_row = np.where(np.isfinite(mjd_col), mjd_col, emjd)
            use = np.isfinite(flux) & np.isfinite(err) & (err > 0) & np.isfinite(mjd_row) & ((flags & opts.exclude_mask) == 0)
            epochs.append(_Epoch(path, _group_of(path, side), emjd, len(frame), int(use.sum()), grade))
            n_rows_total += len(frame)
            n_used_total += int(use.sum())
            if not use.any():
                if len(frame) == 0:
                    logger.info("%s: no measurements (empty footprint)", path)
                continue
            src = frame["source"].astype(str).to_numpy()[use]
            uniq, inv = np.unique(src, return_inverse=True)
            ids = np.empty(len(uniq), np.int64)
            fra = frame["ra_deg"].to_numpy(float)[use] if "ra_deg" in frame else np.full(use.sum(), np.nan)
            fdec = frame["dec_deg"].to_numpy(float)[use] if "dec_deg" in frame else np.full(use.sum(), np.nan)
            first = np.full(len(uniq), -1)
            first[inv[::-1]] = np.arange(len(inv))[::-1]
            for k, name in enumerate(uniq.tolist()):
                sid = names.get(name)
                if sid is None:
                    sid = names[name] = len(name_list)
                    name_list.append(name)
                    ra.append(float(fra[first[k]]))
                    dec.append(float(fdec[first[k]]))
                ids[k] = sid
            rec = np.empty(int(use.sum()), RECORD)
            rec["sid"] = ids[inv]
            rec["epoch"] = epoch
            rec["mjd"] = mjd_row[use]
            rec["flux"] = flux[use]
            rec["err"] = err[use]
            rec["rms"] = (pd.to_numeric(frame["local_rms_jy"], errors="coerce").to_numpy(float)[use]
                          if "local_rms_jy" in frame else np.nan)
            rec["pb"] = pd.to_numeric(frame["pb"], errors="coerce").to_numpy(float)[use] if "pb" in frame else np.nan
            rec["flags"] = flags[use]
            buckets.add(rec)
            # Reference candidates: a source is one when at least half its measurements reach
            # reference_min_snr (its median does); its rows are kept down to half that, so the
            # selection does not favour epochs that happened to scatter high.
            snr = rec["flux"] / rec["err"]
            if len(name_list) > len(n_rows):
                grow = max(len(name_list), 2 * len(n_rows))
                n_rows = np.concatenate([n_rows, np.zeros(grow - len(n_rows), np.int64)])
                n_bright = np.concatenate([n_bright, np.zeros(grow - len(n_bright), np.int64)])
            np.add.at(n_rows, rec["sid"], 1)
            np.add.at(n_bright, rec["sid"][snr >= opts.reference_min_snr], 1)
            bright = rec[(snr >= 0.5 * opts.reference_min_snr) & (rec["sid"] % ref_stride == 0)]
            if len(bright):
                part = np.empty(len(bright), REF_RECORD)
                for key in REF_RECORD.names:
                    part[key] = bright[key]
                ref_parts.append(part)
                ref_rows += len(part)
            while ref_rows > ref_cap:  # keep every other candidate source: memory stays bounded, no bias
                ref_stride *= 2
                ref_parts = [q[q["sid"] % ref_stride == 0] for q in ref_parts]
                ref_rows = sum(len(q) for q in ref_parts)
        t_read = time.perf_counter()
        n_epochs = len(epochs)
        n_src = len(name_list)
        logger.info("read %d photometry tables (%d left out): %d measurements, %d usable, %d sources; "
                    "%d bucket(s)%s", len(files), len(skipped), n_rows_total, n_used_total, n_src, n_buckets,
                    " spilled to disk" if buckets.spilled else " in memory")

        # ---------------------------------------------------- flux scale from the reference ensemble
        refs = np.concatenate(ref_parts) if ref_parts else np.empty(0, REF_RECORD)
        del ref_parts
        if ref_stride > 1:
            logger.info("reference candidates sampled: every %d-th source kept (memory budget)", ref_stride)
        candidate = (2 * n_bright >= n_rows) & (n_rows >= 3)
        refs = refs[candidate[refs["sid"]]]
        fs = var.flux_scale(refs["epoch"], refs["sid"], refs["flux"], max(n_epochs, 1),
                            min_sources=opts.reference_min_sources, max_scatter=opts.reference_max_scatter)
        scale = fs.scale[:n_epochs] if n_epochs else np.ones(0)
        scale_err = np.nan_to_num(fs.scale_err[:n_epochs], nan=0.0) if n_epochs else np.zeros(0)
        used = np.array([e.n_used > 0 for e in epochs], bool)
        uncorrected = int(((fs.n_ref[:n_epochs] == 0) & used).sum()) if n_epochs else 0
        is_ref = np.zeros(n_src, bool)
        is_ref[fs.references.astype(np.int64)] = True
        if n_epochs:
            good = fs.n_ref[:n_epochs] > 0
            logger.info("flux scale: %d reference sources (%d candidates dropped as variable); scale %.4f +- %.4f "
                        "(rms over epochs), %d epoch(s) without enough references left uncorrected",
                        int(is_ref.sum()), len(fs.rejected), float(np.median(scale[good])) if good.any() else 1.0,
                        float(np.std(scale[good])) if good.any() else 0.0, uncorrected)
        if uncorrected:
            logger.warning("%d epoch(s) have fewer than %d reference sources: flux scale not corrected there",
                           uncorrected, opts.reference_min_sources)

        # ---------------------------------------------------- pass 2: bucket by bucket
        lc_schema = pa.schema([
            ("source", pa.dictionary(pa.int32(), pa.string())), ("mjd", pa.float64()),
            ("group", pa.dictionary(pa.int32(), pa.string())), ("flux_jy", pa.float64()),
            ("flux_err_jy", pa.float64()), ("raw_flux_jy", pa.float32()), ("raw_flux_err_jy", pa.float32()),
            ("scale", pa.float32()), ("local_rms_jy", pa.float32()), ("pb", pa.float32()), ("flags", pa.int32()),
        ])
        groups_arr = pa.array([e.group for e in epochs], pa.string())
        var_parts: list[pd.DataFrame] = []
        dips: list[dict] = []
        plots: list[tuple[float, str, np.ndarray, np.ndarray, np.ndarray, esemod.Dip, float]] = []
        names_arr = np.asarray(name_list, dtype=object)
        ra_arr, dec_arr = np.asarray(ra, float), np.asarray(dec, float)
        with provenance.atomic_output(outputs["lightcurves"]) as lc_tmp:
            with pq.ParquetWriter(lc_tmp, lc_schema) as writer:
                for k in range(n_buckets):
                    rec = buckets.get(k)
                    if len(rec) == 0:
                        continue
                    rec = rec[np.lexsort((rec["mjd"], rec["sid"]))]
                    e = rec["epoch"]
                    s = scale[e]
                    raw_f = rec["flux"].astype(float)
                    raw_e = rec["err"].astype(float)
                    f = raw_f / s
                    err = np.sqrt((raw_e / s) ** 2 + (f * scale_err[e] / s) ** 2)
                    sid = rec["sid"]
                    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
                    usid = sid[starts]
                    local = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(sid)]))
                    writer.write_table(pa.Table.from_arrays([
                        pa.DictionaryArray.from_arrays(pa.array(local, pa.int32()),
                                                       pa.array(names_arr[usid].tolist(), pa.string())),
                        pa.array(rec["mjd"]),
                        pa.DictionaryArray.from_arrays(pa.array(e, pa.int32()), groups_arr),
                        pa.array(f), pa.array(err), pa.array(rec["flux"]), pa.array(rec["err"]),
                        pa.array(s.astype(np.float32)), pa.array(rec["rms"]), pa.array(rec["pb"]),
                        pa.array(rec["flags"]),
                    ], schema=lc_schema))
                    m = var.grouped_metrics(starts, f, err, systematic=opts.systematic_fraction,
                                            vs_threshold=opts.vs_threshold)
                    few = m.n_epochs < opts.min_epochs
                    p = var.chi2_probability(m.chi2_red, m.n_epochs)
                    frame = pd.DataFrame({
                        "source": names_arr[usid], "ra_deg": ra_arr[usid], "dec_deg": dec_arr[usid],
                        "n_epochs": m.n_epochs.astype(np.int64),
                        "first_mjd": rec["mjd"][starts], "last_mjd": rec["mjd"][np.r_[starts[1:], len(sid)] - 1],
                        "mean_flux_jy": m.mean_flux, "weighted_mean_flux_jy": m.weighted_mean_flux,
                        "eta": m.eta, "v": m.v, "vs_max": m.vs_max, "m_max": m.m_max, "chi2_red": m.chi2_red,
                        "p_constant": p, "is_reference": is_ref[usid],
                    })
                    for col in ("eta", "v", "vs_max", "m_max", "chi2_red", "p_constant"):
                        frame.loc[few, col] = np.nan
                    frame["is_variable"] = (frame.p_constant < opts.p_value_max) & (frame.v >= opts.v_min)
                    n_dips = np.zeros(len(starts), np.int64)
                    need = opts.ese.min_points + opts.ese.min_baseline_points
                    ends = np.r_[starts[1:], len(sid)]
                    for j in np.flatnonzero(m.n_epochs >= need):
                        a, b = starts[j], ends[j]
                        found = esemod.find_dips(rec["mjd"][a:b], f[a:b], err[a:b], opts.ese)
                        n_dips[j] = len(found)
                        for d in found:
                            name = str(names_arr[usid[j]])
                            dips.append({
                                "source": name, "ra_deg": ra_arr[usid[j]], "dec_deg": dec_arr[usid[j]],
                                "start_mjd": d.start_mjd, "end_mjd": d.end_mjd, "duration_days": d.end_mjd - d.start_mjd,
                                "depth": d.depth, "significance": d.significance, "n_points": d.n_points,
                                "baseline_flux_jy": d.baseline_flux, "min_mjd": d.min_mjd, "preset": opts.ese_preset,
                            })
                            plots.append((d.significance, name, rec["mjd"][a:b].copy(), f[a:b].copy(),
                                          err[a:b].copy(), d, d.baseline_flux))
                            plots.sort(key=lambda x: -x[0])
                            del plots[12:]
                    frame["n_dips"] = n_dips
                    var_parts.append(frame)
                    del rec, f, err, raw_f, raw_e
        t_lc = time.perf_counter()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    variability = (pd.concat(var_parts, ignore_index=True).sort_values("source", kind="stable").reset_index(drop=True)
                   if var_parts else _empty_variability())
    with provenance.atomic_output(outputs["variability"]) as tmp_v:
        variability.to_parquet(tmp_v, index=False)
    ese_cols = ["source", "ra_deg", "dec_deg", "start_mjd", "end_mjd", "duration_days", "depth", "significance",
                "n_points", "baseline_flux_jy", "min_mjd", "preset"]
    candidates = pd.DataFrame(dips, columns=ese_cols).sort_values(["source", "start_mjd"]).reset_index(drop=True)
    with provenance.atomic_output(outputs["ese_candidates"]) as tmp_e:
        candidates.to_csv(tmp_e, index=False)
    epoch_table = pd.DataFrame({
        "group": [e.group for e in epochs], "mjd": [e.mjd for e in epochs], "path": [e.path for e in epochs],
        "n_rows": [e.n_rows for e in epochs], "n_used": [e.n_used for e in epochs],
        "scale": scale, "scale_err": fs.scale_err[:n_epochs] if n_epochs else [],
        "n_reference": fs.n_ref[:n_epochs] if n_epochs else [], "image_grade": [e.grade for e in epochs],
    })
    if "epochs" in outputs:
        with provenance.atomic_output(outputs["epochs"]) as tmp_t:
            epoch_table.to_csv(tmp_t, index=False)
    if "ese_plot" in outputs:
        _plot_candidates(outputs["ese_plot"], plots, opts)
    mjds = [e.mjd for e in epochs if np.isfinite(e.mjd)]
    qa = {
        "n_sources": int(len(variability)),
        "n_epochs": int(n_epochs),
        "first_mjd": float(min(mjds)) if mjds else None,
        "last_mjd": float(max(mjds)) if mjds else None,
        "n_reference_sources": int(is_ref.sum()),
        "n_references_rejected": int(len(fs.rejected)),
        "n_epochs_uncorrected": uncorrected,
        "scale_rms": float(np.std(scale[fs.n_ref[:n_epochs] > 0])) if n_epochs and (fs.n_ref[:n_epochs] > 0).any() else None,
        "n_measurements": int(n_rows_total),
        "n_used": int(n_used_total),
        "n_files": len(files),
        "n_files_skipped": len(skipped),
        "skipped": [{"path": p, "reason": r} for p, r in list(skipped.items())[:100]],
        "n_variable": int(variability.is_variable.sum()) if len(variability) else 0,
        "n_ese_candidates": int(len(candidates)),
        "ese_preset": opts.ese_preset,
        "n_buckets": n_buckets,
        "spilled": buckets.spilled,
        "reference_sampling": ref_stride,
        "read_s": t_read - t0,
        "lightcurves_s": t_lc - t_read,
    }
    logger.info("%d sources over %d epochs: %d variable, %d ESE candidate(s) (%s preset)", qa["n_sources"],
                n_epochs, qa["n_variable"], qa["n_ese_candidates"], opts.ese_preset)
    return qa


def _empty_variability() -> pd.DataFrame:
    cols = {"source": object, "ra_deg": float, "dec_deg": float, "n_epochs": np.int64, "first_mjd": float,
            "last_mjd": float, "mean_flux_jy": float, "weighted_mean_flux_jy": float, "eta": float, "v": float,
            "vs_max": float, "m_max": float, "chi2_red": float, "p_constant": float, "is_reference": bool,
            "is_variable": bool, "n_dips": np.int64}
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in cols.items()})


def _plot_candidates(path: str, plots, opts: LightcurveOptions) -> None:
    """Light curves of the (up to 12) most significant ESE candidates, baseline and dip marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(plots)
    cols = 3 if n > 4 else max(n, 1)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, f"no ESE candidates ({opts.ese_preset} preset)", ha="center", va="center")
    for ax, (sig, name, t, f, e, dip, f0) in zip(axes.ravel(), plots):
        ax.errorbar(t, f / f0, e / f0, fmt=".", ms=3, lw=0.5, color="0.3")
        ax.axhline(1.0, color="C0", lw=0.8)
        ax.axhline(1.0 - dip.depth, color="C3", lw=0.8, ls="--")
        ax.axvspan(dip.start_mjd, dip.end_mjd, color="C3", alpha=0.12)
        ax.set_title(f"{name}: depth {dip.depth:.2f}, {sig:.0f} sigma", fontsize=9)
        ax.set_xlabel("MJD", fontsize=8)
        ax.set_ylabel("flux / baseline", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    with provenance.atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def lightcurves(
    photometry_files: Sequence[str],
    outputs: Mapping[str, str],
    config: Mapping[str, Any],
    log: str | None = None,
    mem_mb: int | None = None,
    register: bool = True,
    left_out: Mapping[str, str] | None = None,
) -> dict:
    """Rule ``lightcurves``: the fan-in over all photometry tables; returns the QA figures.

    ``left_out`` maps the groups the workflow did not wait for (held back by a
    failure, incomplete) to why; they are logged and listed in the sidecar
    (``left_out``), as are the tables that could not be used (``skipped``).

    ``outputs`` maps ``lightcurves``, ``variability``, ``ese_candidates``
    (and optionally ``epochs``, ``ese_plot``) to paths (see
    :func:`lightcurve_outputs`). Writes each atomically, then the sidecars,
    then registers the three products.
    """
    opts = LightcurveOptions.from_config(config, mem_mb)
    with logged(log, "lightcurves", "all", config if register else None, {}) as logger:
        t0 = time.perf_counter()
        for group, why in sorted((left_out or {}).items()):
            logger.warning("left out %s: %s", group, why)
        qa = build_lightcurves(photometry_files, outputs, opts, logger)
        qa["n_groups_left_out"] = len(left_out or {})
        wall = time.perf_counter() - t0
        cfg = dict(config)
        timings = {"wall_s": wall, "read_s": qa.pop("read_s"), "lightcurves_s": qa.pop("lightcurves_s")}
        inputs = list(photometry_files)
        extra = {"epochs_table": outputs.get("epochs"), "ese_plot": outputs.get("ese_plot"),
                 "left_out": [{"group": g, "reason": w} for g, w in sorted((left_out or {}).items())]}
        provenance.write_sidecar(outputs["lightcurves"], kind="lightcurves", inputs=inputs, config=cfg, qa=qa,
                                 timings=timings, extra={k: v for k, v in extra.items() if v})
        provenance.write_sidecar(outputs["variability"], kind="variability", inputs=[outputs["lightcurves"]], config=cfg,
                                 qa={"n_sources": qa["n_sources"], "n_variable": qa["n_variable"],
                                     "systematic_fraction": opts.systematic_fraction, "p_value_max": opts.p_value_max,
                                     "v_min": opts.v_min}, timings=timings)
        provenance.write_sidecar(outputs["ese_candidates"], kind="ese_candidates", inputs=[outputs["variability"]],
                                 config=cfg, qa={"preset": opts.ese_preset, "n_candidates": qa["n_ese_candidates"],
                                                 "criteria": _options_record(opts.ese)}, timings=timings)
        if register:
            with Database.from_config(config) as db:
                for key in ("lightcurves", "variability", "ese_candidates"):
                    db.register_product(outputs[key])
            logger.info("registered the light curves, variability table and ESE candidates (%.1f s in all)", wall)
    return qa


def lightcurve_outputs(results_dir: str | os.PathLike, name: str = "all") -> dict[str, str]:
    """The products of the fan-in (what rule ``lightcurves`` declares)."""
    return {
        "lightcurves": naming.product_path(results_dir, "lightcurves", name),
        "epochs": naming.product_path(results_dir, "lightcurve_epochs", name),
        "variability": naming.product_path(results_dir, "variability", name),
        "ese_candidates": naming.product_path(results_dir, "ese_candidates", name),
        "ese_plot": naming.product_path(results_dir, "ese_plot", name),
    }


__all__ = ["LightcurveOptions", "build_lightcurves", "lightcurve_outputs", "lightcurves", "photometry"]
