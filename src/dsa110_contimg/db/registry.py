"""Registering a sidecar: the kind registry and the row helpers every kind uses.

A kind is a model class (a :class:`~.schema.Product` subclass) plus a handler
``handler(session, registration) -> outcome`` registered with
:func:`register_kind`. Most kinds use :func:`register_standard`: the product
row, its QA columns filled from the sidecar's ``qa`` keys of the same name,
and one provenance link per sidecar input. All of it runs inside the caller's
transaction, so a registration is all or nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from .. import naming
from ..provenance import SidecarError, read_sidecar, sidecar_path, validate_sidecar
from .schema import (
    CURRENT,
    HEAD_REVISION,
    PRODUCT_COLUMNS,
    Base,
    ObservationGroup,
    Product,
    ProductFile,
    ProductInput,
    RawFile,
)

Outcome = Literal["added", "updated", "unchanged"]


class UnknownKindError(ValueError):
    """A sidecar's ``kind`` has no registered handler."""


# ------------------------------------------------------------ registration


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
        path = absolute(path, Path.cwd())
        if path.suffix != ".json":
            raise SidecarError(path, "a sidecar file name must end in .json")
        record = read_sidecar(path) if record is None else validate_sidecar(record, path)
        workdir = Path(record.get("workdir") or Path.cwd())
        return cls(record, Path(naming.product_of_sidecar(path)), path, workdir)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Registration:
        """A sidecar given as a dict: the product is its ``product`` field."""
        workdir = Path(record.get("workdir") or Path.cwd())
        source = sidecar_path(record.get("product", "<sidecar given as a dict>"))
        record = validate_sidecar(dict(record), source)
        product = absolute(record["product"], workdir)
        return cls(record, product, sidecar_path(product), workdir)

    @property
    def kind(self) -> str:
        return self.sidecar["kind"]

    @property
    def qa(self) -> dict[str, Any]:
        return self.sidecar.get("qa") or {}

    def input_paths(self) -> list[Path]:
        return [absolute(p, self.workdir) for p in self.sidecar["inputs"]]

    def companions(self) -> dict[str, Path]:
        """The product's companion files (sidecar ``products``: name -> path), itself excluded."""
        listed = self.sidecar.get("products") or {}
        if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
            raise self.problem("'products' must map names to paths")
        paths = {str(name): absolute(path, self.workdir) for name, path in listed.items()}
        return {name: path for name, path in paths.items() if path != self.product}

    def group_id(self) -> str:
        """The sidecar's group, which must be a canonical group id."""
        group = self.sidecar.get("group")
        if not isinstance(group, str):
            raise SidecarError(self.sidecar_file, f"kind {self.kind!r} needs a group")
        try:
            naming.parse_timestamp(group)
        except ValueError as exc:
            raise SidecarError(self.sidecar_file, f"bad group: {exc}") from None
        return group

    def optional_group_id(self) -> str | None:
        return None if self.sidecar.get("group") is None else self.group_id()

    def problem(self, text: str) -> SidecarError:
        return SidecarError(self.sidecar_file, text)

    @property
    def digest(self) -> str:
        """SHA-256 of the sidecar's content and the schema revision it is registered into.

        Equal digests (and an unchanged product file) mean registering again
        would change nothing, which lets ``db sync`` skip the transaction.
        """
        text = json.dumps(self.sidecar, sort_keys=True, separators=(",", ":")) + HEAD_REVISION
        return hashlib.sha256(text.encode()).hexdigest()


Handler = Callable[[Session, Registration], Outcome]


@dataclass(frozen=True)
class Kind:
    """How one product kind is stored and found.

    ``time_column``/``dec_column`` name the model columns that ``products
    list --since/--until/--dec`` filter on; None means the observation
    group's start time / declination.
    """

    name: str
    model: type[Product]
    register: Handler
    time_column: str | None = None
    dec_column: str | None = None


#: sidecar ``kind`` -> how to register it. Extend with :func:`register_kind`.
KINDS: dict[str, Kind] = {}


