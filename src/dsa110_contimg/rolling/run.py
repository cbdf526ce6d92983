"""``contimg run``: one rolling run of the workflow, for a timer or cron.

1. Take the run lock (:mod:`.lock`): a second run exits at once.
2. Run Snakemake with ``run.rolling`` on (the window, settle time and held-back
   groups of :mod:`.window` and :mod:`.held`) and ``--keep-going``. When a job
   failed, run it once more: the failed groups are now held back, so the
   fan-ins (light curves, calibrator flux, mosaics) run on what succeeded.
3. Write the status (``<results_dir>/run/status.json``) and the Prometheus
   metrics (``run.metrics_file``), with the run's own figures.
4. Send the alerts that are new or resolved (:mod:`..monitoring.notify`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import provenance
from .lock import run_lock

#: Exit status of a run that found another one running.
EXIT_LOCKED = 3


@dataclass
class RunResult:
    """What one rolling run did."""

    passes: list[int] = field(default_factory=list)
    """Snakemake's exit status of each pass (one, or two after a failure)."""
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    sent: list[str] = field(default_factory=list)
    notify_failed: list[str] = field(default_factory=list)
    extra_alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def workflow_ok(self) -> bool:
        return bool(self.passes) and self.passes[-1] == 0

    def exit_code(self) -> int:
        """0: the workflow finished (failed groups are held back and alerted, not errors);
        1: Snakemake itself failed (bad config, unreadable raw_dir, a fan-in failed)."""
        return 0 if self.workflow_ok else 1


def run_dir(config: Mapping[str, Any]) -> str:
    return os.path.join(config["results_dir"], "run")


def lock_path(config: Mapping[str, Any]) -> str:
    return config["run"]["lock_file"] or os.path.join(run_dir(config), "contimg-run.lock")


def metrics_path(config: Mapping[str, Any]) -> str:
    return config["run"]["metrics_file"] or os.path.join(run_dir(config), "contimg.prom")


def find_snakefile(explicit: str | None = None) -> str:
    """The workflow: ``explicit``, ./Snakefile, or the one of the source tree this package is in."""
    for candidate in (explicit, "Snakefile", Path(__file__).resolve().parents[3] / "Snakefile"):
        if candidate and os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError("no Snakefile: pass --snakefile (the workflow's Snakefile)")


def snakemake_command(
    snakefile: str,
    configfiles: Sequence[str],
    override: str,
    extra: Sequence[str] = (),
    dry_run: bool = False,
) -> list[str]:
    beside = Path(sys.executable).with_name("snakemake")  # this environment's, before any on PATH
    exe = str(beside) if beside.exists() else shutil.which("snakemake") or "snakemake"
    cmd = [exe, "-s", snakefile, "-d", os.getcwd(), "--keep-going", "--configfile", *configfiles, override]
    if dry_run:
        cmd.append("-n")
    return cmd + list(extra)


def held_back(config: Mapping[str, Any], retry_failed: bool) -> dict[str, str]:
    """The groups of this rolling run's window (and the calibrations that may serve it)
    whose latest job failed and whose cause has not changed (:mod:`.held`) -> why."""
    if retry_failed:
        return {}
    from .held import held_back as find_held
    from .held import window_candidates

    return find_held(config, window_candidates(config), config["raw_dir"])


def _override_file(config: Mapping[str, Any], hold: Mapping[str, str]) -> str:
    """A config file that switches the rolling run on, with the groups it holds back
    (merged last by Snakemake, so parsing the workflow asks no database)."""
    run = {**config["run"], "rolling": True, "hold": dict(hold)}
    path = os.path.join(run_dir(config), "rolling.yaml")
    with provenance.atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump({"run": run}), encoding="utf-8")
    return path


