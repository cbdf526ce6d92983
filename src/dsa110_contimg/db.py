"""The product database: an index of what exists on disk, rebuilt from sidecars.

Files are the truth (DESIGN.md, principle 1). Every product has a JSON sidecar
(:mod:`dsa110_contimg.provenance`); registering a product copies what its
sidecar says into a row, in one transaction, and :meth:`Database.sync`
reconciles the whole database with the files, so a lost write or a deleted and
rerun product always ends up right.

Each product kind has a table built from :class:`Product` (the columns every
product shares) plus its own QA columns, and an entry in :data:`KINDS` saying
how to register its sidecar. A later stage adds a model class and one
``@register_kind("...", Model)`` function; ``sync``, ``list_products`` and
``group_summary`` pick it up from there.

Paths are stored absolute (resolved), so a product registered by a job and the
same product found by ``sync`` from another directory are the same row.
Datetimes are stored as naive UTC.

SQLite is the default, PostgreSQL the cluster option; both go through the same
ORM code. For SQLite, write transactions start with ``BEGIN IMMEDIATE`` (the
write lock is taken up front, so ``busy_timeout`` can wait for it instead of
failing on a lock upgrade), the journal is WAL (readers never block the
writer) and commits are retried with backoff when the database is still
locked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    String,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import grouping, naming
from .provenance import SidecarError, read_sidecar, sidecar_path, validate_sidecar

Outcome = Literal["added", "updated", "unchanged"]
T = TypeVar("T")

#: Statuses of a product row: the file exists, or it did and was deleted.
CURRENT, GONE = "current", "gone"

_PG_LOCK_KEY = 0x110C0  # advisory lock serialising table creation on PostgreSQL


class DatabaseError(RuntimeError):
    """The database cannot be reached or refused an operation (URL shown, password masked)."""


class UnknownKindError(ValueError):
    """A sidecar's ``kind`` has no registered handler."""


# ------------------------------------------------------------------ schema


class Base(DeclarativeBase):
    pass


class ObservationGroup(Base):
    """One observation: the 16 subband files sharing a canonical group id."""

    __tablename__ = "observation_groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # e.g. 2025-06-15T08:00:03
    start_time: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    n_subbands: Mapped[int] = mapped_column(default=0)  # raw files registered for it
    dec_deg: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # "complete" / "incomplete" (raw files)


class RawFile(Base):
    """One raw UVH5 subband file."""

    __tablename__ = "raw_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True)
    group_id: Mapped[str | None] = mapped_column(ForeignKey("observation_groups.id"), index=True)
    subband: Mapped[int]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mtime: Mapped[dt.datetime | None] = mapped_column(DateTime)
    registered_at: Mapped[dt.datetime] = mapped_column(DateTime)


def _shared(*args: Any, **kwargs: Any) -> Any:
    """A column of every product table, listed before the kind's own columns."""
    return mapped_column(*args, sort_order=-1, **kwargs)


class Product(Base):
    """Columns every product table shares; subclasses add their QA columns."""

    __abstract__ = True

    id: Mapped[int] = _shared(primary_key=True)
    path: Mapped[str] = _shared(String, unique=True)
    group_id: Mapped[str | None] = _shared(ForeignKey("observation_groups.id"), index=True)
    status: Mapped[str] = _shared(String(16), index=True)  # CURRENT or GONE
    created: Mapped[dt.datetime | None] = _shared(DateTime)
    config_digest: Mapped[str | None] = _shared(String(64))
    qa: Mapped[dict[str, Any] | None] = _shared(JSON)
    sidecar: Mapped[str] = _shared(String)


_PRODUCT_COLUMNS = frozenset(Product.__annotations__) | {"id"}


