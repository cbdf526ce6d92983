"""Free disk space where the pipeline writes, against ``run.min_free_gb``.

``contimg run`` checks before it starts any job: below the limit it starts
none (heavy jobs write GBs: a full disk would corrupt half-written products
and the database) and raises the ``disk_low`` alert, with the numbers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from .. import naming
from .status import _metric

GB = 1e9


def figures(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Free and total bytes of the file systems of results_dir (and raw_dir), with the limit."""
    limit = float(config["run"]["min_free_gb"]) * GB
    out, seen = [], set()
    for label, path in (("results", config["results_dir"]), ("raw", config["raw_dir"])):
        probe = os.path.abspath(path)
        while not os.path.exists(probe):  # results_dir before the first run
            probe = os.path.dirname(probe)
        usage = shutil.disk_usage(probe)
        device = os.stat(probe).st_dev
        if device in seen:
            continue
        seen.add(device)
        out.append({"path": label, "dir": path, "free_bytes": usage.free, "total_bytes": usage.total,
                    "min_free_bytes": limit})
    return out


def alerts(disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``disk_low`` alert per file system below its limit."""
    return [
        {"name": "disk_low", "night": None,
         "message": f"{d['dir']}: {d['free_bytes'] / GB:.1f} GB free of {d['total_bytes'] / GB:.0f} GB, below "
                    f"run.min_free_gb {d['min_free_bytes'] / GB:g}: no job was started"}
        for d in disks if d["free_bytes"] < d["min_free_bytes"]
    ]  # fmt: skip


def render(disks: list[dict[str, Any]]) -> str:
    out: list[str] = []
    _metric(out, "contimg_disk_free_bytes", "Free bytes of the file system (results: results_dir, raw: raw_dir).",
            [(float(d["free_bytes"]), {"path": d["path"]}) for d in disks])
    _metric(out, "contimg_disk_total_bytes", "Size of the file system.",
            [(float(d["total_bytes"]), {"path": d["path"]}) for d in disks])
    _metric(out, "contimg_disk_min_free_bytes", "run.min_free_gb: below it no job starts.",
            [(float(d["min_free_bytes"]), {"path": d["path"]}) for d in disks])
    return "\n".join(out) + "\n" if out else ""


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def _kept_class(path: str, top: str) -> str:
    """A per-observation product's kind (naming.PRODUCTS), ``sidecars``, ``logs+benchmarks``,
    or ``shared`` (fan-ins, mosaics, the database: not per observation)."""
    if top in ("logs", "benchmarks"):
        return "logs+benchmarks"
    try:
        kind, wildcards = naming.parse_product_path(path)
    except ValueError:
        return "shared"
    if path.endswith(".json") and not naming.PRODUCTS[kind].template.endswith(".json"):
        return "sidecars"
    return kind if {"group", "calgroup"} & set(wildcards) else "shared"


def kept_by_product(results_dir: str | os.PathLike, raw_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Bytes kept under ``results_dir`` by product class, and per observation.

    Observations are counted by the image sidecars (imaged groups). Per-group
    products are listed one entry per group (an MS folder counts whole);
    everything else (mosaics, light curves, the database) is ``shared``.
    With ``raw_dir``, also the raw bytes per observation and the ratio.
    """
    results = os.fspath(results_dir)
    totals: dict[str, int] = {}
    for top in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        base = os.path.join(results, top)
        entries = [os.path.join(top, e) for e in os.listdir(base)] if os.path.isdir(base) else [top]
        for rel in entries:
            kind = _kept_class(os.path.join(results, rel), top)
            totals[kind] = totals.get(kind, 0) + _size(os.path.join(results, rel))
    images = os.path.join(results, "images")
    n_obs = sum(1 for f in os.listdir(images) if f.endswith(".image.fits.json")) if os.path.isdir(images) else 0
    per_obs = {k: v / n_obs for k, v in totals.items() if k != "shared"} if n_obs else {}
    out: dict[str, Any] = {"n_observations": n_obs, "bytes": totals, "per_observation": per_obs,
                           "kept_per_observation": sum(per_obs.values())}
    if raw_dir is not None and n_obs:
        raw = [os.path.join(raw_dir, f) for f in os.listdir(raw_dir) if f.endswith(".hdf5")]
        n_raw_obs = max(1, len(raw) // 16)
        out["raw_per_observation"] = sum(os.path.getsize(p) for p in raw) / n_raw_obs
        out["kept_fraction_of_raw"] = out["kept_per_observation"] / out["raw_per_observation"]
    return out
