"""The product kinds the pipeline makes and how each one is registered.

The contract between the stages and the database (which sidecar ``qa`` keys
fill which columns, which files are loaded row by row) is written out for
people in ``docs/products.md``; keep the two in step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from .. import naming
from .registry import (
    Outcome,
    Registration,
    ensure_group,
    refresh_group,
    register_kind,
    register_standard,
    require_choice,
    upsert_raws,
    utc_naive,
)
from .schema import (
    ACTIVE,
    GRADES,
    RETIRED,
    Base,
    CalFlux,
    CalibratedMS,
    CalibratorFlux,
    CalTable,
    EseCandidate,
    EseCandidates,
    Image,
    LightCurves,
    Measurement,
    MeasurementSet,
    Mosaic,
    MosaicPlan,
    MosaicQA,
    NewSourceCandidate,
    NewSources,
    Photometry,
    Product,
    Variability,
    VariabilityMetric,
)

# ------------------------------------------------------------- per group


@register_kind("ms", time_column="time_start", dec_column="dec_deg")
def _register_ms(session: Session, reg: Registration) -> Outcome:
    """The group, the raw subband files it was converted from, then the MS row and links."""
    group = reg.group_id()
    files = []
    for path in reg.input_paths():
        try:
            _, subband = naming.parse_raw_filename(path.name)
        except naming.RawNameError as exc:
            raise reg.problem(f"input is not a raw subband file: {exc}") from None
        files.append((path, subband))
    changed = ensure_group(session, group) == "added"
    changed |= any(o != "unchanged" for o, _ in upsert_raws(session, files, group, reassign=True))
    outcome, _ = register_standard(session, reg, MeasurementSet)
    changed |= refresh_group(session, group)
    return "updated" if outcome == "unchanged" and changed else outcome


@register_kind("caltable", time_column="transit_time", dec_column="dec_deg")
def _register_caltable(session: Session, reg: Registration) -> Outcome:
    """A calibration is active when it passed QA, unless its sidecar says ``cal_status``."""
    status = reg.qa.get("cal_status")
    require_choice(reg, "cal_status", status, (ACTIVE, RETIRED))
    if status is None:
        status = ACTIVE if reg.qa.get("passed") is True else RETIRED
    return register_standard(session, reg, CalTable, own={"cal_status": status})[0]


@register_kind("calibrated", time_column="time_start", dec_column="dec_deg")
def _register_calibrated(session: Session, reg: Registration) -> Outcome:
    return register_standard(session, reg, CalibratedMS)[0]


@register_kind("image", dec_column="dec_deg")
def _register_image(session: Session, reg: Registration) -> Outcome:
    require_choice(reg, "grade", reg.qa.get("grade"), GRADES)
    return register_standard(session, reg, Image)[0]


# ------------------------------------------------- products loaded by rows


@dataclass(frozen=True)
class RowTable:
    """A product whose file's rows go into ``model`` (column ``parent`` -> the product).

    ``required`` columns must be in the file; the model's other data columns
    are taken when present. ``count_column`` on the product gets the row count.
    """

    model: type[Base]
    parent: str
    required: tuple[str, ...]
    count_column: str

    def data_columns(self) -> list[Any]:
        skip = {"id", self.parent}
        return [c for c in self.model.__table__.columns if c.key not in skip]


MEASUREMENTS = RowTable(
    Measurement,
    "photometry_id",
    ("source", "ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "mjd"),
    "n_measurements",
)
VARIABILITY = RowTable(
    VariabilityMetric, "variability_id", ("source", "ra_deg", "dec_deg", "n_epochs"), "n_sources"
)
ESE = RowTable(
    EseCandidate,
    "list_id",
    ("source", "ra_deg", "dec_deg", "start_mjd", "end_mjd", "depth"),
    "n_candidates",
)
CALIBRATOR_FLUX = RowTable(CalibratorFlux, "calflux_id", ("calgroup", "calibrator"), "n_solutions")
NEW_SOURCES = RowTable(NewSourceCandidate, "list_id", ("ra_deg", "dec_deg", "flux_jy", "snr"), "n_candidates")


def read_table(path: Path, spec: RowTable) -> Any:
    """A parquet or CSV file as a pyarrow table (imported here: only these kinds need it).

    CSV has no types: the model's text columns are read as text, so a group
    id or a source name that looks like a time or a number stays a string.
    """
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    if path.suffix == ".parquet":
        return pyarrow.parquet.read_table(path)
    if path.suffix == ".csv":
        text = {c.key: pa.string() for c in spec.data_columns() if isinstance(c.type, String | Text)}
        return pyarrow.csv.read_csv(path, convert_options=pyarrow.csv.ConvertOptions(column_types=text))
    raise ValueError(f"rows are read from .parquet or .csv files, not {path.suffix!r}")


def _column_values(column: Any, data: Any) -> list[Any]:
    """One file column as the values of the model column it fills; NaN becomes NULL.

    Types are checked once per column on the arrow type, not per value: a
    photometry file has 10^4-10^5 rows.
    """
    import pyarrow as pa

    if pa.types.is_dictionary(data.type):  # e.g. a pandas categorical column
        data = data.cast(data.type.value_type)
    kind = data.type
    if pa.types.is_null(kind):
        return [None] * len(data)
    if isinstance(column.type, Float):
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise TypeError(f"expected numbers, found {kind}")
        return [None if v != v else v for v in data.to_pylist()]  # v != v: NaN
    if isinstance(column.type, DateTime):
        if pa.types.is_timestamp(kind):  # microseconds: Python datetimes, not pandas'
            return [utc_naive(v) for v in data.cast(pa.timestamp("us", kind.tz)).to_pylist()]
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            try:
                return [None if v in (None, "") else utc_naive(v) for v in data.to_pylist()]
            except ValueError as exc:
                raise TypeError(f"expected ISO times: {exc}") from None
        raise TypeError(f"expected times, found {kind}")
    if isinstance(column.type, Boolean):
        if not pa.types.is_boolean(kind):
            raise TypeError(f"expected true/false, found {kind}")
    elif isinstance(column.type, Integer):
        if not pa.types.is_integer(kind):
            raise TypeError(f"expected integers, found {kind}")
    elif isinstance(column.type, String) and not (
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        raise TypeError(f"expected strings, found {kind}")
    return data.to_pylist()


def load_rows(session: Session, reg: Registration, product: Product, spec: RowTable) -> int:
    """Replace the product's rows with the rows of its file, in the caller's transaction."""
    try:
        table = read_table(reg.product, spec)
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise reg.problem(f"cannot read rows of {reg.product}: {exc}") from None
    missing = [c for c in spec.required if c not in table.column_names]
    if missing:
        raise reg.problem(f"{reg.product} lacks columns {missing} (has {table.column_names})")
    columns: dict[str, list[Any]] = {}
    for column in spec.data_columns():
        if column.key in table.column_names:
            try:
                values = _column_values(column, table.column(column.key))
            except TypeError as exc:
                raise reg.problem(f"{reg.product} column {column.key!r}: {exc}") from None
            if not column.nullable and None in values:
                raise reg.problem(f"{reg.product} column {column.key!r} has empty values")
            columns[column.key] = values
        elif column.default is not None:  # e.g. flags: 0 when the file has none
            columns[column.key] = [column.default.arg] * table.num_rows
    n = table.num_rows
    columns[spec.parent] = [product.id] * n
    session.execute(delete(spec.model).where(getattr(spec.model, spec.parent) == product.id))
    bulk_insert(session, spec.model.__table__, columns)
    return n


def bulk_insert(session: Session, table: Any, columns: dict[str, list[Any]]) -> None:
    """Insert rows given as columns, in the session's transaction: COPY on PostgreSQL,
    the driver's executemany on SQLite.

    A night brings ~10^5 photometry rows; the ORM's one dict per row costs
    several times more than the drivers' own bulk paths. Values still go
    through the column types' bind processors (SQLite stores times as text).
    """
    connection = session.connection()
    dialect = connection.dialect
    names = list(columns)
    values = []
    for name in names:
        process = table.c[name].type.bind_processor(dialect)
        values.append(columns[name] if process is None else [process(v) for v in columns[name]])
    rows = list(zip(*values))
    if not rows:
        return
    listed = ", ".join(names)
    if dialect.name == "postgresql":
        text = "\n".join(map("\t".join, zip(*map(_copy_column, values)))) + "\n"
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({listed}) FROM STDIN") as copy:
                copy.write(text.encode())
    elif dialect.name == "sqlite":
        marks = ", ".join("?" * len(names))
        connection.exec_driver_sql(f"INSERT INTO {table.name} ({listed}) VALUES ({marks})", rows)
    else:
        connection.execute(insert(table), [dict(zip(names, row)) for row in rows])


def _copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_column(values: list[Any]) -> list[str]:
    """A column in COPY text format: one ``repr`` per number (the common case), escapes for text.

    Formatting whole columns and sending one block is several times faster
    than the driver's row-by-row ``write_row`` for 10^5 rows.
    """
    if all(type(v) is float for v in values) or all(type(v) is int for v in values):
        return list(map(repr, values))
    return list(map(_copy_field, values))


def register_with_rows(
    session: Session,
    reg: Registration,
    model: type[Product],
    spec: RowTable,
    *,
    needs_group: bool,
) -> Outcome:
    """Register the product; reload its rows only when it is new or changed.

    A product's rows change only with the product, and the product's
    sidecar (new ``created``) or file (size, mtime) changes with it, so an
    unchanged row means unchanged rows: ``db sync`` does not reread them.
    """
    outcome, row = register_standard(
        session, reg, model, needs_group=needs_group, keep=[spec.count_column]
    )
    stored = session.scalar(
        select(func.count()).select_from(spec.model).where(getattr(spec.model, spec.parent) == row.id)
    )
    if outcome == "unchanged" and stored == getattr(row, spec.count_column):
        return outcome
    setattr(row, spec.count_column, load_rows(session, reg, row, spec))
    return "updated" if outcome == "unchanged" else outcome


@register_kind("photometry")
def _register_photometry(session: Session, reg: Registration) -> Outcome:
    return register_with_rows(session, reg, Photometry, MEASUREMENTS, needs_group=True)


@register_kind("new_sources")
def _register_new_sources(session: Session, reg: Registration) -> Outcome:
    return register_with_rows(session, reg, NewSources, NEW_SOURCES, needs_group=True)


@register_kind("lightcurves")
def _register_lightcurves(session: Session, reg: Registration) -> Outcome:
    return register_standard(session, reg, LightCurves, needs_group=False)[0]


@register_kind("variability")
def _register_variability(session: Session, reg: Registration) -> Outcome:
    return register_with_rows(session, reg, Variability, VARIABILITY, needs_group=False)


@register_kind("ese_candidates")
def _register_ese(session: Session, reg: Registration) -> Outcome:
    return register_with_rows(session, reg, EseCandidates, ESE, needs_group=False)


@register_kind("calflux")
def _register_calflux(session: Session, reg: Registration) -> Outcome:
    return register_with_rows(session, reg, CalFlux, CALIBRATOR_FLUX, needs_group=False)


# ------------------------------------------------------------------ mosaics


@register_kind("mosaic_plan", time_column="time_start", dec_column="dec_deg")
def _register_mosaic_plan(session: Session, reg: Registration) -> Outcome:
    return register_standard(session, reg, MosaicPlan, needs_group=False)[0]


@register_kind("mosaic", time_column="time_start", dec_column="dec_deg")
def _register_mosaic(session: Session, reg: Registration) -> Outcome:
    return register_standard(session, reg, Mosaic, needs_group=False)[0]


@register_kind("mosaic_qa")
def _register_mosaic_qa(session: Session, reg: Registration) -> Outcome:
    require_choice(reg, "grade", reg.qa.get("grade"), GRADES)
    return register_standard(session, reg, MosaicQA, needs_group=False)[0]


#: Tables filled from product files, for tests and the docs.
ROW_TABLES: Mapping[str, RowTable] = {
    "photometry": MEASUREMENTS,
    "new_sources": NEW_SOURCES,
    "variability": VARIABILITY,
    "ese_candidates": ESE,
    "calflux": CALIBRATOR_FLUX,
}

__all__ = ["ROW_TABLES", "RowTable", "load_rows", "read_table", "register_with_rows"]
