"""Pipeline health at a glance: ``contimg status`` and its Prometheus export.

:func:`gather` reads the raw listing (grouping, names only) and the product
database (read-only: a missing or empty database is reported, never created)
and returns the report, a plain JSON-able dict; :func:`alerts` are computed
from it with the thresholds of the config's ``status`` section. Renderers:
:func:`render_text` (what an operator reads), :func:`render_json`,
:func:`render_prometheus` (text exposition format); :func:`write_prometheus`
writes the latter atomically, e.g. for node_exporter's textfile collector.

The report (``version`` 1)::

    version            1
    generated          ISO UTC time the report was made (wall clock)
    reference_time     ISO UTC time ages are measured at: --now, else the newest observation's start
    raw_dir, database  where it looked (database URL with the password masked)
    database_present   false when there is no (or an empty, or a damaged) database yet
    database_problems  what SQLite's quick_check found wrong with the database file ([] when sound)
    nights             newest first, at most status.nights; each:
        night          YYYY-MM-DD (UTC)
        totals         seen, incomplete, converted, calibrated, imaged, failed (groups), failed_jobs
        image_rms_over_thermal   median over the night's current images (null: none)
        flagged_fraction         median over its groups: calibrated MS's, else MS's (null: none)
        rfi_flagged_fraction     median over its groups of the calibrated MS's fraction newly
                                 flagged as RFI (null: none)
        n_images       images with a noise figure
        failures       [{group (null for fan-in jobs), rule, status (failed or died), reason, log, finished}]
        incomplete     [{group, problem}] from the raw listing
    calibration        n_solutions, n_passed, latest (newest passing: calgroup, calibrator,
                       transit_time, valid_start, valid_end, age_h, expired) or null,
                       latest_attempt (newest solved: calgroup, calibrator, transit_time, passed, reason) or null,
                       next_transit (first calibrator transit at the pointing dec after the
                       reference time, within 2 days: calibrator, transit_time) or null
    calibrator_flux    [{calibrator, calgroup, transit_time, flux_ratio, drifting}]: newest
                       measurement of each calibrator within the nights shown
    newest_observation ISO start of the newest group seen (null: none)
    missing            what is not there yet, one sentence each
    thresholds         the status section used, plus flux_alert_fraction
    alerts             [{name, night (null: not per night), message}]; names in ALERTS
    ok                 no alert active

Times are naive UTC ISO strings (``YYYY-MM-DDTHH:MM:SS``), as group ids are.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dsa110_contimg.raw import grouping

from .. import provenance
from ..db.registry import utc_naive
from . import night as night_counts

REPORT_VERSION = 1

#: Every alert name, each with what it means (Prometheus exports all of them, 0 or 1).
ALERTS = {
    "jobs_failed": "a job's latest run failed",
    "jobs_died": "a job's latest run died without a final record (killed, out of memory, node lost)",
    "incomplete_groups": "more incomplete raw groups in a night than status.max_incomplete_groups",
    "image_noise": "a night's median image rms / thermal above status.max_rms_over_thermal",
    "flagged_fraction": "a night's median flagged fraction above status.max_flagged_fraction",
    "calibration_stale": "no passing calibration, or the newest older than status.max_calibration_age_h",
    "calibrator_flux_drift": "a calibrator's flux off its catalogue value by more than calibration.flux_alert_fraction",
    "data_stale": "the newest observation older than status.max_data_age_h (wall clock)",
    "database_damaged": "the product database fails SQLite's integrity check (contimg db check)",
    "calibration_expiring": "the newest passing calibration expires within status.calibration_expiry_warn_h "
                            "and no calibrator transits before it does",
    "disk_low": "free space where the pipeline writes below run.min_free_gb (contimg run starts no job)",
    "run_failed": "snakemake itself failed in the last contimg run",
}

#: Per-night group counts: key -> what it counts (also the Prometheus HELP).
NIGHT_COUNTS = {
    "seen": "observation groups seen (raw listing or database)",
    "incomplete": "groups with a subband missing or doubled (raw listing)",
    "converted": "groups with a current Measurement Set",
    "calibrated": "groups with a current calibrated Measurement Set",
    "imaged": "groups with a current image",
    "failed": "groups whose latest run of some rule failed",
    "failed_jobs": "jobs (rule and wildcards) whose latest run failed",
}

REASON_WIDTH = 160  # characters of a failure reason in the text view; JSON has it whole


# ------------------------------------------------------------------ inputs


def _iso(value: dt.datetime | None) -> str | None:
    """Naive UTC ISO text of a datetime (aware ones converted), to the second."""
    return None if value is None else utc_naive(value).isoformat(timespec="seconds")


def _raw_groups(config: Mapping[str, Any]) -> tuple[list[grouping.Group], str | None]:
    """The raw listing's groups, or none and why (a raw_dir that does not exist yet)."""
    return night_counts.raw_groups(config)


