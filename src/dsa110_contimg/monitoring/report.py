"""Figures and tables of the Snakemake report (rule ``summary``).

Everything here is read from the products on disk and their JSON sidecars
(the source of truth; the database is rebuilt from them), so the report
describes exactly the files that exist: a partial run gives a partial report
that says what is missing instead of failing. Every figure has a title, axes
with units and a caption (``workflow/report/*.rst``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import naming
from ..provenance import SidecarError, read_sidecar

#: Stages of one observation, in the order it reaches them, and the product
#: whose existence (with its sidecar) proves the stage is done.
STAGES: tuple[tuple[str, str], ...] = (
    ("converted", "ms"),
    ("calibrated", "calibrated"),
    ("imaged", "image"),
    ("photometry", "photometry"),
)

#: Light curves drawn: the most variable sources, plus every ESE candidate.
N_LIGHTCURVES = 6


@dataclass(frozen=True)
class Observation:
    """What the files say about one observation (group)."""

    group: str
    stage: str  # the last stage reached, or "raw"
    caltable: str | None
    image_qa: Mapping[str, Any] | None


def _qa(product: str) -> Mapping[str, Any] | None:
    """The ``qa`` block of a product's sidecar, or None when there is no sidecar yet."""
    sidecar = naming.sidecar_path(product)
    return (read_sidecar(sidecar).get("qa") or {}) if os.path.exists(sidecar) else None


def observations(results_dir: str | os.PathLike, groups: Iterable[str]) -> list[Observation]:
    """The stage and QA of every group, from the products and sidecars on disk."""
    rows = []
    for group in sorted(groups):
        stage = "raw"
        for name, kind in STAGES:
            if not os.path.exists(naming.product_path(results_dir, kind, group)):
                break
            stage = name
        cal = _qa(naming.product_path(results_dir, "calibrated", group))
        image = _qa(naming.product_path(results_dir, "image", group))
        rows.append(Observation(group, stage, (cal or {}).get("caltable"), image))
    return rows