class MeasurementSet(Product):
    """A converted Measurement Set, ``results/ms/{group}.ms``."""

    __tablename__ = "measurement_sets"

    n_rows: Mapped[int | None] = mapped_column(BigInteger)
    n_antennas: Mapped[int | None]
    n_channels: Mapped[int | None]
    freq_min_hz: Mapped[float | None] = mapped_column(Float)
    freq_max_hz: Mapped[float | None] = mapped_column(Float)
    time_start: Mapped[dt.datetime | None] = mapped_column(DateTime)
    time_end: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    flagged_fraction: Mapped[float | None] = mapped_column(Float)
    zero_fraction: Mapped[float | None] = mapped_column(Float)


# ---------------------------------------------------------- registration


@dataclass(frozen=True)
class Registration:
    """A sidecar ready to register: its content and where product and sidecar are."""

    sidecar: dict[str, Any]
    product: Path  # absolute
    sidecar_file: Path  # absolute
    workdir: Path  # what relative paths in the sidecar are relative to

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], record: dict[str, Any] | None = None
    ) -> Registration:
        """The product is the sidecar's own location minus ``.json``: that survives moves."""
        path = _absolute(path, Path.cwd())
        if path.suffix != ".json":
            raise SidecarError(path, "a sidecar file name must end in .json")
        record = read_sidecar(path) if record is None else validate_sidecar(record, path)
        workdir = Path(record.get("workdir") or Path.cwd())
        return cls(record, path.with_name(path.name[: -len(".json")]), path, workdir)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Registration:
        """A sidecar given as a dict: the product is its ``product`` field."""
        workdir = Path(record.get("workdir") or Path.cwd())
        source = sidecar_path(record.get("product", "<sidecar given as a dict>"))
        record = validate_sidecar(dict(record), source)
        product = _absolute(record["product"], workdir)
        return cls(record, product, sidecar_path(product), workdir)

    @property
    def qa(self) -> dict[str, Any]:
        return self.sidecar.get("qa") or {}

    def input_paths(self) -> list[Path]:
        return [_absolute(p, self.workdir) for p in self.sidecar["inputs"]]

    def group_id(self) -> str:
        """The sidecar's group, which must be a canonical group id."""
        group = self.sidecar.get("group")
        if not isinstance(group, str):
            raise SidecarError(self.sidecar_file, f"kind {self.sidecar['kind']!r} needs a group")
        try:
            naming.parse_timestamp(group)
        except ValueError as exc:
            raise SidecarError(self.sidecar_file, f"bad group: {exc}") from None
        return group


Handler = Callable[[Session, Registration], Outcome]


@dataclass(frozen=True)
class Kind:
    """How one product kind is stored: its table and its registration function."""

    name: str
    model: type[Product]
    register: Handler


#: sidecar ``kind`` -> how to register it. Extend with :func:`register_kind`.
KINDS: dict[str, Kind] = {}