@contextmanager
def _database(config: Mapping[str, Any]) -> Iterator[tuple[Any, str, str | None]]:
    """(database or None, masked URL, why None); read-only: never creates a database.

    A database at another schema revision raises :class:`~.db.SchemaError`
    (it names the fix), as every other command does.
    """
    from ..db import Database, database_url, migrate
    from ..db.core import mask

    url = database_url(config)
    masked = mask(url)
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if sqlite_file and not os.path.exists(url.database):
        yield None, masked, f"no product database yet at {masked} (the first workflow job creates it)"
        return
    database = Database(url, check_schema=False)
    try:
        revision = database.revision()
        if revision is None:
            yield None, masked, f"the product database {masked} is empty (no job has run yet)"
            return
        migrate.require_head(revision, f"database {masked}")
        yield database, masked, None
    finally:
        database.close()


def _newest_start(database: Any, before: dt.datetime | None = None) -> dt.datetime | None:
    """Start of the newest observation group in the database (before ``before``)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from ..db import ObservationGroup

    stmt = select(func.max(ObservationGroup.start_time))
    if before is not None:
        stmt = stmt.where(ObservationGroup.start_time < before)
    with Session(database.engine) as session, session.begin():
        latest = session.scalar(stmt)
    if isinstance(latest, str):  # SQLite may return an aggregate's DateTime as text
        latest = dt.datetime.fromisoformat(latest)
    return latest


def _db_nights(database: Any, n: int) -> list[dt.date]:
    """The newest ``n`` UTC dates with an observation group in the database (one query each)."""
    days: list[dt.date] = []
    bound = None
    while len(days) < n and (latest := _newest_start(database, bound)) is not None:
        days.append(latest.date())
        bound = dt.datetime.combine(latest.date(), dt.time())
    return days


def _median(values: Iterable[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


# ----------------------------------------------------------------- nights


def _qa_medians(database: Any, day: dt.date, groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over a night's groups (:func:`.night.merge`'s rows): image noise over thermal,
    flagged fraction (calibrated MS's, else MS's) and fraction flagged as RFI (calibrated MS's)."""
    flagged = _median(g.get("flagged_fraction") for g in groups)
    rfi = _median(g.get("rfi_flagged_fraction") for g in groups)
    ids = {g["group"] for g in groups}
    if database is None or not ids:
        return {"image_rms_over_thermal": None, "flagged_fraction": flagged, "rfi_flagged_fraction": rfi,
                "n_images": 0}  # fmt: skip
    # Images filter on their own time: widen by a day, keep the night's groups.
    window = {"status": "current", "since": day - dt.timedelta(days=1), "until": day + dt.timedelta(days=2)}
    rows = database.list_products("image", **window)
    rms = {r["group_id"]: r["rms_over_thermal"] for r in rows
           if r["group_id"] in ids and r["rms_over_thermal"] is not None}  # fmt: skip
    return {
        "image_rms_over_thermal": _median(rms.values()),
        "flagged_fraction": flagged,
        "rfi_flagged_fraction": rfi,
        "n_images": len(rms),
    }


