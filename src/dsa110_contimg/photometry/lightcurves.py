"""Light curves from every epoch's forced photometry: the fan-in's science.

Every photometry table -> one row per source and epoch, flux-scale corrected
(references: bright sources steady across epochs), variability metrics per
source (:mod:`.variability`), extreme-scattering-event candidates (:mod:`.ese`)
and new-source candidates grouped by position over epochs. Bad input never
stops it: an unreadable table, one with missing columns or an empty one is
logged, left out and listed.

Memory: the tables are read one at a time; measurements are kept compactly (32
bytes each) in ``B`` buckets by source, spilled to disk when all of them would
not fit ``memory_mb``; then one bucket at a time is sorted, corrected, measured
and written. Memory is bounded by the largest bucket, not by the number of
images.
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

from .. import naming, provenance
from ..config import default, options
from . import ese as esemod
from . import forced as phot
from . import variability as var

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

    exclude_mask: int = phot.flag_mask(default("variability.exclude_flags"))
    """Measurements with any of these flag bits are left out of the light curves."""
    skip_bad_images: bool = default("variability.skip_bad_images")
    """Leave out tables whose sidecar says the image was graded bad (else: flag bad_image on their rows)."""
    reference_min_snr: float = default("variability.reference_min_snr")
    """A source whose median SNR reaches this is a flux-scale reference candidate."""
    reference_min_sources: int = default("variability.reference_min_sources")
    """Epochs with fewer references keep scale 1."""
    reference_max_scatter: float = default("variability.reference_max_scatter")
    """References whose corrected fractional rms exceeds this are dropped as variable."""
    systematic_fraction: float = default("variability.systematic_fraction")
    """Fractional error added in quadrature for chi2_red."""
    vs_threshold: float = default("variability.vs_threshold")
    """|Vs| of a significant two-epoch pair (for m_max)."""
    p_value_max: float = default("variability.p_value_max")
    """is_variable: probability of chi2_red for a constant source below this ..."""
    v_min: float = default("variability.v_min")
    """... and V at least this."""
    min_epochs: int = default("variability.min_epochs")
    """Fewer usable epochs: no metrics (NaN)."""
    ese_preset: str = default("variability.ese.preset")
    """Name of the ESE preset (recorded with the candidates)."""
    ese: esemod.EseCriteria = esemod.PRESETS[default("variability.ese.preset")]
    """The ESE detector's thresholds."""
    new_source_radius_arcsec: float = default("variability.new_source_radius_arcsec")
    """New-source candidates of different epochs this close are one (recurrence)."""
    memory_mb: float = 1000.0
    """Memory budget of the buffers (MB); beyond it measurements spill to disk by source (from the
    config: ``variability.memory_mb``, else half the rule's ``resources.lightcurves.mem_mb``)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], mem_mb: float | None = None) -> LightcurveOptions:
        """From a validated config (defaults from the schema only)."""
        v = config["variability"]
        preset, criteria = esemod.criteria_from_config(v["ese"])
        memory = v["memory_mb"] or 0.5 * (mem_mb or config["resources"]["lightcurves"]["mem_mb"])
        return options(cls, v, exclude_mask=phot.flag_mask(v["exclude_flags"]), ese_preset=preset, ese=criteria,
                       memory_mb=float(memory))


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:  # an unreadable file is skipped, never fatal
        return None, f"cannot read: {exc}"
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        return None, f"lacks columns {missing} (has {schema.names})"
    cols = [c for c in ("source", "ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "local_rms_jy", "pb", "flags",
                        "snr", "mjd") if c in schema.names]
    try:
        frame = pq.read_table(path, columns=cols).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        return None, f"cannot read: {exc}"
    return frame, None


def _group_of(path: str, side: Mapping | None) -> str:
    if side and side.get("group"):
        return str(side["group"])
    return naming.group_of_path(path) or Path(path).name


def _sidecar_of(path: str) -> dict | None:
    try:
        return provenance.read_sidecar(provenance.sidecar_path(path))
    except provenance.SidecarError:
        return None


def build_lightcurves(photometry_files: Sequence[str], outputs: Mapping[str, str], opts: LightcurveOptions,
                      logger, workdir: str | os.PathLike | None = None,
                      new_source_files: Sequence[str] = ()) -> dict:
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
        except (OSError, pa.ArrowException):
            pass  # reported when the file is read
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
            flags |= phot.grade_flag(grade)  # tables written before the grade flag existed carry it too
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
            # significance against the noise alone (flux_err_jy includes the systematic term)
            snr = (pd.to_numeric(frame["snr"], errors="coerce").to_numpy(float)[use] if "snr" in frame
                   else rec["flux"] / rec["err"])
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
    if "lightcurve_epochs" in outputs:
        with provenance.atomic_output(outputs["lightcurve_epochs"]) as tmp_t:
            epoch_table.to_csv(tmp_t, index=False)
    if "ese_plot" in outputs:
        _plot_candidates(outputs["ese_plot"], plots, opts)
    new_summary = _new_source_summary(new_source_files, outputs.get("new_source_summary"), opts, logger)
    mjds = [e.mjd for e in epochs if np.isfinite(e.mjd)]
    qa = {
        "n_sources": int(len(variability)),
        "n_epochs": int(n_epochs),
        "first_mjd": float(min(mjds)) if mjds else None,
        "last_mjd": float(max(mjds)) if mjds else None,
        "n_reference_sources": int(is_ref.sum()),
        "n_references_rejected": int(len(fs.rejected)),
        "n_epochs_uncorrected": uncorrected,
        "n_epochs_marginal_image": sum(e.grade == "marginal" for e in epochs),
        "n_epochs_bad_image": sum(e.grade == "bad" for e in epochs),
        "scale_rms": float(np.std(scale[fs.n_ref[:n_epochs] > 0])) if n_epochs and (fs.n_ref[:n_epochs] > 0).any() else None,
        "n_measurements": int(n_rows_total),
        "n_used": int(n_used_total),
        "n_files": len(files),
        "n_files_skipped": len(skipped),
        "skipped": [{"path": p, "reason": r} for p, r in list(skipped.items())[:100]],
        "n_variable": int(variability.is_variable.sum()) if len(variability) else 0,
        "n_ese_candidates": int(len(candidates)),
        "n_new_source_candidates": int(len(new_summary)),
        "n_new_source_single_epoch": int(new_summary.single_epoch.sum()) if len(new_summary) else 0,
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


def _new_source_summary(files: Sequence[str], output: str | None, opts: LightcurveOptions, logger) -> pd.DataFrame:
    """The new-source candidates of all epochs grouped by position (see photometry.new_sources.associate)."""
    from dsa110_contimg.photometry.new_sources import associate

    tables = []
    for path in sorted(files):
        try:
            tables.append(pd.read_csv(path))
        except (OSError, ValueError) as exc:  # an unreadable list is reported and left out, never fatal
            logger.warning("%s: cannot read new-source candidates (%s); left out", path, exc)
    tables = [t for t in tables if {"ra_deg", "dec_deg", "snr", "flux_jy", "mjd"} <= set(t.columns)]
    summary = associate(tables, opts.new_source_radius_arcsec)
    if output:
        with provenance.atomic_output(output) as tmp:
            summary.to_csv(tmp, index=False)
    if len(summary):
        logger.info("%d new-source candidate(s) over %d epoch list(s): %d seen in more than one epoch, %d single-epoch",
                    len(summary), len(tables), int((~summary.single_epoch).sum()), int(summary.single_epoch.sum()))
    return summary


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