def register_kind(name: str, model: type[Product]) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(session, registration) -> outcome`` registers sidecars of ``name``."""

    def decorate(handler: Handler) -> Handler:
        KINDS[name] = Kind(name, model, handler)
        return handler

    return decorate


@register_kind("ms", MeasurementSet)
def _register_ms(session: Session, reg: Registration) -> Outcome:
    """The group, the raw subband files it was converted from, then the MS row."""
    group = reg.group_id()
    dec_deg = reg.qa.get("pointing_dec_deg", reg.qa.get("dec_deg"))
    changed = _ensure_group(session, group, dec_deg=dec_deg) != "unchanged"
    for path in reg.input_paths():
        try:
            _, subband = naming.parse_raw_filename(path.name)
        except naming.RawNameError as exc:
            problem = f"input is not a raw subband file: {exc}"
            raise SidecarError(reg.sidecar_file, problem) from None
        changed |= _upsert_raw(session, path, subband, group, reassign=True) != "unchanged"
    changed |= _refresh_group(session, group)
    outcome = _upsert_product(session, MeasurementSet, reg, group)
    return "updated" if outcome == "unchanged" and changed else outcome


# ------------------------------------------------------------ row helpers


def _absolute(path: str | os.PathLike[str], base: Path) -> Path:
    path = Path(path)
    return (path if path.is_absolute() else base / path).resolve()


def _utc_naive(value: str | dt.datetime | None) -> dt.datetime | None:
    """ISO string or datetime -> naive UTC (the storage convention); naive input is UTC."""
    if value is None:
        return None
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _upsert(
    session: Session,
    model: type[Base],
    key: dict[str, Any],
    values: dict[str, Any],
    on_insert: dict[str, Any] | None = None,
) -> Outcome:
    """Select by ``key``; insert, or set the ``values`` that differ.

    Select-then-insert inside the caller's transaction works on every back
    end; a concurrent insert of the same key fails the commit with a unique
    violation, and :meth:`Database._run` retries the whole transaction.
    """
    row = session.scalars(select(model).filter_by(**key)).one_or_none()
    if row is None:
        session.add(model(**key, **values, **(on_insert or {})))
        session.flush()  # so later rows can reference it within this transaction
        return "added"
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return "updated" if changed else "unchanged"


def _ensure_group(session: Session, group: str, dec_deg: float | None = None) -> Outcome:
    """Create the group row if missing; fill in its declination once known."""
    row = session.get(ObservationGroup, group)
    if row is None:
        start = _utc_naive(naming.parse_timestamp(group))
        session.add(
            ObservationGroup(
                id=group, start_time=start, n_subbands=0, dec_deg=dec_deg, status="incomplete"
            )
        )
        session.flush()
        return "added"
    if dec_deg is not None and row.dec_deg is None:
        row.dec_deg = dec_deg
        return "updated"
    return "unchanged"


def _refresh_group(session: Session, group: str) -> bool:
    """Recount the group's distinct subbands; True if the row changed."""
    count = session.scalar(
        select(func.count(func.distinct(RawFile.subband))).where(RawFile.group_id == group)
    )
    status = "complete" if count >= naming.N_SUBBANDS else "incomplete"
    row = session.get(ObservationGroup, group)
    if (row.n_subbands, row.status) == (count, status):
        return False
    row.n_subbands, row.status = count, status
    return True


def _raw_group(session: Session, path: Path) -> str | None:
    """The group of a registered raw file (None if unregistered or ungrouped)."""
    return session.scalar(select(RawFile.group_id).where(RawFile.path == str(path)))


def _upsert_raw(
    session: Session, path: Path, subband: int, group: str | None, *, reassign: bool
) -> Outcome:
    """One raw file row. Size and mtime are updated only while the file exists
    (raw data is purged after conversion; the last known values stay).
    ``reassign``: a product's sidecar names the group authoritatively; a raw
    listing only assigns a group to a file that has none.
    """
    values: dict[str, Any] = {"subband": subband}
    on_insert: dict[str, Any] = {"registered_at": _utc_naive(dt.datetime.now(dt.timezone.utc))}
    try:
        st = path.stat()
    except FileNotFoundError:
        on_insert.update(size_bytes=None, mtime=None)
    else:
        values["size_bytes"] = st.st_size
        values["mtime"] = _utc_naive(dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc))
    if reassign or _raw_group(session, path) is None:
        values["group_id"] = group
    return _upsert(session, RawFile, {"path": str(path)}, values, on_insert)


def _qa_columns(model: type[Product], qa: Mapping[str, Any]) -> dict[str, Any]:
    """The model's own columns, filled from QA keys of the same name (None if absent)."""
    values = {}
    for column in model.__table__.columns:
        if column.key in _PRODUCT_COLUMNS:
            continue
        value = qa.get(column.key)
        values[column.key] = _utc_naive(value) if isinstance(column.type, DateTime) else value
    return values


def _upsert_product(
    session: Session, model: type[Product], reg: Registration, group: str | None
) -> Outcome:
    """One row per product path, made current and filled from the sidecar."""
    values = {
        "group_id": group,
        "status": CURRENT,
        "created": _utc_naive(reg.sidecar["created"]),
        "config_digest": reg.sidecar.get("config_digest"),
        "qa": reg.qa,
        "sidecar": str(reg.sidecar_file),
        **_qa_columns(model, reg.qa),
    }
    return _upsert(session, model, {"path": str(reg.product)}, values)