def observations_frame(obs: Iterable[Observation], failures: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per observation: stage, calibration, image QA and why it failed (if it did)."""
    failures = failures or {}
    rows = []
    for o in obs:
        qa = o.image_qa or {}
        rows.append({
            "observation": o.group,
            "night": o.group[:10],
            "stage": o.stage,
            "calibration": o.caltable or "",
            "imager": qa.get("imager", ""),
            "rms (mJy/beam)": _round(qa.get("rms_jy"), 1e3, 3),
            "rms / thermal": _round(qa.get("rms_over_thermal"), 1, 2),
            "dynamic range": _round(qa.get("dynamic_range"), 1, 0),
            "flagged": _round(qa.get("flagged_fraction"), 1, 3),
            "grade": qa.get("grade", ""),
            "grade reasons": "; ".join(qa.get("grade_reasons") or []),
            "failure": failures.get(o.group, ""),
        })
    return pd.DataFrame(rows)


def _round(value: Any, scale: float, digits: int) -> float | None:
    return None if value is None else round(float(value) * scale, digits)


def write_table(frame: pd.DataFrame, path: str | os.PathLike, title: str, note: str = "") -> None:
    """A standalone HTML page holding one table (the report shows it inline)."""
    style = (
        "body{font-family:sans-serif;font-size:13px;margin:8px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#eee}td:first-child{text-align:left}"
        ".bad{background:#f8d0d0}.marginal{background:#fbeec8}.good{background:#d7f0d7}"
    )
    body = frame.to_html(index=False, na_rep="", border=0, classes="products") if len(frame) else ""
    for grade in ("good", "marginal", "bad"):
        body = body.replace(f"<td>{grade}</td>", f'<td class="{grade}">{grade}</td>')
    text = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + (body or "<p>Nothing yet.</p>")
        + "</body></html>"
    )
    Path(path).write_text(text)


# ------------------------------------------------------------------ figures


def _canvas(size: tuple[float, float], ncols: int = 1):
    """A figure and its axes, drawn with Agg and no pyplot (no global state to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _figure(title: str, xlabel: str, ylabel: str, size=(9.0, 4.5)):
    fig, ax = _canvas(size)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _save(fig, path: str | os.PathLike) -> None:
    fig.savefig(path, dpi=100, format="png")  # path may be a temporary name


def _nothing(ax, message: str) -> None:
    """Say on an empty plot what is missing (the report of a partial run)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.3")


def _time(text: Any) -> datetime:
    return pd.Timestamp(text).to_pydatetime()


def calibration_timeline(
    results_dir: str | os.PathLike, obs: Iterable[Observation], path: str | os.PathLike
) -> dict[str, Any]:
    """Validity window of every calibration (bars) and the calibration each
    observation used (markers); observations without one are drawn in red.

    Returns the figures the caption quotes: calibrations, gaps and overlaps.
    """
    obs = list(obs)
    cals = {}
    folder = Path(naming.product_path(results_dir, "caltable", "x")).parent
    for sidecar in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            qa = read_sidecar(sidecar).get("qa") or {}
        except SidecarError:
            continue  # a sidecar being written; the next run draws it
        if "valid_start" in qa and "valid_end" in qa:
            cals[naming.group_of_path(sidecar)] = (_time(qa["valid_start"]), _time(qa["valid_end"]), qa.get("calibrator", ""),
                                  bool(qa.get("passed", True)))
    fig, ax = _figure("Calibration validity", "time (UTC)", "calibration (calibrator transit group)")
    names = sorted(cals)
    row = {name: i for i, name in enumerate(names)}
    for name, (start, end, calibrator, passed) in cals.items():
        ax.barh(row[name], (end - start).total_seconds() / 86400, left=start, height=0.5,
                color="tab:blue" if passed else "0.7", alpha=0.35)
        ax.text(start, row[name] + 0.3, f"{calibrator}{'' if passed else ' (failed QA)'}", fontsize=8)
    used = [(o, _time(o.group)) for o in obs if o.caltable in row]
    if used:
        ax.plot([t for _, t in used], [row[o.caltable] for o, _ in used], "o", color="tab:blue", ms=4,
                label="observation, calibrated with this table")
    uncal = [_time(o.group) for o in obs if o.caltable not in row and o.stage != "raw"]
    if uncal:
        ax.plot(uncal, [-1] * len(uncal), "x", color="tab:red", label="observation without calibration")
    ax.set_yticks(range(-1 if uncal else 0, len(names)), (["none"] if uncal else []) + names)
    if not cals and not uncal:
        _nothing(ax, "No calibration yet (no caltable sidecar under results/caltables).")
    else:
        ax.legend(loc="upper right", fontsize=8)
        fig.autofmt_xdate()
    _save(fig, path)
    spans = sorted((s, e) for s, e, _, ok in cals.values() if ok)
    gaps = sum(1 for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False) if s1 > e0)
    overlaps = sum(1 for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False) if s1 < e0)
    return {"calibrations": len(cals), "uncalibrated": len(uncal), "gaps": gaps, "overlaps": overlaps}


def calibrator_flux(
    calflux: pd.DataFrame | None, lightcurves: pd.DataFrame | None, catalogue_jy: Mapping[str, float],
    alert_fraction: float, path: str | os.PathLike,
) -> dict[str, Any]:
    """Measured over catalogue flux of the calibrators against time, with the alert band.

    Two measurements: the gain-transfer flux of each calibrator solution
    (``calibrator_flux.csv``) and the calibrators' forced photometry in the
    images (light curves of sources named in the calibrator list).
    """
    fig, ax = _figure("Calibrator flux monitoring", "time (UTC)", "measured / catalogue flux")
    ax.axhspan(1 - alert_fraction, 1 + alert_fraction, color="tab:green", alpha=0.12,
               label=f"within the alert threshold (±{alert_fraction:.0%})")
    ax.axhline(1, color="0.5", lw=0.8)
    n = 0
    if calflux is not None and len(calflux):
        ok = calflux.dropna(subset=["flux_ratio"])
        if len(ok):
            ax.plot([_time(t) for t in ok["transit_time"]], ok["flux_ratio"], "s", color="tab:orange",
                    label="gain transfer between calibrator transits")
            n += len(ok)
    if lightcurves is not None and len(lightcurves):
        for name, lc in lightcurves[lightcurves["source"].isin(list(catalogue_jy))].groupby("source", observed=True):
            ratio = lc["flux_jy"] / catalogue_jy[name]
            ax.errorbar([_time(g) for g in lc["group"]], ratio, yerr=lc["flux_err_jy"] / catalogue_jy[name],
                        fmt="o", ms=4, label=f"{name}, image photometry")
            n += len(lc)
    if n:
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
    else:
        _nothing(ax, "No calibrator flux measured yet (no calibrator_flux.csv ratio, no calibrator light curve).")
    _save(fig, path)
    return {"points": n}


def lightcurve_plot(
    lightcurves: pd.DataFrame | None, variability: pd.DataFrame | None, ese: pd.DataFrame | None,
    path: str | os.PathLike, n: int = N_LIGHTCURVES,
) -> list[str]:
    """Light curves of the ESE candidates and the most variable sources (by eta).

    Returns the sources drawn.
    """
    fig, ax = _figure("Light curves: ESE candidates and most variable sources", "time (MJD)",
                      "flux / weighted mean flux")
    chosen: list[str] = []
    if ese is not None and len(ese):
        chosen += list(dict.fromkeys(ese["source"]))
    if variability is not None and len(variability):
        ranked = variability[variability["n_epochs"] > 1].sort_values("eta", ascending=False)
        chosen += [s for s in ranked["source"] if s not in chosen]
    chosen = chosen[:max(n, len(set(ese["source"])) if ese is not None and len(ese) else n)]
    drawn = []
    if lightcurves is not None and len(lightcurves) and chosen:
        mean = variability.set_index("source")["weighted_mean_flux_jy"] if variability is not None else None
        for name in chosen:
            lc = lightcurves[lightcurves["source"] == name].sort_values("mjd")
            if lc.empty:
                continue
            ref = float(mean[name]) if mean is not None and name in mean.index else float(lc["flux_jy"].median())
            tag = " (ESE candidate)" if ese is not None and name in set(ese["source"]) else ""
            ax.errorbar(lc["mjd"], lc["flux_jy"] / ref, yerr=lc["flux_err_jy"] / ref, fmt="o-", ms=3,
                        label=f"{name} ({ref:.3g} Jy){tag}")
            drawn.append(name)
    if drawn:
        ax.legend(loc="best", fontsize=8)
        ax.ticklabel_format(axis="x", useOffset=False)
    else:
        _nothing(ax, "No light curve yet (the lightcurves rule has not run, or no source has two epochs).")
    _save(fig, path)
    return drawn


def read_benchmarks(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every job's Snakemake benchmark: rule, job, wall s, peak memory MB, end time."""
    rows = []
    folder = Path(results_dir) / "benchmarks"
    for tsv in sorted(folder.glob("**/*.tsv")) if folder.is_dir() else []:
        try:
            table = pd.read_csv(tsv, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"{tsv}: not a Snakemake benchmark file ({err})") from None
        if table.empty or "s" not in table:
            continue
        last = table.iloc[-1]
        end = tsv.stat().st_mtime
        rule, *job = tsv.relative_to(folder).with_suffix("").parts
        rows.append({"rule": rule, "job": "/".join(job), "wall_s": float(last["s"]),
                     "max_rss_mb": float(last.get("max_rss", np.nan)), "end": end, "start": end - float(last["s"])})
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "max_rss_mb", "end", "start"])