def register_kind(
    name: str,
    model: type[Product] | None = None,
    *,
    time_column: str | None = None,
    dec_column: str | None = None,
) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(session, registration) -> outcome`` registers sidecars of ``name``.

    A product kind of the pipeline takes its model from the product registry
    (:data:`dsa110_contimg.naming.PRODUCTS`); ``model`` is for kinds beyond it.
    """
    if model is None:
        from . import schema

        model = getattr(schema, naming.kind_of(name).model or "", None)
        if model is None:
            raise ValueError(f"product kind {name!r} has no database model in naming.PRODUCTS")
    identity = model.__mapper__.polymorphic_identity
    if identity != name:
        raise ValueError(f"model {model.__name__} has polymorphic identity {identity!r}, not {name!r}")
    for column in (time_column, dec_column):
        if column is not None and column not in model.__table__.columns:
            raise ValueError(f"{model.__name__} has no column {column!r}")

    def decorate(handler: Handler) -> Handler:
        KINDS[name] = Kind(name, model, handler, time_column, dec_column)
        return handler

    return decorate


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(f"unknown kind {name!r}; known: {sorted(KINDS)}") from None


# ------------------------------------------------------------ value helpers


def absolute(path: str | os.PathLike[str], base: Path) -> Path:
    path = Path(path)
    return (path if path.is_absolute() else base / path).resolve()


def utc_naive(value: str | dt.datetime | None) -> dt.datetime | None:
    """ISO string or datetime -> naive UTC (the storage convention); naive input is UTC."""
    if value is None:
        return None
    when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def now() -> dt.datetime:
    return utc_naive(dt.datetime.now(dt.UTC))


def coerce(column: Any, value: Any) -> Any:
    """``value`` as column ``column`` stores it; TypeError/ValueError says why not.

    Strict on purpose: a QA value of the wrong type is a bug in the stage
    that wrote the sidecar, better found at registration than in a query.
    """
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, DateTime):
        if not isinstance(value, str | dt.datetime):
            raise TypeError(f"expected an ISO time string, found {value!r}")
        return utc_naive(value)
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, found {value!r}")
        return value
    if isinstance(kind, Integer):  # BigInteger too
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"expected an integer, found {value!r}")
        return value
    if isinstance(kind, Float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, found {value!r}")
        return float(value)
    if isinstance(kind, String | Text):
        if not isinstance(value, str):
            raise TypeError(f"expected a string, found {value!r}")
        return value
    return value


def qa_columns(
    model: type[Product], reg: Registration, *, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """The model's own columns, filled from QA keys of the same name (None if absent)."""
    skip = set(skip) | PRODUCT_COLUMNS
    values = {}
    for column in model.__table__.columns:
        if column.key in skip:
            continue
        try:
            values[column.key] = coerce(column, reg.qa.get(column.key))
        except (TypeError, ValueError) as exc:
            raise reg.problem(f"qa key {column.key!r}: {exc}") from None
    return values


def require_choice(reg: Registration, key: str, value: Any, choices: Iterable[str]) -> None:
    if value is not None and value not in choices:
        raise reg.problem(f"qa key {key!r}: {value!r} is not one of {list(choices)}")


# ----------------------------------------------------------- row helpers


def upsert(
    session: Session,
    model: type[Base],
    key: dict[str, Any],
    values: dict[str, Any],
    on_insert: dict[str, Any] | None = None,
) -> tuple[Outcome, Any]:
    """Select by ``key``; insert, or set the ``values`` that differ. Returns (outcome, row).

    Select-then-insert inside the caller's transaction works on every back
    end; a concurrent insert of the same key fails the commit with a unique
    violation, and ``Database._run`` retries the whole transaction.
    """
    row = session.scalars(select(model).filter_by(**key)).one_or_none()
    if row is None:
        row = model(**key, **values, **(on_insert or {}))
        session.add(row)
        session.flush()  # so later rows can reference it within this transaction
        return "added", row
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return ("updated" if changed else "unchanged"), row


def ensure_group(session: Session, group: str, dec_deg: float | None = None) -> Outcome:
    """Create the group row if missing; fill in its declination once known."""
    row = session.get(ObservationGroup, group)
    if row is None:
        start = utc_naive(naming.parse_timestamp(group))
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


def refresh_group(session: Session, group: str) -> bool:
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