def rolling_run(
    config: Mapping[str, Any],
    configfiles: Sequence[str],
    *,
    snakefile: str | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    extra_args: Sequence[str] = (),
    out=sys.stdout,
) -> RunResult:
    """One rolling run (see the module docstring) of a validated ``config`` read from ``configfiles``.

    Raises :class:`.lock.RunLockedError` when another run holds the lock.
    Paths in the config are relative to the current directory (the workflow's).
    """
    from ..monitoring import disk

    result = RunResult()
    t0 = time.monotonic()
    with run_lock(lock_path(config)):
        low = disk.alerts(disk.figures(config))
        if low and not dry_run:
            for alert in low:
                print(f"contimg run: disk_low: {alert['message']}", file=out, flush=True)
            result.extra_alerts += low
            result.seconds = time.monotonic() - t0
            report_run(config, result, out)
            return result
        snakefile = find_snakefile(snakefile)
        extra = [*config["run"]["snakemake_args"], *extra_args]
        for attempt in (1, 2):
            hold = held_back(config, retry_failed and attempt == 1)
            for group, why in sorted(hold.items()):
                print(f"contimg run: holding back {group}: {why}", file=out, flush=True)
            cmd = snakemake_command(snakefile, configfiles, _override_file(config, hold), extra, dry_run)
            print(f"contimg run: pass {attempt}: {' '.join(cmd)}", file=out, flush=True)
            result.passes.append(subprocess.run(cmd, check=False).returncode)
            if result.passes[-1] == 0 or dry_run:
                break
            print("contimg run: a job failed; once more with the failed groups held back", file=out, flush=True)
        if result.workflow_ok and len(result.passes) > 1 and config["retention"]["intermediates"] == "temp" \
                and not dry_run:
            # Snakemake defers removing temp files while a checkpoint (plan_mosaic) waits, and a
            # failed first pass leaves some waiting: remove what the finished DAG no longer needs.
            print("contimg run: removing the intermediates the first pass kept (retention: temp)", file=out,
                  flush=True)
            subprocess.run([*cmd, "--delete-temp-output"], check=False)
        result.seconds = time.monotonic() - t0
        if dry_run:
            return result
        report_run(config, result, out)
    return result


def report_run(config: Mapping[str, Any], result: RunResult, out=sys.stdout) -> None:
    """Status, metrics and notifications after the workflow ran."""
    from ..monitoring import alerts, disk, metrics, notify, status

    report = status.gather(config)
    if result.passes and not result.workflow_ok:
        result.extra_alerts.append({
            "name": "run_failed", "night": None,
            "message": f"snakemake exited {result.passes[-1]} in the rolling run (see its output or the "
                       "newest .snakemake/log); fan-ins may be stale",
        })  # fmt: skip
    report["alerts"] += result.extra_alerts
    report["ok"] = not report["alerts"]
    result.report = report
    with provenance.atomic_output(os.path.join(run_dir(config), "status.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    run_figures = {
        "last_run_timestamp_seconds": time.time(),
        "last_run_duration_seconds": result.seconds,
        "last_run_exit_code": float(result.exit_code()),
        "last_run_passes": float(len(result.passes)),
    }
    if result.workflow_ok:
        run_figures["last_success_timestamp_seconds"] = time.time()
    text = status.render_prometheus(report) + metrics.run_metrics(run_figures, previous=metrics_path(config))
    text += metrics.benchmark_metrics(config["results_dir"]) + disk.render(disk.figures(config))
    with provenance.atomic_output(metrics_path(config)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    try:
        delivery = notify.notify(config, alerts.events(report))
    except notify.NotifyError as exc:  # e.g. an unreadable state file: say so, the run itself stands
        delivery = notify.Delivery(failed=[str(exc)])
    result.sent, result.notify_failed = delivery.sent, delivery.failed
    print(status.render_text(report), file=out)
    for text in delivery.sent:
        print(f"notified ({', '.join(delivery.channels) or 'no channel configured'}): {text}", file=out)
    for why in delivery.failed:
        print(f"contimg run: WARNING: alert not delivered, will retry next run: {why}", file=out)


