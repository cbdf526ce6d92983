"""Alerts as events with a stable identity, so only changes are sent to people.

A status report (:mod:`.status`) holds one ``jobs_failed`` alert per night
that names its failures; people want one message per failed observation, sent
once. :func:`events` turns a report (plus alerts of the run itself, such as
``disk_low``) into events keyed by what they are about: ``jobs_failed`` per
group and rule, every other alert per name and night. :func:`changes`
compares them with the previous run's events: new ones and resolved ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _event(key: str, name: str, night: str | None, message: str) -> dict[str, Any]:
    return {"key": key, "name": name, "night": night, "message": message}


def events(report: Mapping[str, Any], extra: Iterable[Mapping[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """Active events of a status report and of ``extra`` alerts ({name, night, message}), by key."""
    out: dict[str, dict[str, Any]] = {}
    for night in report.get("nights", []):
        for f in night["failures"]:
            subject = f["group"] or "fan-in"
            wildcards = f.get("wildcards")
            key = f"jobs_failed/{subject}/{f['rule']}" + (f"/{wildcards}" if not f["group"] and wildcards else "")
            reason = " ".join((f["reason"] or "(no reason recorded)").split())
            log = f" [log {f['log']}]" if f.get("log") else ""
            out[key] = _event(key, "jobs_failed", night["night"], f"{subject} {f['rule']} failed: {reason}{log}")
    for alert in [*report.get("alerts", []), *extra]:
        if alert["name"] == "jobs_failed":
            continue  # one event per failure above
        key = f"{alert['name']}/{alert.get('night') or ''}"
        out[key] = _event(key, alert["name"], alert.get("night"), alert["message"])
    return out


def changes(
    previous: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(new events, resolved events): in ``current`` only, in ``previous`` only; sorted by key."""
    new = [dict(current[k]) for k in sorted(current) if k not in previous]
    resolved = [dict(previous[k]) for k in sorted(previous) if k not in current]
    return new, resolved