def _register_raw_group(
    session: Session, group: str, files: Iterable[tuple[Path, int]]
) -> list[tuple[Outcome, str, str]]:
    """Register raw files found in a listing; the group row is made only if needed."""
    results: list[tuple[Outcome, str, str]] = []
    for path, subband in files:
        if _raw_group(session, path) is None and _ensure_group(session, group) == "added":
            results.append(("added", "group", group))
        outcome = _upsert_raw(session, path, subband, group, reassign=False)
        results.append((outcome, "raw", str(path)))
    if session.get(ObservationGroup, group) is not None and _refresh_group(session, group):
        results.append(("updated", "group", group))
    return results


# ------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    """What :meth:`Database.sync` changed; entries are ``(kind, path or group id)``."""

    added: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    gone: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that could not be registered

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.gone)

    def record(self, outcome: Outcome, kind: str, what: str) -> None:
        getattr(self, outcome).append((kind, what))

    def __str__(self) -> str:
        head = (
            f"sync: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.gone)} gone, {len(self.unchanged)} unchanged"
        )
        if self.problems:
            head += f", {len(self.problems)} problem(s)"
        lines = [head if self.changed or self.problems else head + " (no change)"]
        limit = 20
        for label in ("added", "updated", "gone"):
            entries = getattr(self, label)
            lines += [f"  {label:<8}{kind:<6} {what}" for kind, what in entries[:limit]]
            if len(entries) > limit:
                lines.append(f"  ... and {len(entries) - limit} more {label}")
        lines += [f"  problem  {p}" for p in self.problems]
        return "\n".join(lines)


