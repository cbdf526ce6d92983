"""Prometheus figures of the rolling run itself and of the jobs' benchmark files.

Appended by ``contimg run`` to the status metrics (:mod:`.status`):

- ``contimg_run_*``: when the last run started and ended, how long it took,
  its exit status and passes, and when the last successful run ended (kept
  from the previous file across failed runs);
- ``contimg_rule_*``: per rule over the jobs whose Snakemake benchmark file
  (``<results_dir>/benchmarks/<rule>/...tsv``) was written in the last
  ``window_h`` hours: jobs, jobs per hour, median and longest wall time and
  largest peak memory. Only recent files are read (one ``stat`` each for the
  rest), so the cost does not grow with the survey's age.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

from .status import _metric

RUN_HELP = {
    "last_run_timestamp_seconds": "When the last contimg run ended (Unix time).",
    "last_run_duration_seconds": "Wall time of the last contimg run.",
    "last_run_exit_code": "Exit status of the last contimg run (0 ok, 1 snakemake failed).",
    "last_run_passes": "Snakemake passes of the last run (2: a job failed and its group was held back).",
    "last_success_timestamp_seconds": "When the last contimg run whose workflow finished ended (Unix time).",
}


def _previous_value(path: str | os.PathLike | None, name: str) -> float | None:
    try:
        text = Path(path).read_text(encoding="utf-8") if path else ""
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def run_metrics(figures: Mapping[str, float], previous: str | os.PathLike | None = None) -> str:
    """``contimg_run_<key>`` gauges; a missing ``last_success_timestamp_seconds`` is taken from ``previous``."""
    figures = dict(figures)
    if "last_success_timestamp_seconds" not in figures:
        old = _previous_value(previous, "contimg_run_last_success_timestamp_seconds")
        if old is not None:
            figures["last_success_timestamp_seconds"] = old
    out: list[str] = []
    for key, value in figures.items():
        _metric(out, f"contimg_run_{key}", RUN_HELP.get(key, key), [(float(value), {})])
    return "\n".join(out) + "\n"


def _read_benchmark(path: Path) -> tuple[float, float] | None:
    """(wall s, peak RSS MB) of the last line of a Snakemake benchmark TSV, None if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 2:
        return None
    head, last = lines[0].split("\t"), lines[-1].split("\t")
    try:
        wall = float(last[head.index("s")])
        rss = float(last[head.index("max_rss")]) if "max_rss" in head else float("nan")
    except (ValueError, IndexError):
        return None
    return wall, rss


def benchmark_metrics(results_dir: str | os.PathLike, window_h: float = 24.0, now: float | None = None) -> str:
    """Per-rule ``contimg_rule_*`` gauges over the benchmark files of the last ``window_h`` hours."""
    now = time.time() if now is None else now
    folder = Path(results_dir) / "benchmarks"
    per_rule: dict[str, list[tuple[float, float]]] = {}
    if folder.is_dir():
        for rule_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for tsv in rule_dir.glob("**/*.tsv"):
                try:
                    recent = now - tsv.stat().st_mtime <= window_h * 3600
                except FileNotFoundError:
                    continue
                if recent and (figures := _read_benchmark(tsv)) is not None:
                    per_rule.setdefault(rule_dir.name, []).append(figures)
    rules = sorted(per_rule)
    window = {"window_h": f"{window_h:g}"}
    out: list[str] = []
    _metric(out, "contimg_rule_jobs", "Jobs of the rule that ended within window_h hours (benchmark files).",
            [(float(len(per_rule[r])), {"rule": r, **window}) for r in rules])
    _metric(out, "contimg_rule_jobs_per_hour", "Jobs of the rule per hour over the window.",
            [(len(per_rule[r]) / window_h, {"rule": r, **window}) for r in rules])
    _metric(out, "contimg_rule_duration_seconds", "Median and longest wall time of the rule's jobs in the window.",
            [(v, {"rule": r, "stat": s, **window}) for r in rules
             for s, v in (("median", statistics.median(w for w, _ in per_rule[r])),
                          ("max", max(w for w, _ in per_rule[r])))])
    _metric(out, "contimg_rule_max_rss_megabytes", "Largest peak resident memory of the rule's jobs in the window.",
            [(max(m for _, m in per_rule[r]), {"rule": r, **window}) for r in rules])
    return "\n".join(out) + "\n" if out else ""