def upsert_raws(
    session: Session, files: Iterable[tuple[Path, int]], group: str | None, *, reassign: bool
) -> list[tuple[Outcome, Path]]:
    """Raw file rows, found in one query. Size and mtime are updated only while the
    file exists (raw data is purged after conversion; the last known values stay).
    ``reassign``: a product's sidecar names the group authoritatively; a raw
    listing only assigns a group to a file that has none (and only then is the
    group row made).
    """
    files = list(files)
    rows = {
        row.path: row
        for row in session.scalars(select(RawFile).where(RawFile.path.in_([str(p) for p, _ in files])))
    }
    ungrouped = [p for p, _ in files if getattr(rows.get(str(p)), "group_id", None) is None]
    if group is not None and (reassign or ungrouped):
        ensure_group(session, group)
    outcomes: list[tuple[Outcome, Path]] = []
    added = []
    for path, subband in files:
        values: dict[str, Any] = {"subband": subband}
        if path.exists():
            values.update(file_state(path))
        row = rows.get(str(path))
        if reassign or row is None or row.group_id is None:
            values["group_id"] = group
        if row is None:
            session.add(RawFile(path=str(path), registered_at=now(), **values))
            added.append(str(path))
            outcomes.append(("added", path))
            continue
        changed = [name for name, value in values.items() if getattr(row, name) != value]
        for name in changed:
            setattr(row, name, values[name])
        outcomes.append(("updated" if changed else "unchanged", path))
    session.flush()
    if added:  # links that named these files before they were registered
        raw_id = select(RawFile.id).where(RawFile.path == ProductInput.input_path).scalar_subquery()
        session.execute(
            update(ProductInput)
            .where(ProductInput.input_path.in_(added), ProductInput.raw_file_id.is_(None))
            .where(ProductInput.input_product_id.is_(None))
            .values(raw_file_id=raw_id)
        )
    return outcomes


def file_state(path: Path) -> dict[str, Any]:
    """Size and mtime of a regular-file product: a rewritten file shows up in ``db sync``.

    Directories (Measurement Sets, caltables) get None: readers create lock
    files inside them, which would make every sync report them changed.
    """
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return {"size_bytes": None, "mtime": None}
    return {
        "size_bytes": st.st_size,
        "mtime": utc_naive(dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)),
    }


def upsert_product(
    session: Session,
    model: type[Product],
    reg: Registration,
    group: str | None,
    own: Mapping[str, Any],
) -> tuple[Outcome, Product]:
    """One row per product path, made current and filled from the sidecar.

    A rerun of a deleted product finds its old (gone) row by path and makes
    it current again, so there is exactly one row per product and the links
    of products made from it stay valid.
    """
    values = {
        "group_id": group,
        "status": CURRENT,
        "created": utc_naive(reg.sidecar["created"]),
        "config_digest": reg.sidecar.get("config_digest"),
        "qa": reg.qa,
        "software": reg.sidecar.get("software"),
        "host": reg.sidecar.get("host"),
        "sidecar": str(reg.sidecar_file),
        "sidecar_digest": reg.digest,
        **file_state(reg.product),
        **own,
    }
    # One statement: under PostgreSQL's READ COMMITTED two selects can straddle
    # another job's commit of this very row and see a conflict that is not there.
    other = session.scalar(select(Product.kind).where(Product.path == str(reg.product)))
    if other is not None and other != model.__mapper__.polymorphic_identity:
        raise reg.problem(
            f"{reg.product} is registered as kind {other!r}, the sidecar says {reg.kind!r}"
        )
    stamp = now()
    outcome, row = upsert(
        session, model, {"path": str(reg.product)}, values, {"registered_at": stamp, "updated_at": stamp}
    )
    if outcome == "updated":
        row.updated_at = stamp
    if outcome == "added":
        _bind_waiting_links(session, row)
    return outcome, row


def _bind_waiting_links(session: Session, product: Product) -> None:
    """Point links that named this product (its path, its sidecar, or a file inside it)
    before it was registered."""
    inside = ProductInput.input_path.startswith(product.path + "/", autoescape=True)
    named = ProductInput.input_path.in_([product.path, product.sidecar])
    session.execute(
        update(ProductInput)
        .where(ProductInput.input_product_id.is_(None))
        .where(named | inside)
        .where(ProductInput.product_id != product.id)
        .values(input_product_id=product.id)
    )