def iter_sidecar_files(results_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Every ``*.json`` under ``results_dir``, not descending into products.

    A directory with a sibling ``<dir>.json`` is a product (e.g. a Measurement
    Set with thousands of files); hidden names are atomic_output temporaries.
    """
    for root, dirs, files in os.walk(results_dir):
        names = set(files)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and f"{d}.json" not in names)
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(root, name)


# --------------------------------------------------------------- database


def _mask(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


class Database:
    """The product database at ``url`` (SQLAlchemy URL; tables created if missing)."""

    def __init__(
        self, url: str | URL, *, busy_timeout_s: float = 30.0, max_attempts: int = 8
    ) -> None:
        self.masked_url = _mask(url)
        self.max_attempts = max_attempts
        try:
            self.url = make_url(url)
            connect_args = {}
            postgres = self.url.get_backend_name() == "postgresql"
            if postgres and "connect_timeout" not in self.url.query:
                connect_args["connect_timeout"] = 10  # fail fast on a host that drops packets
            self.engine: Engine = create_engine(
                self.url, connect_args=connect_args, pool_pre_ping=True
            )
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise DatabaseError(f"cannot use database {self.masked_url}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine, busy_timeout_s)
        # Same pool and events; on SQLite its transactions begin IMMEDIATE.
        self._writer = self.engine.execution_options(contimg_write=True)
        self._run(self._create_tables, write=True)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> Database:
        """The database of a pipeline config: ``database.url``, or when that is
        absent or null, SQLite at ``<results_dir>/products.sqlite``."""
        url = (config.get("database") or {}).get("url")
        if url is None:
            if "results_dir" not in config:
                raise KeyError("config needs results_dir when database.url is not set")
            path = Path(naming.database_path(config["results_dir"])).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            url = URL.create("sqlite", database=str(path))
        return cls(url, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.masked_url!r})"

    # -- transactions

    @staticmethod
    def _create_tables(session: Session) -> None:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            # Concurrent CREATE TABLE races on PostgreSQL; SQLite is already
            # serialised by BEGIN IMMEDIATE.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        Base.metadata.create_all(connection)

    def _run(self, work: Callable[[Session], T], *, write: bool) -> T:
        """Run ``work`` in one transaction, retrying it while the database is busy."""
        engine = self._writer if write else self.engine
        for attempt in range(1, self.max_attempts + 1):
            try:
                with Session(engine) as session, session.begin():
                    return work(session)
            except (OperationalError, IntegrityError) as exc:
                if attempt < self.max_attempts and _is_transient(exc):
                    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
                    continue
                raise DatabaseError(f"database {self.masked_url}: {exc.orig}") from exc
            except SQLAlchemyError as exc:
                raise DatabaseError(f"database {self.masked_url}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- registration

    def register_sidecar(self, sidecar: Mapping[str, Any] | str | os.PathLike[str]) -> Outcome:
        """Register the product a sidecar (dict or ``.json`` path) describes, atomically.

        Raises :class:`SidecarError` for a bad sidecar, :class:`UnknownKindError`
        for a kind without handler, ``FileNotFoundError`` if the product is missing.
        """
        if isinstance(sidecar, Mapping):
            reg = Registration.from_record(sidecar)
        else:
            reg = Registration.from_file(sidecar)
        return self._register(reg)

    def register_product(self, product: str | os.PathLike[str]) -> Outcome:
        """Register a finished product from the sidecar next to it."""
        return self.register_sidecar(sidecar_path(product))

    def _register(self, reg: Registration) -> Outcome:
        kind = KINDS.get(reg.sidecar["kind"])
        if kind is None:
            raise UnknownKindError(
                f"{reg.sidecar_file}: unknown kind {reg.sidecar['kind']!r}; known: {sorted(KINDS)}"
            )
        if not os.path.lexists(reg.product):
            raise FileNotFoundError(
                f"product {reg.product} of sidecar {reg.sidecar_file} does not exist"
            )
        return self._run(lambda session: kind.register(session, reg), write=True)

    def sync(
        self,
        results_dir: str | os.PathLike[str],
        raw_dir: str | os.PathLike[str] | None = None,
        *,
        tolerance_s: float = 60.0,
    ) -> SyncReport:
        """Make the database agree with the files; running it twice changes nothing.

        Registers every sidecar of a known kind whose product exists, marks
        "gone" every current product whose path no longer exists, and, with
        ``raw_dir``, registers its raw files (grouped by :mod:`grouping`).
        One transaction per product, so a problem with one file (listed in
        the report) does not stop the others.
        """
        report = SyncReport()
        for path in iter_sidecar_files(results_dir):
            self._sync_sidecar(path, report)
        report.gone.extend(self._mark_gone())
        if raw_dir is not None:
            self._sync_raw(Path(raw_dir), tolerance_s, report)
        return report

    def _sync_sidecar(self, path: Path, report: SyncReport) -> None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            report.problems.append(f"{path}: cannot read JSON: {exc}")
            return
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            return  # some other JSON file (a config dump, a report), not a sidecar of ours
        try:
            reg = Registration.from_file(path, record)
            if not os.path.lexists(reg.product):
                return  # deleted product: marked gone below, registered again after a rerun
            report.record(self._register(reg), record["kind"], str(reg.product))
        except SidecarError as exc:
            report.problems.append(str(exc))

    def _mark_gone(self) -> list[tuple[str, str]]:
        """Mark current products whose path is missing as gone.

        The existence checks (one stat per product, slow on a cluster file
        system) run outside the write transaction so the lock is held only
        briefly; inside it the few candidates are checked again, so a product
        rerun in the meantime stays current.
        """

        def current(session: Session) -> dict[str, list[tuple[int, str]]]:
            return {
                name: session.execute(
                    select(k.model.id, k.model.path).where(k.model.status == CURRENT)
                ).all()
                for name, k in KINDS.items()
            }

        candidates = {
            name: [(id_, path) for id_, path in rows if not os.path.lexists(path)]
            for name, rows in self._run(current, write=False).items()
        }

        def mark(session: Session) -> list[tuple[str, str]]:
            gone = []
            for name, rows in candidates.items():
                model = KINDS[name].model
                for id_, path in rows:
                    row = session.get(model, id_)
                    if row is not None and row.status == CURRENT and not os.path.lexists(path):
                        row.status = GONE
                        gone.append((name, path))
            return gone

        return self._run(mark, write=True) if any(candidates.values()) else []

    def _sync_raw(self, raw_dir: Path, tolerance_s: float, report: SyncReport) -> None:
        paths = {p.name: p.resolve() for p in raw_dir.iterdir() if p.is_file()}
        found = grouping.group_files(paths, tolerance_s=tolerance_s)
        report.problems.extend(f"{raw_dir}: {why}" for why in found.invalid.values())
        for group in found.groups:
            members = [(paths[name], sb) for sb, name in group.files.items()]
            for sb, names in group.duplicates.items():
                members += [(paths[name], sb) for name in names[1:]]
            results = self._run(
                lambda session, g=group.id, m=members: _register_raw_group(session, g, m),
                write=True,
            )
            for outcome, kind, what in results:
                report.record(outcome, kind, what)

    # -- queries

    def list_products(
        self, kind: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Product rows as plain dicts (``kind`` plus every column), by kind then path."""
        if kind is not None and kind not in KINDS:
            raise UnknownKindError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
        kinds = [KINDS[kind]] if kind else list(KINDS.values())

        def query(session: Session) -> list[dict[str, Any]]:
            rows = []
            for k in kinds:
                stmt = select(k.model).order_by(k.model.path)
                if status is not None:
                    stmt = stmt.where(k.model.status == status)
                rows += [{"kind": k.name, **_as_dict(row)} for row in session.scalars(stmt)]
            return rows

        return self._run(query, write=False)

    def list_raw_files(self, group: str | None = None) -> list[dict[str, Any]]:
        """Raw file rows as plain dicts, by path."""

        def query(session: Session) -> list[dict[str, Any]]:
            stmt = select(RawFile).order_by(RawFile.path)
            if group is not None:
                stmt = stmt.where(RawFile.group_id == group)
            return [_as_dict(row) for row in session.scalars(stmt)]

        return self._run(query, write=False)

    def group_summary(self) -> list[dict[str, Any]]:
        """One dict per group, in time order, with ``products``: kind -> current count."""

        def query(session: Session) -> list[dict[str, Any]]:
            counts: dict[str, dict[str, int]] = {}
            for k in KINDS.values():
                stmt = (
                    select(k.model.group_id, func.count())
                    .where(k.model.status == CURRENT)
                    .group_by(k.model.group_id)
                )
                for group, n in session.execute(stmt):
                    counts.setdefault(group, {})[k.name] = n
            groups = session.scalars(select(ObservationGroup).order_by(ObservationGroup.start_time))
            return [{**_as_dict(g), "products": counts.get(g.id, {})} for g in groups]

        return self._run(query, write=False)


def _as_dict(row: Base) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    """Pragmas on every new connection, and our own BEGIN (see the module docstring)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough for an index of files
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("contimg_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _is_transient(exc: OperationalError | IntegrityError) -> bool:
    """Worth retrying: SQLite busy/locked; PostgreSQL unique race, serialization, deadlock."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig)
        return "database is locked" in message or "database is busy" in message
    return getattr(orig, "sqlstate", None) in {"23505", "40001", "40P01"}


def register(config: Mapping[str, Any], *products: str | os.PathLike[str]) -> None:
    """Register finished products in the configured database: what rule scripts call."""
    with Database.from_config(config) as db:
        for product in products:
            db.register_product(product)


__all__ = [
    "CURRENT",
    "GONE",
    "KINDS",
    "Database",
    "DatabaseError",
    "Kind",
    "MeasurementSet",
    "ObservationGroup",
    "Product",
    "RawFile",
    "Registration",
    "SyncReport",
    "UnknownKindError",
    "iter_sidecar_files",
    "register",
    "register_kind",
]
