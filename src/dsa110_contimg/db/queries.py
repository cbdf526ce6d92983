"""Read-only questions people ask of the product database.

Each function takes an open session and returns plain values (dicts, lists,
:class:`Node` trees), so the CLI, the report and tests can format them as
they like. :class:`~.core.Database` wraps each in a read transaction.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..naming import N_SUBBANDS
from . import jobs
from .registry import KINDS, Kind, kind_of
from .schema import (
    ACTIVE,
    CURRENT,
    GONE,
    RETIRED,
    Base,
    CalibratedMS,
    CalibratorFlux,
    Image,
    JobRun,
    Measurement,
    MeasurementSet,
    ObservationGroup,
    Product,
    ProductFile,
    ProductInput,
    RawFile,
)

#: Statuses ``list_products`` filters on: of the product, or of a calibration.
STATUSES = (CURRENT, GONE, ACTIVE, RETIRED)

#: Columns shown beside a product in a provenance tree, when its kind has them.
SUMMARY_COLUMNS = (
    "grade", "rms_jy", "calibrator", "passed", "reason", "cal_status", "flagged_fraction",
    "n_measurements", "n_sources", "n_candidates", "tier", "n_images",
)  # fmt: skip


class NotFoundError(LookupError):
    """No product or raw file is registered at the path asked about."""


def as_dict(row: Base) -> dict[str, Any]:
    """Every mapped column of a row (a product's shared and own columns alike)."""
    return {attr.key: getattr(row, attr.key) for attr in row.__mapper__.column_attrs}


# ------------------------------------------------------------- listing


def _day(value: dt.date | dt.datetime | str) -> dt.datetime:
    """A bound given as a date, a datetime or an ISO string, as naive UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _has(kind: Kind, name: str) -> bool:
    return name in kind.model.__table__.columns


def list_products(
    session: Session,
    kind: str | None = None,
    *,
    status: str | None = None,
    since: Any = None,
    until: Any = None,
    dec: float | None = None,
    dec_tol: float = 1.0,
    grade: str | None = None,
    group: str | None = None,
) -> list[dict[str, Any]]:
    """Products as dicts (``kind`` plus every column), by kind then path.

    ``status`` is current/gone, or active/retired (calibrations only);
    ``since``/``until`` bound the observation time (a kind's own time column,
    e.g. a caltable's transit, else its group's start), ``until`` exclusive;
    ``dec`` +- ``dec_tol`` the declination likewise; ``grade`` applies to
    kinds that have one. A filter a kind cannot answer leaves that kind out.
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {list(STATUSES)}")
    kinds = [kind_of(kind)] if kind else list(KINDS.values())
    rows: list[dict[str, Any]] = []
    for k in kinds:
        if status in (ACTIVE, RETIRED) and not _has(k, "cal_status"):
            continue
        if grade is not None and not _has(k, "grade"):
            continue
        model = k.model
        stmt = select(model).order_by(model.path)
        time_col = getattr(model, k.time_column) if k.time_column else ObservationGroup.start_time
        dec_col = getattr(model, k.dec_column) if k.dec_column else ObservationGroup.dec_deg
        if (since, until, dec) != (None, None, None) and (not k.time_column or not k.dec_column):
            stmt = stmt.outerjoin(ObservationGroup, model.group_id == ObservationGroup.id)
        if status in (CURRENT, GONE):
            stmt = stmt.where(model.status == status)
        elif status is not None:
            stmt = stmt.where(model.cal_status == status)
        if grade is not None:
            stmt = stmt.where(model.grade == grade)
        if group is not None:
            stmt = stmt.where(model.group_id == group)
        if since is not None:
            stmt = stmt.where(time_col >= _day(since))
        if until is not None:
            stmt = stmt.where(time_col < _day(until))
        if dec is not None:
            stmt = stmt.where(func.abs(dec_col - dec) <= dec_tol)
        rows += [{"kind": k.name, **as_dict(row)} for row in session.scalars(stmt)]
    return rows


def get_product(session: Session, path: str) -> dict[str, Any] | None:
    """A product's columns, with ``files``: its companion files (name -> path)."""
    try:
        row = _start(session, path)
    except NotFoundError:
        return None
    if not isinstance(row, Product):
        return None
    files = session.execute(
        select(ProductFile.name, ProductFile.path).where(ProductFile.product_id == row.id)
    ).all()
    return {**as_dict(row), "files": dict(files)}


def list_raw_files(session: Session, group: str | None = None) -> list[dict[str, Any]]:
    """Raw file rows as dicts, by path."""
    stmt = select(RawFile).order_by(RawFile.path)
    if group is not None:
        stmt = stmt.where(RawFile.group_id == group)
    return [as_dict(row) for row in session.scalars(stmt)]


def group_summary(session: Session) -> list[dict[str, Any]]:
    """One dict per group, in time order, with ``products``: kind -> current count."""
    counts: dict[str, dict[str, int]] = {}
    stmt = (
        select(Product.group_id, Product.kind, func.count())
        .where(Product.status == CURRENT, Product.group_id.is_not(None))
        .group_by(Product.group_id, Product.kind)
    )
    for group, kind, n in session.execute(stmt):
        counts.setdefault(group, {})[kind] = n
    groups = session.scalars(select(ObservationGroup).order_by(ObservationGroup.start_time))
    return [{**as_dict(g), "products": counts.get(g.id, {})} for g in groups]


# ---------------------------------------------------------- provenance


@dataclass
class Node:
    """One product or raw file in a provenance tree.

    ``kind`` is a product kind, ``"raw"``, or ``"file"`` for an input the
    database does not know (a catalogue, or a product not registered yet).
    ``repeated``: shown already elsewhere in the tree, not expanded again.
    """

    kind: str
    path: str
    status: str | None = None
    group_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    repeated: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "path": self.path,
            "status": self.status,
            "group_id": self.group_id,
            **({"summary": self.summary} if self.summary else {}),
            **({"repeated": True} if self.repeated else {}),
        }
        if self.children:
            out["children"] = [child.to_dict() for child in self.children]
        return out

    def walk(self) -> Iterable[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


def _product_node(session: Session, product: Product) -> Node:
    row = as_dict(product)
    summary = {key: row[key] for key in SUMMARY_COLUMNS if row.get(key) is not None}
    return Node(product.kind, product.path, product.status, product.group_id, summary)


def _raw_node(raw: RawFile) -> Node:
    return Node("raw", raw.path, "current" if raw.size_bytes is not None else None, raw.group_id)


def _start(session: Session, path: str) -> Product | RawFile:
    """The product at ``path`` (or owning it as a companion file), else the raw file."""
    product = session.scalar(select(Product).where(Product.path == path))
    if product is None:
        product = session.scalar(
            select(Product).join(ProductFile, ProductFile.product_id == Product.id).where(ProductFile.path == path)
        )
    if product is not None:
        return product
    raw = session.scalar(select(RawFile).where(RawFile.path == path))
    if raw is None:
        raise NotFoundError(f"no product or raw file registered at {path}")
    return raw


def provenance(session: Session, path: str) -> Node:
    """The tree of what ``path`` was made from: inputs, their inputs, down to raw files."""
    start = _start(session, path)
    if isinstance(start, RawFile):
        return _raw_node(start)
    seen: set[int] = set()

    def down(product: Product) -> Node:
        node = _product_node(session, product)
        if product.id in seen:
            node.repeated = True
            return node
        seen.add(product.id)
        links = session.scalars(
            select(ProductInput)
            .where(ProductInput.product_id == product.id)
            .order_by(ProductInput.id)  # the order the sidecar lists them
        )
        for link in links:
            if link.input_product_id is not None:
                node.children.append(down(session.get(Product, link.input_product_id)))
            elif link.raw_file_id is not None:
                node.children.append(_raw_node(session.get(RawFile, link.raw_file_id)))
            else:
                node.children.append(Node("file", link.input_path))
        return node

    return down(start)


def derived(session: Session, path: str) -> Node:
    """The tree of everything made from ``path`` (a raw file or a product)."""
    start = _start(session, path)
    seen: set[int] = set()

    def users(where: Any) -> list[Product]:
        stmt = (
            select(Product)
            .join(ProductInput, ProductInput.product_id == Product.id)
            .where(where)
            .order_by(Product.kind, Product.path)
        )
        return list(session.scalars(stmt))

    def up(product: Product) -> Node:
        node = _product_node(session, product)
        if product.id in seen:
            node.repeated = True
            return node
        seen.add(product.id)
        node.children = [up(p) for p in users(ProductInput.input_product_id == product.id)]
        return node

    if isinstance(start, RawFile):
        node = _raw_node(start)
        node.children = [up(p) for p in users(ProductInput.raw_file_id == start.id)]
        return node
    return up(start)


# ---------------------------------------------------------- night summary


def _latest_runs(runs: Iterable[JobRun]) -> dict[tuple[str, str], JobRun]:
    """The latest run of each (rule, wildcards): a failure fixed by a rerun is not a failure."""
    latest: dict[tuple[str, str], JobRun] = {}
    for run in runs:
        key = (run.rule, repr(sorted(run.wildcards.items())))
        if key not in latest or (run.started or dt.datetime.min, run.id) > (
            latest[key].started or dt.datetime.min,
            latest[key].id,
        ):
            latest[key] = run
    return latest


def _flagged_fractions(session: Session, ids: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Per group of ``ids``: the flagged fraction (calibrated MS's, else MS's) and the
    fraction flagged as RFI (calibrated MS's), of current products that have them."""
    flagged: dict[str, float] = {}
    rfi: dict[str, float] = {}
    for model in (MeasurementSet, CalibratedMS):  # the calibrated MS's figure wins
        stmt = select(model.group_id, model.flagged_fraction).where(
            model.status == CURRENT, model.group_id.in_(ids), model.flagged_fraction.is_not(None)
        )
        flagged.update(session.execute(stmt).all())
    stmt = select(CalibratedMS.group_id, CalibratedMS.rfi_flagged_fraction).where(
        CalibratedMS.status == CURRENT,
        CalibratedMS.group_id.in_(ids),
        CalibratedMS.rfi_flagged_fraction.is_not(None),
    )
    rfi.update(session.execute(stmt).all())
    return flagged, rfi


def night_summary(session: Session, date: dt.date | str) -> dict[str, Any]:
    """What happened to the observations of one UTC day.

    ``groups`` lists each group seen that day with the stages it reached
    (current products), its image grade, its flagged fraction (of the
    calibrated MS, after RFI flagging, else of the MS), the fraction flagged
    as RFI (calibrated MS) and the failures of its latest job runs;
    ``totals`` counts them; ``failures`` lists every failed latest run of the
    day (group jobs and others started that day) with its reason.
    """
    start = _day(date)
    if (start.hour, start.minute, start.second, start.microsecond) != (0, 0, 0, 0):
        raise ValueError(f"a night is a date (YYYY-MM-DD), not {date!r}")
    end = start + dt.timedelta(days=1)
    groups = list(
        session.scalars(
            select(ObservationGroup)
            .where(ObservationGroup.start_time >= start, ObservationGroup.start_time < end)
            .order_by(ObservationGroup.start_time)
        )
    )
    ids = [g.id for g in groups]
    stages: dict[str, set[str]] = {g: set() for g in ids}
    stmt = select(Product.group_id, Product.kind, Product.path).where(
        Product.group_id.in_(ids), Product.status == CURRENT
    )
    for group, kind, path in session.execute(stmt):
        # Snakemake deletes a job's old outputs before it reruns it: a product
        # registered as current whose file is gone does not count (db sync marks it gone).
        if os.path.lexists(path):
            stages[group].add(kind)
    stmt = select(Image.group_id, Image.grade).where(Image.status == CURRENT, Image.group_id.in_(ids))
    grades = dict(session.execute(stmt).all())
    flagged, rfi = _flagged_fractions(session, ids)
    runs = list(
        session.scalars(
            select(JobRun).where(
                JobRun.group_id.in_(ids)
                | (JobRun.group_id.is_(None) & (JobRun.started >= start) & (JobRun.started < end))
            )
        )
    )
    failures = []
    for run in _latest_runs(runs).values():
        # A run still "running" whose process is gone died without a final record.
        reason = run.message if run.status in ("failed", "died") else jobs.gone_reason(run)
        if run.status in ("failed", "died") or reason:
            failures.append({
                "group": run.group_id,
                "rule": run.rule,
                "wildcards": run.wildcards,
                "status": "failed" if run.status == "failed" else "died",
                "finished": run.finished,
                "reason": reason,
                "log": run.log_path,
            })  # fmt: skip
    failures.sort(key=lambda f: (f["group"] or "", f["rule"]))
    failed_groups: dict[str, list[dict[str, Any]]] = {}
    for failure in failures:
        if failure["group"] is not None:
            failed_groups.setdefault(failure["group"], []).append(failure)
    rows = [
        {
            "group": g.id,
            # No raw file registered (a group known only from a failed job's run, raw
            # files not synced): its completeness is unknown, not "incomplete".
            "raw": f"{g.n_subbands}/{N_SUBBANDS}" if g.n_subbands else "not registered",
            "complete": g.status == "complete" if g.n_subbands else None,
            "dec_deg": g.dec_deg,
            "converted": "ms" in stages[g.id],
            "calibrated": "calibrated" in stages[g.id],
            "imaged": "image" in stages[g.id],
            "photometry": "photometry" in stages[g.id],
            "caltable": "caltable" in stages[g.id],
            "grade": grades.get(g.id),
            "flagged_fraction": flagged.get(g.id),
            "rfi_flagged_fraction": rfi.get(g.id),
            "failed": [f"{f['rule']}: {f['reason']}" for f in failed_groups.get(g.id, [])],
        }
        for g in groups
    ]
    totals = {
        "seen": len(rows),
        "complete": sum(r["complete"] is True for r in rows),
        "incomplete": sum(r["complete"] is False for r in rows),
        "converted": sum(r["converted"] for r in rows),
        "calibrated": sum(r["calibrated"] for r in rows),
        "imaged": sum(r["imaged"] for r in rows),
        "photometry": sum(r["photometry"] for r in rows),
        "failed": len(failed_groups),
    }
    return {"night": start.date().isoformat(), "totals": totals, "groups": rows, "failures": failures}


# --------------------------------------------------------------- science


def measurements(
    session: Session,
    *,
    source: str | None = None,
    group: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Photometry measurements (by source, then time) with their group and the image measured."""
    image_of = (
        select(ProductInput.product_id.label("photometry_id"), Product.path.label("image"))
        .join(Product, Product.id == ProductInput.input_product_id)
        .where(Product.kind == "image")
        .distinct()
        .subquery()
    )
    stmt = (
        select(Measurement, Product.group_id, image_of.c.image)
        .join(Product, Product.id == Measurement.photometry_id)
        .outerjoin(image_of, image_of.c.photometry_id == Measurement.photometry_id)
        .order_by(Measurement.source, Measurement.mjd)
    )
    if source is not None:
        stmt = stmt.where(Measurement.source == source)
    if group is not None:
        stmt = stmt.where(Product.group_id == group)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        {**as_dict(m), "group_id": group_id, "image": image}
        for m, group_id, image in session.execute(stmt)
    ]


def calibrator_flux(
    session: Session, *, calibrator: str | None = None, since: Any = None, until: Any = None
) -> list[dict[str, Any]]:
    """Calibrator flux monitoring: rows of the current calflux tables, by transit time."""
    stmt = (
        select(CalibratorFlux, Product.path)
        .join(Product, Product.id == CalibratorFlux.calflux_id)
        .where(Product.status == CURRENT)
        .order_by(CalibratorFlux.transit_time, CalibratorFlux.calgroup)
    )
    if calibrator is not None:
        stmt = stmt.where(CalibratorFlux.calibrator == calibrator)
    if since is not None:
        stmt = stmt.where(CalibratorFlux.transit_time >= _day(since))
    if until is not None:
        stmt = stmt.where(CalibratorFlux.transit_time < _day(until))
    return [{**as_dict(row), "table": path} for row, path in session.execute(stmt)]


def job_runs(
    session: Session,
    *,
    rule: str | None = None,
    status: str | None = None,
    group: str | None = None,
) -> list[dict[str, Any]]:
    """Job runs as dicts, oldest first."""
    stmt = select(JobRun).order_by(JobRun.started, JobRun.id)
    if rule is not None:
        stmt = stmt.where(JobRun.rule == rule)
    if status is not None:
        stmt = stmt.where(JobRun.status == status)
    if group is not None:
        stmt = stmt.where(JobRun.group_id == group)
    return [as_dict(row) for row in session.scalars(stmt)]