def _night(database: Any, day: dt.date, raw: Sequence[grouping.Group]) -> dict[str, Any]:
    """One night: the database's night summary merged with the raw listing of that date
    (:func:`.night.merge`, which ``contimg products night`` uses too)."""
    summary = database.night(day) if database is not None else night_counts.empty_summary(day)
    merged = night_counts.merge(summary, raw, day)
    ids = {row["group"] for row in merged["groups"]}
    failures = [
        {key: failure[key] for key in ("group", "rule", "reason", "log")}
        | {"status": failure.get("status", "failed"), "finished": _iso(failure["finished"])}
        for failure in merged["failures"]
    ]
    keys = ("seen", "incomplete", "converted", "calibrated", "imaged", "failed", "failed_jobs")
    return {
        "night": day.isoformat(),
        "totals": {key: merged["totals"][key] for key in keys},
        **_qa_medians(database, day, merged["groups"]),
        "failures": failures,
        "incomplete": merged["incomplete"],
        "_ids": ids,  # dropped before the report is returned
    }


# ------------------------------------------------------------ calibration


def _calibration(database: Any, reference: dt.datetime | None) -> dict[str, Any]:
    """The newest passing calibration (its validity and age) and the newest attempt."""
    out: dict[str, Any] = {"n_solutions": 0, "n_passed": 0, "latest": None, "latest_attempt": None}
    if database is None:
        return out
    rows = database.list_products("caltable", status="current")
    out["n_solutions"] = len(rows)
    passed = [r for r in rows if r["cal_status"] == "active" and r["transit_time"] is not None]
    out["n_passed"] = len(passed)
    if rows:
        attempt = max(rows, key=lambda r: (r["transit_time"] or dt.datetime.min, r["group_id"] or ""))
        out["latest_attempt"] = {
            "calgroup": attempt["group_id"], "calibrator": attempt["calibrator"],
            "transit_time": _iso(attempt["transit_time"]), "passed": attempt["passed"],
            "reason": attempt["reason"],
        }  # fmt: skip
    if passed:
        best = max(passed, key=lambda r: r["transit_time"])
        age_h = None if reference is None else (reference - best["transit_time"]).total_seconds() / 3600
        valid_end = best["valid_end"]
        out["latest"] = {
            "calgroup": best["group_id"], "calibrator": best["calibrator"],
            "transit_time": _iso(best["transit_time"]), "valid_start": _iso(best["valid_start"]),
            "valid_end": _iso(valid_end), "age_h": age_h,
            "expired": None if reference is None or valid_end is None else reference > valid_end,
        }  # fmt: skip
    return out


def _next_transit(config: Mapping[str, Any], reference: dt.datetime | None) -> dict[str, Any] | None:
    """The first calibrator transit at the pointing declination after ``reference`` (within 2 days)."""
    if reference is None:
        return None
    from ..calibration.calibrators import load_calibrators
    from ..calibration.transits import calibrator_transits

    cal = config["calibration"]
    start = utc_naive(reference).replace(tzinfo=dt.UTC)
    table = calibrator_transits(start, start + dt.timedelta(days=2), config["pointing"]["dec_deg"],
                                cal["dec_tolerance_deg"], catalogue=load_calibrators(cal),
                                min_apparent_jy=cal["calibrator_min_apparent_jy"])
    if table.empty:
        return None
    first = table.iloc[0]
    return {"calibrator": first["name"], "transit_time": _iso(dt.datetime.fromisoformat(first["transit_utc"]))}


def _calibrator_flux(database: Any, since: dt.date | None, alert_fraction: float) -> list[dict[str, Any]]:
    """The newest measured flux ratio of each calibrator since ``since``."""
    if database is None or since is None:
        return []
    latest: dict[str, dict[str, Any]] = {}
    for row in database.calibrator_flux(since=since):  # ordered by transit time
        if row["flux_ratio"] is not None and math.isfinite(row["flux_ratio"]):
            latest[row["calibrator"]] = row
    return [
        {
            "calibrator": name, "calgroup": row["calgroup"], "transit_time": _iso(row["transit_time"]),
            "flux_ratio": row["flux_ratio"], "drifting": abs(row["flux_ratio"] - 1) > alert_fraction,
        }  # fmt: skip
        for name, row in sorted(latest.items())
    ]


# ----------------------------------------------------------------- report


