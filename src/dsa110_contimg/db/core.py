"""The :class:`Database`: connections, transactions with retries, registration and sync.

SQLite is the default, PostgreSQL the cluster option; both go through the same
ORM code. For SQLite, write transactions start with ``BEGIN IMMEDIATE`` (the
write lock is taken up front, so ``busy_timeout`` can wait for it instead of
failing on a lock upgrade), the journal is WAL (readers never block the
writer) and transactions are retried with backoff while the database stays
locked. On PostgreSQL a unique-key race between two jobs registering the same
group, a serialization failure or a deadlock is retried the same way. Each
registration is one transaction: a job killed half-way leaves nothing of it.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session

from dsa110_contimg.raw import grouping

from .. import naming
from ..provenance import SidecarError, sidecar_path
from . import jobs, migrate, queries
from .errors import DatabaseError
from .registry import (
    KINDS,
    Outcome,
    Registration,
    UnknownKindError,
    file_state,
    refresh_group,
    upsert_raws,
)
from .schema import CURRENT, GONE, HEAD_REVISION, ObservationGroup, Product, RawFile

T = TypeVar("T")


# ------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    """What :meth:`Database.sync` changed; entries are ``(kind, path or group id)``."""

    added: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    gone: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that could not be registered
    died: list[tuple[str, str]] = field(default_factory=list)  # (rule, why) of runs found dead

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.gone or self.died)

    def record(self, outcome: Outcome, kind: str, what: str) -> None:
        getattr(self, outcome).append((kind, what))

    def __str__(self) -> str:
        head = (
            f"sync: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.gone)} gone, {len(self.unchanged)} unchanged"
        )
        if self.died:
            head += f", {len(self.died)} died job(s) recorded"
        if self.problems:
            head += f", {len(self.problems)} problem(s)"
        lines = [head if self.changed or self.problems else head + " (no change)"]
        limit = 20
        for label in ("added", "updated", "gone"):
            entries = getattr(self, label)
            lines += [f"  {label:<8}{kind:<11} {what}" for kind, what in entries[:limit]]
            if len(entries) > limit:
                lines.append(f"  ... and {len(entries) - limit} more {label}")
        lines += [f"  died     {rule:<11} {why}" for rule, why in self.died[:limit]]
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


def _registered_state(session: Session) -> dict[str, tuple[Any, ...]]:
    """path -> (status, sidecar digest, size, mtime) of every product, in one query."""
    stmt = select(
        Product.path, Product.status, Product.sidecar_digest, Product.size_bytes, Product.mtime
    )
    return {path: tuple(rest) for path, *rest in session.execute(stmt)}


def _raw_state(session: Session) -> dict[str, tuple[Any, ...]]:
    """path -> (group, subband, size, mtime) of every raw file, in one query."""
    stmt = select(RawFile.path, RawFile.group_id, RawFile.subband, RawFile.size_bytes, RawFile.mtime)
    return {path: tuple(rest) for path, *rest in session.execute(stmt)}


def _raw_unchanged(state: tuple[Any, ...] | None, subband: int, path: Path) -> bool:
    """Whether registering this raw file again would change nothing."""
    if state is None or state[0] is None:
        return False
    return state[1:] == (subband, *file_state(path).values())


def _register_raw_group(
    session: Session, group: str, files: list[tuple[Path, int]]
) -> list[tuple[Outcome, str, str]]:
    """Register raw files found in a listing; the group row is made only if needed."""
    results: list[tuple[Outcome, str, str]] = []
    had_group = session.get(ObservationGroup, group) is not None
    for outcome, path in upsert_raws(session, files, group, reassign=False):
        results.append((outcome, "raw", str(path)))
    if not had_group and session.get(ObservationGroup, group) is not None:
        results.insert(0, ("added", "group", group))
    if session.get(ObservationGroup, group) is not None and refresh_group(session, group):
        results.append(("updated", "group", group))
    return results


# -------------------------------------------------------------- connections


def mask(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def database_url(config: Mapping[str, Any]) -> URL:
    """``database.url`` of a pipeline config, or SQLite at ``<results_dir>/products.sqlite``."""
    url = (config.get("database") or {}).get("url")
    if url is not None:
        try:
            return make_url(url)
        except ArgumentError as exc:
            raise DatabaseError(f"cannot use database {mask(url)}: {exc}") from exc
    if "results_dir" not in config:
        raise KeyError("config needs results_dir when database.url is not set")
    path = Path(naming.database_path(config["results_dir"])).resolve()
    return URL.create("sqlite", database=str(path))


def make_engine(url: str | URL, busy_timeout_s: float = 30.0) -> Engine:
    """An engine with the settings every connection needs (see the module docstring)."""
    masked = mask(url)
    try:
        url = make_url(url)
        connect_args = {}
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10  # fail fast on a host that drops packets
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        raise DatabaseError(f"cannot use database {masked}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, busy_timeout_s)
    return engine


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


# ------------------------------------------------------------------ database


class Database:
    """The product database at ``url`` (SQLAlchemy URL).

    A new, empty database is created at the current schema revision; one at
    another revision is refused (:class:`~.errors.SchemaOutdatedError`,
    :class:`~.errors.SchemaTooNewError`) unless ``check_schema=False``, which
    only ``contimg db upgrade`` uses.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        busy_timeout_s: float = 30.0,
        max_attempts: int = 8,
        check_schema: bool = True,
    ) -> None:
        self.masked_url = mask(url)
        self.max_attempts = max_attempts
        self.engine: Engine = make_engine(url, busy_timeout_s)
        self.url = self.engine.url
        # Same pool and events; on SQLite its transactions begin IMMEDIATE.
        self._writer = self.engine.execution_options(contimg_write=True)
        if check_schema:
            try:
                self._open_schema()
            except BaseException:
                self.engine.dispose()
                raise

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> Database:
        """The database of a pipeline config (:func:`database_url`); makes the SQLite folder."""
        url = database_url(config)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return cls(url, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.masked_url!r})"

    # -- transactions and schema

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

    def revision(self) -> str | None:
        """The schema revision the database is at (None: empty)."""
        where = f"database {self.masked_url}"
        return self._run(lambda s: migrate.schema_revision(s.connection(), where), write=False)

    def _open_schema(self) -> None:
        """Create a new database at the head; refuse one at another revision."""
        where = f"database {self.masked_url}"
        revision = self.revision()
        if revision is None:
            revision = self._run(self._create, write=True)
        migrate.require_head(revision, where)

    @staticmethod
    def _create(session: Session) -> str:
        connection = session.connection()
        migrate.lock_schema(connection)
        if migrate.schema_revision(connection) is None:  # nobody created it meanwhile
            migrate.upgrade(connection)
        return migrate.schema_revision(connection)

    def upgrade(self, target: str = "head") -> tuple[str | None, str]:
        """Bring the schema to ``target`` (default the head); returns (before, after)."""
        return self._run(lambda s: migrate.upgrade(s.connection(), target), write=True)

    def downgrade(self, target: str) -> None:
        self._run(lambda s: migrate.downgrade(s.connection(), target), write=True)

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

    def register_raw_files(self, group: str, files: Iterable[str | os.PathLike[str]]) -> None:
        """Register one group's raw files (named ``<time>_sbNN.hdf5``) before it is
        processed, so a group whose conversion fails is still known with its files."""
        members = [(Path(f).resolve(), naming.parse_raw_filename(Path(f).name)[1]) for f in files]
        self._run(lambda session: _register_raw_group(session, group, members), write=True)

    def _register(self, reg: Registration) -> Outcome:
        kind = KINDS.get(reg.kind)
        if kind is None:
            raise UnknownKindError(
                f"{reg.sidecar_file}: unknown kind {reg.kind!r}; known: {sorted(KINDS)}"
            )
        if not os.path.lexists(reg.product):
            raise FileNotFoundError(
                f"product {reg.product} of sidecar {reg.sidecar_file} does not exist"
            )
        return self._run(lambda session: kind.register(session, reg), write=True)

    # -- reconciliation

    def sync(
        self,
        results_dir: str | os.PathLike[str],
        raw_dir: str | os.PathLike[str] | None = None,
        *,
        tolerance_s: float = 60.0,
        full: bool = False,
    ) -> SyncReport:
        """Make the database agree with the files; running it twice changes nothing.

        Registers every sidecar of a known kind whose product exists, marks
        "gone" every current product whose path no longer exists, and, with
        ``raw_dir``, registers its raw files (grouped by :mod:`grouping`).
        One transaction per product, so a problem with one file (listed in
        the report) does not stop the others. A product whose sidecar and
        file are as registered is skipped without a transaction; ``full``
        registers every one again (after a change of the registration code).
        """
        report = SyncReport()
        report.problems.extend(self.integrity_problems(quick=True))
        if report.problems:  # a damaged file: writing to it could only make it worse
            return report
        known = {} if full else self._run(_registered_state, write=False)
        for path in iter_sidecar_files(results_dir):
            self._sync_sidecar(path, report, known)
        report.gone.extend(self._mark_gone())
        if raw_dir is not None:
            self._sync_raw(Path(raw_dir), tolerance_s, report)
        report.died.extend((run["rule"], run["message"]) for run in self.reap_dead_jobs())
        return report

    def _sync_sidecar(self, path: Path, report: SyncReport, known: Mapping[str, Any]) -> None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            report.problems.append(f"{path}: cannot read JSON: {exc}")
            return
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            return  # some other JSON file (a config dump, a plan), not a sidecar of ours
        try:
            reg = Registration.from_file(path, record)
            if not os.path.lexists(reg.product):
                return  # deleted product: marked gone below, registered again after a rerun
            # Status, sidecar digest and size: Snakemake touches outputs after the job has
            # registered them, and a product rewritten by a job always has a new sidecar.
            state = (CURRENT, reg.digest, file_state(reg.product)["size_bytes"])
            if (known.get(str(reg.product)) or ())[:3] == state:
                report.record("unchanged", reg.kind, str(reg.product))
                return
            report.record(self._register(reg), reg.kind, str(reg.product))
        except SidecarError as exc:
            report.problems.append(str(exc))
        except FileNotFoundError:
            return  # deleted while we looked: marked gone below

    def _mark_gone(self) -> list[tuple[str, str]]:
        """Mark current products whose path is missing as gone.

        The existence checks (one stat per product, slow on a cluster file
        system) run outside the write transaction so the lock is held only
        briefly; inside it the few candidates are checked again, so a product
        rerun in the meantime stays current.
        """

        def current(session: Session) -> list[tuple[int, str, str]]:
            stmt = select(Product.id, Product.kind, Product.path).where(Product.status == CURRENT)
            return [tuple(row) for row in session.execute(stmt.order_by(Product.kind, Product.path))]

        candidates = [row for row in self._run(current, write=False) if not os.path.lexists(row[2])]

        def mark(session: Session) -> list[tuple[str, str]]:
            gone = []
            for id_, kind, path in candidates:
                row = session.get(Product, id_)
                if row is not None and row.status == CURRENT and not os.path.lexists(path):
                    row.status = GONE
                    gone.append((kind, path))
            return gone

        return self._run(mark, write=True) if candidates else []

    def _sync_raw(self, raw_dir: Path, tolerance_s: float, report: SyncReport) -> None:
        """Register the raw files by group; a group whose files are all as registered is
        skipped without a transaction (a month of raw data is 10^5 files)."""
        paths = {p.name: p.resolve() for p in raw_dir.iterdir() if p.is_file()}
        found = grouping.group_files(paths, tolerance_s=tolerance_s)
        report.problems.extend(f"{raw_dir}: {why}" for why in found.invalid.values())
        known = self._run(_raw_state, write=False)
        for group in found.groups:
            members = [(paths[name], sb) for sb, name in group.files.items()]
            for sb, names in group.duplicates.items():
                members += [(paths[name], sb) for name in names[1:]]
            if all(_raw_unchanged(known.get(str(path)), sb, path) for path, sb in members):
                for path, _ in members:
                    report.record("unchanged", "raw", str(path))
                continue
            results = self._run(
                lambda session, g=group.id, m=members: _register_raw_group(session, g, m),
                write=True,
            )
            for outcome, kind, what in results:
                report.record(outcome, kind, what)

    # -- job runs

    def record_job(
        self,
        rule: str,
        wildcards: Mapping[str, Any] | None = None,
        status: str = "success",
        **kwargs: Any,
    ) -> int:
        """Record (or with ``run_id``, update) one job run; see :func:`.jobs.record`."""
        return self._run(
            lambda s: jobs.record(s, rule, wildcards or {}, status, **kwargs), write=True
        )

    def reap_dead_jobs(self) -> list[dict[str, Any]]:
        """Record as died every running job whose process is gone (:func:`.jobs.reap`)."""
        return self._run(lambda s: [queries.as_dict(r) for r in jobs.reap(s)], write=True)

    def integrity_problems(self, quick: bool = False) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` (``quick``: ``quick_check``, which skips
        the index-content checks, O(N) not O(N log N)): the problems found, [] when the
        file is sound. Other databases check their own pages; [] for them."""
        if self.engine.dialect.name != "sqlite":
            return []
        pragma = "quick_check" if quick else "integrity_check"
        try:
            with self.engine.connect() as connection:
                rows = connection.exec_driver_sql(f"PRAGMA {pragma}").all()
        except SQLAlchemyError as exc:
            return [f"database {self.masked_url}: {_first_line(exc)}"]
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else [f"database {self.masked_url}: {p}" for p in found]

    # -- queries (see :mod:`.queries` for what each returns)

    def list_products(self, kind: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Product rows as dicts (``kind`` plus every column), by kind then path."""
        return self._run(lambda s: queries.list_products(s, kind, **filters), write=False)

    def get_product(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        return self._run(lambda s: queries.get_product(s, _resolve(path)), write=False)

    def list_raw_files(self, group: str | None = None) -> list[dict[str, Any]]:
        return self._run(lambda s: queries.list_raw_files(s, group), write=False)

    def group_summary(self) -> list[dict[str, Any]]:
        return self._run(queries.group_summary, write=False)

    def provenance(self, path: str | os.PathLike[str]) -> queries.Node:
        """What ``path`` was made from, down to the raw files."""
        return self._run(lambda s: queries.provenance(s, _resolve(path)), write=False)

    def derived(self, path: str | os.PathLike[str]) -> queries.Node:
        """Everything made from ``path`` (a raw file or a product), up to the last product."""
        return self._run(lambda s: queries.derived(s, _resolve(path)), write=False)

    def night(self, date: Any) -> dict[str, Any]:
        return self._run(lambda s: queries.night_summary(s, date), write=False)

    def measurements(self, **filters: Any) -> list[dict[str, Any]]:
        return self._run(lambda s: queries.measurements(s, **filters), write=False)

    def calibrator_flux(self, **filters: Any) -> list[dict[str, Any]]:
        return self._run(lambda s: queries.calibrator_flux(s, **filters), write=False)

    def job_runs(self, **filters: Any) -> list[dict[str, Any]]:
        return self._run(lambda s: queries.job_runs(s, **filters), write=False)


def _resolve(path: str | os.PathLike[str]) -> str:
    """Paths are stored absolute and resolved; so are the ones asked about."""
    return str(Path(path).resolve())


# ------------------------------------------------------------- module API


def register(config: Mapping[str, Any], *products: str | os.PathLike[str]) -> None:
    """Register finished products in the configured database: what rule scripts call."""
    with Database.from_config(config) as db:
        for product in products:
            db.register_product(product)


def check_database(config: Mapping[str, Any]) -> str:
    """Parse-time check: the configured database is reachable and at this code's revision.

    Raises :class:`DatabaseError` (unreachable, unusable URL) or a
    :class:`~.errors.SchemaError` naming the fix, so a run stops before any
    job starts instead of every job failing at registration. Writes nothing:
    a missing SQLite file is fine (the first job creates it), and so is an
    empty PostgreSQL database. Returns a one-line description.
    """
    url = database_url(config)
    masked = mask(url)
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if sqlite_file and not Path(url.database).exists():
        return f"database {masked}: new (created by the first job)"
    engine = make_engine(url, busy_timeout_s=10.0)
    try:
        with engine.connect() as connection:
            revision = migrate.schema_revision(connection, f"database {masked}")
            if engine.dialect.name == "sqlite":
                # A damaged file would fail jobs at registration, one by one.
                found = [str(r[0]) for r in connection.exec_driver_sql("PRAGMA quick_check").all()]
                if found != ["ok"]:
                    raise DatabaseError(
                        f"database {masked} is damaged ({'; '.join(found[:3])}): move it aside and "
                        "rebuild it with `contimg db sync` (files are the truth)"
                    )
    except SQLAlchemyError as exc:
        if "malformed" in _first_line(exc):
            raise DatabaseError(
                f"database {masked} is damaged ({_first_line(exc)}): move it aside and rebuild it "
                "with `contimg db sync` (files are the truth)"
            ) from exc
        full = jobs.free_space_problem(url.database) if sqlite_file else None
        reason = f"{full}: {_first_line(exc)}" if full else _first_line(exc)
        raise DatabaseError(f"cannot reach database {masked}: {reason}") from exc
    finally:
        engine.dispose()
    migrate.require_head(revision, f"database {masked}")
    return f"database {masked}: schema revision {revision or 'none (new)'}, head {HEAD_REVISION}"


def _first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())


job_run = jobs.job_run


def record_job(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any], status: str, **kwargs: Any) -> int:
    """Record one job run in the configured database (see :func:`.jobs.record`)."""
    with Database.from_config(config) as db:
        return db.record_job(rule, wildcards, status, **kwargs)
