"""Rule ``summary``: the tables and figures of the Snakemake report, and the metrics file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dsa110_contimg.monitoring import report

from .. import naming, provenance
from .common import stage_run


def _read(path: str | os.PathLike, reader) -> pd.DataFrame | None:
    return reader(path) if os.path.exists(path) else None


def _copy_pngs(sources: Sequence[str], name_of, folder: str) -> int:
    """Copy PNGs into a fresh ``folder`` (replaced whole, so no stale picture stays)."""
    with provenance.atomic_output(folder) as tmp:
        tmp.mkdir()
        for src in sources:
            shutil.copyfile(src, tmp / name_of(src))
    return len(sources)


def _health(config: Mapping[str, Any], groups: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Why each failed group failed, and the active alerts, over every night of ``groups``
    (``contimg status``'s figures, from the database's job runs and QA)."""
    from dsa110_contimg.monitoring.status import gather

    health = gather(config, nights=max(1, len({g[:10] for g in groups})))
    failures = {f["group"]: f"{f['rule']}: {f['reason']}" for night in health["nights"] for f in night["failures"]
                if f["group"]}
    return failures, [f"{a['name']}: {a['message']}" for a in health["alerts"]]


def pictures_on_disk(results: str, groups: Sequence[str]) -> tuple[list[str], list[str]]:
    """The thumbnails of ``groups`` and the mosaic QA previews that exist now."""
    thumbnails = [p for g in groups if os.path.exists(p := naming.product_path(results, "thumbnail", g))]
    previews = []
    for png in sorted(Path(results).glob("mosaics/*/*.png")):  # not the sidecars (*.png.json)
        try:
            if naming.parse_mosaic_path(png)[2] == "mosaic_qa":
                previews.append(str(png))
        except ValueError:
            continue  # not a mosaic product (a temporary, a stray file)
    return thumbnails, previews


def summary(
    groups: Sequence[str],
    outputs: Mapping[str, str],
    config: Mapping[str, Any],
    log: str | None = None,
) -> dict[str, Any]:
    """Write every output of rule summary from the products on disk now; returns the figures."""
    results = config["results_dir"]
    thumbnails, mosaic_previews = pictures_on_disk(results, groups)
    with stage_run("summary", config, {}, log) as run:
        logger = run.logger
        obs = report.observations(results, groups)
        failures, alerts = _health(config, groups)
        frame = report.observations_frame(obs, failures)
        counts = frame["stage"].value_counts().to_dict() if len(frame) else {}
        note = (f"{len(frame)} complete observation(s) in raw_dir; reached: "
                + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("raw",) + tuple(n for n, _ in report.STAGES))
                + (f"; {len(failures)} failed" if failures else "")
                + ". Alerts: " + ("; ".join(alerts) if alerts else "none") + ".")
        figures: dict[str, Any] = {"observations": len(frame), "stages": counts, "failed": len(failures),
                                   "alerts": alerts}
        with provenance.atomic_output(outputs["observations"]) as tmp:
            report.write_table(frame, tmp, "Observations: stage reached and image QA", note)
        mosaics = report.mosaic_frame(mosaic_previews)
        with provenance.atomic_output(outputs["mosaics"]) as tmp:
            report.write_table(mosaics, tmp, "Mosaics: QA against the reference catalogue",
                               "" if len(mosaics) else "No mosaic has been built and checked yet.")
        with provenance.atomic_output(outputs["calibration_timeline"]) as tmp:
            figures["calibration"] = report.calibration_timeline(results, obs, tmp)
        lightcurves = _read(naming.product_path(results, "lightcurves", "all"), pd.read_parquet)
        variability = _read(naming.product_path(results, "variability", "all"), pd.read_parquet)
        ese = _read(naming.product_path(results, "ese_candidates", "all"), pd.read_csv)
        from dsa110_contimg.calibration.calibrators import load_calibrators

        catalogue = load_calibrators().set_index("name")["flux_jy"].to_dict()
        with provenance.atomic_output(outputs["calibrator_flux"]) as tmp:
            figures["calibrator_flux"] = report.calibrator_flux(
                _read(naming.calflux_path(results), pd.read_csv), lightcurves, catalogue,
                config["calibration"]["flux_alert_fraction"], tmp)
        with provenance.atomic_output(outputs["lightcurves"]) as tmp:
            figures["lightcurves"] = report.lightcurve_plot(lightcurves, variability, ese, tmp)
        bench = report.read_benchmarks(results)
        bench = bench[bench["rule"] != "summary"]
        with provenance.atomic_output(outputs["throughput"]) as tmp:
            figures["throughput"] = report.throughput(bench, counts.get("imaged", 0) + counts.get("photometry", 0),
                                                      tmp)
        figures["thumbnails"] = _copy_pngs(thumbnails, os.path.basename, outputs["thumbnails"])
        figures["mosaic_previews"] = _copy_pngs(
            mosaic_previews, lambda p: "{}-{}.png".format(*naming.parse_mosaic_path(p)[:2]),
            outputs["mosaic_previews"])
        from dsa110_contimg.monitoring.status import write_prometheus

        write_prometheus(outputs["metrics"], config)
        logger.info("summary: %s", {k: v for k, v in figures.items() if k != "throughput"})
    return figures