def _missing(report: Mapping[str, Any], notes: Iterable[str | None]) -> list[str]:
    """What is not there yet, in pipeline order (an empty or partial run is not an error)."""
    missing = [note for note in notes if note]
    nights = report["nights"]
    total = {key: sum(n["totals"][key] for n in nights) for key in ("seen", "converted", "calibrated", "imaged")}
    if not total["seen"]:
        missing.append("no observation group in raw_dir or the database")
        return missing
    where = f"in the last {len(nights)} night(s)"
    if not total["converted"]:
        missing.append(f"nothing converted {where}")
    if not report["calibration"]["n_solutions"]:
        missing.append("no calibration solved yet (it needs a calibrator transit)")
    if not total["calibrated"]:
        missing.append(f"nothing calibrated {where}")
    if not total["imaged"]:
        missing.append(f"nothing imaged {where}")
    return missing


def thresholds(config: Mapping[str, Any]) -> dict[str, Any]:
    """The alert thresholds in force: the config's ``status`` section plus the flux drift limit."""
    return {**config["status"], "flux_alert_fraction": config["calibration"]["flux_alert_fraction"]}


def gather(
    config: Mapping[str, Any],
    *,
    nights: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The status report of a validated config (see the module docstring), alerts included.

    ``nights`` overrides ``status.nights``; ``now`` (UTC) is the time ages are
    measured at, by default the newest observation's start (and the wall clock
    for ``data_stale``).
    """
    limits = thresholds(config)
    n_nights = nights or limits["nights"]
    raw, raw_note = _raw_groups(config)
    now = None if now is None else utc_naive(now)
    with _database(config) as (database, masked, db_note):
        # A damaged file (SQLite quick_check) is an alert; nothing is read from it.
        damaged = database.integrity_problems(quick=True) if database is not None else []
        if damaged:
            database, db_note = None, f"the product database {masked} is damaged"
        days = {g.start.date() for g in raw}
        if database is not None:
            days |= set(_db_nights(database, n_nights))
        shown = sorted(days, reverse=True)[:n_nights]
        night_rows = [_night(database, day, raw) for day in shown]
        newest = _newest(database, raw)
        reference = now or newest
        calibration = _calibration(database, reference)
        calibration["next_transit"] = _next_transit(config, reference)
        flux = _calibrator_flux(database, shown[-1] if shown else None, limits["flux_alert_fraction"])
    for row in night_rows:
        row.pop("_ids")
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "generated": _iso(dt.datetime.now(dt.UTC)),
        "reference_time": _iso(reference),
        "raw_dir": config["raw_dir"],
        "database": masked,
        "database_present": database is not None,
        "database_problems": damaged,
        "nights": night_rows,
        "calibration": calibration,
        "calibrator_flux": flux,
        "newest_observation": _iso(newest),
        "thresholds": limits,
    }
    report["missing"] = _missing(report, [raw_note, db_note])
    report["alerts"] = alerts(report, limits, wall_clock=now or dt.datetime.now(dt.UTC))
    report["ok"] = not report["alerts"]
    return report


def _newest(database: Any, raw: Sequence[grouping.Group]) -> dt.datetime | None:
    """Start of the newest observation group, on disk or in the database."""
    starts = [utc_naive(g.start) for g in raw]
    if database is not None and (latest := _newest_start(database)) is not None:
        starts.append(latest)
    return max(starts) if starts else None


# ----------------------------------------------------------------- alerts


def _alert(name: str, message: str, night: str | None = None) -> dict[str, Any]:
    return {"name": name, "night": night, "message": message}


def _night_alerts(night: Mapping[str, Any], limits: Mapping[str, Any]) -> list[dict[str, Any]]:
    day, totals, out = night["night"], night["totals"], []
    for name, status, what in (("jobs_failed", "failed", "failed"), ("jobs_died", "died", "died")):
        these = [f for f in night["failures"] if f.get("status", "failed") == status]
        if these:
            named = ", ".join(f"{f['group'] or 'fan-in'} {f['rule']}" for f in these[:5])
            more = len(these) - 5
            out.append(_alert(name, f"{len(these)} {what} job(s): {named}"
                              + (f" and {more} more" if more > 0 else ""), day))
    if totals["incomplete"] > limits["max_incomplete_groups"]:
        named = ", ".join(i["group"] for i in night["incomplete"][:5])
        out.append(_alert("incomplete_groups", f"{totals['incomplete']} incomplete group(s): {named} "
                          f"(limit {limits['max_incomplete_groups']})", day))
    rms = night["image_rms_over_thermal"]
    if rms is not None and rms > limits["max_rms_over_thermal"]:
        out.append(_alert("image_noise", f"median image rms {rms:.2f} x thermal over {night['n_images']} "
                          f"image(s) (limit {limits['max_rms_over_thermal']})", day))
    flagged = night["flagged_fraction"]
    if flagged is not None and flagged > limits["max_flagged_fraction"]:
        out.append(_alert("flagged_fraction", f"median flagged fraction {flagged:.3f} "
                          f"(limit {limits['max_flagged_fraction']})", day))
    return out


def _calibration_alert(report: Mapping[str, Any], limit_h: float) -> dict[str, Any] | None:
    cal = report["calibration"]
    latest = cal["latest"]
    if latest is None:
        if cal["n_solutions"]:
            return _alert("calibration_stale", f"none of {cal['n_solutions']} calibration(s) passed QA")
        return None  # none solved yet: listed under missing, not an alert
    if latest["age_h"] is not None and latest["age_h"] > limit_h:
        return _alert(
            "calibration_stale",
            f"newest passing calibration {latest['calgroup']} ({latest['calibrator']}) is "
            f"{latest['age_h']:.1f} h old (limit {limit_h} h); valid until {latest['valid_end']}",
        )
    return None


def _expiry_alert(report: Mapping[str, Any], warn_h: float) -> dict[str, Any] | None:
    """The newest passing calibration ends within ``warn_h`` of the reference time and no transit comes first."""
    latest, reference = report["calibration"]["latest"], report["reference_time"]
    if latest is None or not latest["valid_end"] or reference is None or latest["expired"]:
        return None
    left_h = (dt.datetime.fromisoformat(latest["valid_end"]) - dt.datetime.fromisoformat(reference)).total_seconds()
    left_h /= 3600
    nxt = report["calibration"].get("next_transit")
    if left_h > warn_h or (nxt is not None and nxt["transit_time"] <= latest["valid_end"]):
        return None
    when = f"next transit {nxt['calibrator']} at {nxt['transit_time']}" if nxt else "no transit within 2 days"
    return _alert("calibration_expiring", f"calibration {latest['calgroup']} ({latest['calibrator']}) expires at "
                  f"{latest['valid_end']}, in {left_h:.1f} h, and nothing renews it before: {when}")


def alerts(report: Mapping[str, Any], limits: Mapping[str, Any], wall_clock: dt.datetime) -> list[dict[str, Any]]:
    """The active alerts of a report under ``limits`` (:func:`thresholds`)."""
    out = [a for night in report["nights"] for a in _night_alerts(night, limits)]
    if report.get("database_problems"):
        out.append(_alert("database_damaged", f"{report['database']}: {report['database_problems'][0]} "
                          "(contimg db check lists all; move the file aside and rebuild it with contimg db sync)"))
    stale = _calibration_alert(report, limits["max_calibration_age_h"])
    if stale:
        out.append(stale)
    elif expiring := _expiry_alert(report, limits["calibration_expiry_warn_h"]):
        out.append(expiring)
    drifting = [f for f in report["calibrator_flux"] if f["drifting"]]
    if drifting:
        named = ", ".join(f"{f['calibrator']} x{f['flux_ratio']:.3f} ({f['calgroup']})" for f in drifting)
        out.append(_alert("calibrator_flux_drift", f"flux off catalogue by more than "
                          f"{limits['flux_alert_fraction']:.0%}: {named}"))
    max_age = limits["max_data_age_h"]
    if max_age is not None:
        newest = report["newest_observation"]
        if newest is None:
            out.append(_alert("data_stale", "no observation seen at all"))
        else:
            age_h = (utc_naive(wall_clock) - dt.datetime.fromisoformat(newest)).total_seconds() / 3600
            if age_h > max_age:
                out.append(_alert("data_stale", f"newest observation {newest} is {age_h:.1f} h old "
                                  f"(limit {max_age} h)"))
    return out


def exit_code(report: Mapping[str, Any]) -> int:
    """0 when healthy, 1 when an alert is active (for cron and monitoring)."""
    return 0 if report["ok"] else 1


# ---------------------------------------------------------------- renderers


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _one_line(text: str | None, width: int = REASON_WIDTH) -> str:
    text = " ".join((text or "(no reason recorded)").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _calibration_line(cal: Mapping[str, Any]) -> str:
    latest, attempt = cal["latest"], cal["latest_attempt"]
    if latest is None:
        if attempt is None:
            return "calibration: none solved yet"
        return (f"calibration: none passed QA; newest attempt {attempt['calgroup']} "
                f"({attempt['calibrator']}): {_one_line(attempt['reason'])}")
    state = "EXPIRED" if latest["expired"] else "valid"
    line = (f"calibration: {latest['calgroup']} on {latest['calibrator']}, transit {latest['transit_time']}, "
            f"{state} until {latest['valid_end']}, age {_num(latest['age_h'], '.1f')} h")
    if attempt is not None and attempt["calgroup"] != latest["calgroup"]:
        line += f"; newer attempt {attempt['calgroup']} failed QA: {_one_line(attempt['reason'], 80)}"
    if (nxt := cal.get("next_transit")) is not None:
        line += f"; next transit {nxt['calibrator']} at {nxt['transit_time']}"
    return line


def render_text(report: Mapping[str, Any]) -> str:
    """The ten-second view: a line per night, failures with reasons, calibration, ALERTS."""
    from ..db.present import table

    when = report["reference_time"]
    lines = [f"contimg status ({'reference time ' + when if when else 'no observation yet'}; "
             f"database {report['database']})"]
    rows = [
        {**n["totals"], "night": n["night"], "rms/thermal": _num(n["image_rms_over_thermal"], ".2f"),
         "flagged": _num(n["flagged_fraction"], ".3f"), "rfi": _num(n["rfi_flagged_fraction"], ".3f")}
        for n in report["nights"]
    ]  # fmt: skip
    if rows:
        columns = ("night", "seen", "incomplete", "converted", "calibrated", "imaged", "failed",
                   "rms/thermal", "flagged", "rfi")  # fmt: skip
        lines.append(table(rows, columns))
    failures = [(n["night"], f) for n in report["nights"] for f in n["failures"]]
    if failures:
        lines.append("failed:")
        for _, f in failures:
            log = f"  [log {f['log']}]" if f["log"] else ""
            lines.append(f"  {f['group'] or '(fan-in)'}  {f['rule']}: {_one_line(f['reason'])}{log}")
    incomplete = [i for n in report["nights"] for i in n["incomplete"]]
    if incomplete:
        lines.append("incomplete:")
        lines += [f"  {i['group']}  {i['problem']}" for i in incomplete]
    lines.append(_calibration_line(report["calibration"]))
    if report["calibrator_flux"]:
        lines.append("calibrator flux / catalogue: " + ", ".join(
            f"{f['calibrator']} {f['flux_ratio']:.3f}{' DRIFT' if f['drifting'] else ''}"
            for f in report["calibrator_flux"]))
    if report["missing"]:
        lines.append("not there yet:")
        lines += [f"  {m}" for m in report["missing"]]
    if report["alerts"]:
        lines.append(f"ALERTS ({len(report['alerts'])}):")
        lines += [f"  {a['name']}{' ' + a['night'] if a['night'] else ''}: {a['message']}" for a in report["alerts"]]
    else:
        lines.append("ALERTS: none")
    return "\n".join(lines)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, value: float, labels: Mapping[str, str] | None = None) -> str:
    inner = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in (labels or {}).items())
    number = "NaN" if math.isnan(value) else repr(float(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp()


def _metric(out: list[str], name: str, help_text: str, samples: Iterable[tuple[float, Mapping[str, str]]]) -> None:
    """One metric family: HELP, TYPE gauge, its samples (a family with none is left out)."""
    samples = list(samples)
    if not samples:
        return
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    out += [_sample(name, value, labels) for value, labels in samples]


def render_prometheus(report: Mapping[str, Any]) -> str:
    """The report's figures as gauges, prefixed ``contimg_``, labelled by night / alert / calibrator."""
    out: list[str] = []
    nights = report["nights"]
    _metric(out, "contimg_status_timestamp_seconds", "When this status was generated (Unix time).",
            [(_epoch(report["generated"]), {})])
    _metric(out, "contimg_database_present", "1 when the product database exists and has a schema.",
            [(float(report["database_present"]), {})])
    if report["newest_observation"]:
        _metric(out, "contimg_newest_observation_timestamp_seconds", "Start of the newest observation group.",
                [(_epoch(report["newest_observation"]), {})])
    for key, help_text in NIGHT_COUNTS.items():
        _metric(out, f"contimg_night_groups_{key}" if key != "failed_jobs" else "contimg_night_failed_jobs",
                f"Per UTC night: {help_text}.", [(n["totals"][key], {"night": n["night"]}) for n in nights])
    _metric(out, "contimg_night_image_rms_over_thermal", "Per UTC night: median image rms over thermal noise.",
            [(n["image_rms_over_thermal"], {"night": n["night"]}) for n in nights
             if n["image_rms_over_thermal"] is not None])
    _metric(out, "contimg_night_flagged_fraction", "Per UTC night: median flagged fraction of the groups' data.",
            [(n["flagged_fraction"], {"night": n["night"]}) for n in nights if n["flagged_fraction"] is not None])
    _metric(out, "contimg_night_rfi_flagged_fraction",
            "Per UTC night: median fraction of the groups' calibrated data flagged as RFI.",
            [(n["rfi_flagged_fraction"], {"night": n["night"]}) for n in nights
             if n["rfi_flagged_fraction"] is not None])
    latest = report["calibration"]["latest"]
    if latest is not None:
        label = {"calgroup": latest["calgroup"], "calibrator": latest["calibrator"] or ""}
        if latest["age_h"] is not None:
            _metric(out, "contimg_calibration_age_hours",
                    "Age of the newest passing calibration at the reference time.", [(latest["age_h"], label)])
        if latest["valid_end"]:
            _metric(out, "contimg_calibration_valid_end_timestamp_seconds",
                    "End of the newest passing calibration's validity (Unix time).",
                    [(_epoch(latest["valid_end"]), label)])
    nxt = report["calibration"].get("next_transit")
    if nxt is not None:
        _metric(out, "contimg_next_calibrator_transit_timestamp_seconds",
                "Next calibrator transit at the pointing declination after the reference time (Unix time).",
                [(_epoch(nxt["transit_time"]), {"calibrator": nxt["calibrator"]})])
    _metric(out, "contimg_calibrator_flux_ratio", "Newest measured calibrator flux over its catalogue flux.",
            [(f["flux_ratio"], {"calibrator": f["calibrator"]}) for f in report["calibrator_flux"]])
    active = {a["name"] for a in report["alerts"]}
    _metric(out, "contimg_alert", "1 when the alert is active (see dsa110_contimg.monitoring.status.ALERTS).",
            [(float(name in active), {"alert": name}) for name in ALERTS])
    _metric(out, "contimg_alerts_active", "Number of active alerts (per night alerts counted per night).",
            [(len(report["alerts"]), {})])
    return "\n".join(out) + "\n"


def write_prometheus(
    path: str | os.PathLike[str],
    config: Mapping[str, Any],
    *,
    nights: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Write the Prometheus text of :func:`gather` to ``path`` atomically; returns the report.

    The text goes to a hidden temporary beside ``path`` and is renamed over
    it, so a scraper (node_exporter's textfile collector reads ``*.prom``)
    never sees half a file. ``config`` must be validated (defaults filled in).
    """
    report = gather(config, nights=nights, now=now)
    with provenance.atomic_output(path) as tmp:
        tmp.write_text(render_prometheus(report))
    return report


__all__ = [
    "ALERTS", "NIGHT_COUNTS", "REPORT_VERSION", "alerts", "exit_code", "gather", "render_json",
    "render_prometheus", "render_text", "thresholds", "write_prometheus",
]  # fmt: skip