def busy_hours(starts: Iterable[float], ends: Iterable[float]) -> float:
    """Hours during which at least one job ran (the union of the jobs' intervals), so
    the pauses between separate runs of the workflow do not count."""
    total, current_end = 0.0, -np.inf
    for start, end in sorted(zip(starts, ends, strict=True)):
        if start > current_end:
            total += end - start
            current_end = end
        elif end > current_end:
            total += end - current_end
            current_end = end
    return total / 3600


def throughput(bench: pd.DataFrame, n_imaged: int, path: str | os.PathLike) -> dict[str, Any]:
    """Wall time and peak memory per rule (box per rule), and observations imaged per hour."""
    fig, (a1, a2) = _canvas((11, 4.5), ncols=2)
    figures: dict[str, Any] = {"jobs": len(bench), "observations_imaged": n_imaged}
    if len(bench):
        order = bench.groupby("rule")["wall_s"].median().sort_values(ascending=False).index.tolist()
        for ax, col, label in ((a1, "wall_s", "wall time per job (s)"), (a2, "max_rss_mb", "peak memory per job (MB)")):
            ax.boxplot([bench.loc[bench["rule"] == r, col].dropna() for r in order], orientation="horizontal",
                       tick_labels=order)
            ax.set_xlabel(label)
            ax.set_xscale("log")
        span_h = busy_hours(bench["start"], bench["end"])
        figures.update(
            span_h=span_h,
            observations_per_hour=n_imaged / span_h if span_h > 0 else None,
            slowest=bench.sort_values("wall_s", ascending=False).head(3)[["rule", "job", "wall_s"]]
            .to_dict(orient="records"),
        )
        rate = figures["observations_per_hour"]
        slowest = "; ".join(f"{r['rule']} {r['job']} ({r['wall_s']:.0f} s)" for r in figures["slowest"][:3])
        fig.supxlabel(f"slowest jobs: {slowest}", fontsize=8)
        fig.suptitle(f"Throughput: {n_imaged} observations imaged in {span_h:.2f} h of running jobs"
                     + (f" ({rate:.1f} per hour)" if rate else ""))
    else:
        for ax, label in ((a1, "wall time per job (s)"), (a2, "peak memory per job (MB)")):
            ax.set_xlabel(label)
            _nothing(ax, "No benchmark file yet (results/benchmarks).")
        fig.suptitle("Throughput: no job has finished yet")
    a1.set_title("Wall time by rule")
    a2.set_title("Peak memory by rule")
    a1.set_ylabel("rule")
    _save(fig, path)
    return figures


def mosaic_frame(previews: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per mosaic QA preview (``*.qa.png``): tier, name and the QA figures of its sidecar."""
    rows = []
    for preview in sorted(map(str, previews)):
        try:
            qa = read_sidecar(naming.sidecar_path(preview)).get("qa") or {}
        except SidecarError:
            continue
        tier, name, _ = naming.parse_mosaic_path(preview)
        rows.append({
            "tier": qa.get("tier", tier), "mosaic": qa.get("name", name),
            "rms (mJy/beam)": _round(qa.get("rms_jy"), 1e3, 3),
            "noise ratio": _round(qa.get("noise_ratio"), 1, 3),
            "dynamic range": _round(qa.get("dynamic_range"), 1, 0),
            "sources": qa.get("n_sources"), "matched": qa.get("n_matched"),
            "offset (arcsec)": _round(qa.get("astrometry_offset_arcsec"), 1, 2),
            "flux ratio": _round(qa.get("flux_ratio"), 1, 3), "grade": qa.get("grade", ""),
            "grade reasons": "; ".join(qa.get("grade_reasons") or []),
        })
    return pd.DataFrame(rows)