def replace_companions(session: Session, product: Product, reg: Registration) -> bool:
    """Make the product's companion files those its sidecar lists; True if they changed."""
    wanted = {str(path): name for name, path in reg.companions().items()}
    have = {
        row.path: row
        for row in session.scalars(select(ProductFile).where(ProductFile.product_id == product.id))
    }
    if set(wanted) - set(have):
        taken = session.execute(
            select(ProductFile.path, Product.path)
            .join(Product, Product.id == ProductFile.product_id)
            .where(ProductFile.path.in_(list(wanted)), ProductFile.product_id != product.id)
        ).first()
        if taken is not None:
            raise reg.problem(f"companion file {taken[0]} already belongs to product {taken[1]}")
    changed = False
    for path, row in have.items():
        if path not in wanted:
            session.delete(row)
            changed = True
        elif row.name != wanted[path]:
            row.name = wanted[path]
            changed = True
    new = [path for path in wanted if path not in have]
    for path in new:
        session.add(ProductFile(product_id=product.id, name=wanted[path], path=path))
    if new:
        session.flush()
        session.execute(
            update(ProductInput)
            .where(ProductInput.input_product_id.is_(None), ProductInput.input_path.in_(new))
            .where(ProductInput.product_id != product.id)
            .values(input_product_id=product.id)
        )
    return changed or bool(new)


def _resolve_inputs(session: Session, paths: list[Path]) -> dict[str, tuple[int | None, int | None]]:
    """path -> (product id, raw file id) of each input.

    An input is the product at that path, else the product it is a companion
    file of, else the product it is the sidecar of, else the closest product
    folder holding it (a table inside a caltable), else a raw file.
    """
    candidates = {}
    for path in paths:
        own = [str(path)]
        if path.suffix == ".json":
            own.append(naming.product_of_sidecar(path))
        parents = [str(p) for p in path.parents if p != Path(p.anchor)]
        candidates[str(path)] = (own, parents)
    every = sorted({c for own, parents in candidates.values() for c in (*own, *parents)})
    products = dict(
        session.execute(select(Product.path, Product.id).where(Product.path.in_(every))).all()
    )
    listed = list(candidates)
    companions = dict(
        session.execute(
            select(ProductFile.path, ProductFile.product_id).where(ProductFile.path.in_(listed))
        ).all()
    )
    raws = dict(
        session.execute(select(RawFile.path, RawFile.id).where(RawFile.path.in_(listed))).all()
    )
    resolved = {}
    for path, (own, parents) in candidates.items():
        product_id = products.get(own[0]) or companions.get(path)
        if product_id is None:
            product_id = next((products[c] for c in (*own[1:], *parents) if c in products), None)
        resolved[path] = (product_id, None if product_id is not None else raws.get(path))
    return resolved


def replace_links(session: Session, product: Product, reg: Registration) -> bool:
    """Make the product's input links the sidecar's inputs; True if they changed."""
    inputs = reg.input_paths()
    wanted = _resolve_inputs(session, inputs) if inputs else {}
    have = {
        link.input_path: link
        for link in session.scalars(select(ProductInput).where(ProductInput.product_id == product.id))
    }
    changed = False
    for path, link in have.items():
        if path not in wanted:
            session.delete(link)
            changed = True
    for path, (product_id, raw_id) in wanted.items():
        link = have.get(path)
        if link is None:
            session.add(
                ProductInput(
                    product_id=product.id,
                    input_path=path,
                    input_product_id=product_id,
                    raw_file_id=raw_id,
                )
            )
            changed = True
        elif (link.input_product_id, link.raw_file_id) != (product_id, raw_id):
            link.input_product_id, link.raw_file_id = product_id, raw_id
            changed = True
    session.flush()
    return changed


def register_standard(
    session: Session,
    reg: Registration,
    model: type[Product],
    *,
    needs_group: bool = True,
    own: Mapping[str, Any] | None = None,
    keep: Iterable[str] = (),
) -> tuple[Outcome, Product]:
    """The usual registration: group, product row with QA columns, input links.

    ``own`` sets kind columns computed by the handler; ``keep`` names kind
    columns this leaves alone (the handler fills them afterwards).
    """
    group = reg.group_id() if needs_group else reg.optional_group_id()
    changed = False
    if group is not None:
        changed |= ensure_group(session, group, dec_deg=_dec_of(reg)) != "unchanged"
    skip = {*(own or {}), *keep}
    columns = {**qa_columns(model, reg, skip=skip), **(own or {})}
    outcome, row = upsert_product(session, model, reg, group, columns)
    changed |= replace_companions(session, row, reg)
    changed |= replace_links(session, row, reg)
    if outcome == "unchanged" and changed:
        row.updated_at = now()
        outcome = "updated"
    return outcome, row


def _dec_of(reg: Registration) -> float | None:
    """The pointing declination a sidecar reports, for its group row."""
    value = reg.qa.get("pointing_dec_deg", reg.qa.get("dec_deg"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
