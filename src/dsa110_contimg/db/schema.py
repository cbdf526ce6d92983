"""Tables of the product database (schema revision :data:`HEAD_REVISION`).

Every product is one row of ``products`` (the columns all kinds share: path,
kind, group, status, the sidecar's QA as JSON ...) plus one row of its kind's
own table (joined-table inheritance: ``images.id`` is ``products.id``) holding
the QA values people filter on as real columns. Keeping one ``products`` table
is what lets provenance be real foreign keys: ``product_inputs`` links a
product to each input, which is another product or a raw file, so the graph
can be walked down (an image to its raw files) and up (a raw file to
everything made from it) with plain joins.

Tables whose rows come from a product's content rather than its sidecar
(photometry measurements, variability metrics, ESE and new-source
candidates, calibrator flux monitoring) hang off their product with
``ON DELETE CASCADE`` and are replaced whenever their product changes.

Changing a table here needs a migration in ``dsa110_contimg/migrations``
(``tests/test_db_migrations.py`` fails until the two agree).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: The Alembic revision these models describe; every known revision, oldest first.
HEAD_REVISION = "0003"
REVISIONS = ("0001", "0002", "0003")

#: Statuses of a product row: the file exists, or it did and was deleted.
CURRENT, GONE = "current", "gone"
#: Statuses of a calibration: usable, or not (failed QA, or retired in its sidecar).
ACTIVE, RETIRED = "active", "retired"
#: Image and mosaic QA grades.
GRADES = ("good", "marginal", "bad")
#: Statuses of a job run ("died": its process is gone without a final record).
JOB_STATUSES = ("running", "success", "failed", "died")

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT
# for tables that grow by 10^5 rows a night.
RowId = BigInteger().with_variant(Integer, "sqlite")


def _fk_product(**kwargs: Any) -> Any:
    """A reference to ``products.id`` that disappears with its product."""
    return mapped_column(ForeignKey("products.id", ondelete="CASCADE"), **kwargs)


class Base(DeclarativeBase):
    pass


# ------------------------------------------------------- raw data and groups


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


# ------------------------------------------------------------------ products


class Product(Base):
    """What every product has; one subclass (and table) per kind adds its QA columns."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    path: Mapped[str] = mapped_column(String, unique=True)  # absolute, resolved
    group_id: Mapped[str | None] = mapped_column(ForeignKey("observation_groups.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # CURRENT or GONE
    created: Mapped[dt.datetime | None] = mapped_column(DateTime)  # from the sidecar
    config_digest: Mapped[str | None] = mapped_column(String(64))
    qa: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the sidecar's whole qa
    software: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host: Mapped[str | None] = mapped_column(String)
    sidecar: Mapped[str] = mapped_column(String)
    sidecar_digest: Mapped[str | None] = mapped_column(String(64))  # what was registered
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)  # regular files only
    mtime: Mapped[dt.datetime | None] = mapped_column(DateTime)  # regular files only
    registered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __mapper_args__ = {"polymorphic_on": "kind"}


#: Columns of ``products``; a kind's own columns are the others.
PRODUCT_COLUMNS = frozenset(c.key for c in Product.__table__.columns)


class ProductInput(Base):
    """One input of a product, as its sidecar names it, resolved when known.

    ``input_path`` is kept even when the input is not (yet) registered, so a
    product registered before its input (``db sync`` walks folders in name
    order) is linked as soon as the input arrives.
    """

    __tablename__ = "product_inputs"
    __table_args__ = (UniqueConstraint("product_id", "input_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = _fk_product(index=True)
    input_path: Mapped[str] = mapped_column(String, index=True)
    input_product_id: Mapped[int | None] = mapped_column(
        ForeignKey("products.id", ondelete="SET NULL"), index=True
    )
    raw_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("raw_files.id", ondelete="SET NULL"), index=True
    )


class ProductFile(Base):
    """A companion file of a product, listed in its sidecar's ``products`` (name -> path).

    An image comes with its residual, primary beam, beam-corrected image and
    thumbnail; a mosaic with its noise and weight maps. A later product that
    names one of them as input is linked to the product that owns it.
    """

    __tablename__ = "product_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = _fk_product(index=True)
    name: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String, unique=True)


def _kind_id() -> Any:
    return mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)


class MeasurementSet(Product):
    """A converted Measurement Set, ``results/ms/{group}.ms``."""

    __tablename__ = "measurement_sets"
    __mapper_args__ = {"polymorphic_identity": "ms"}

    id: Mapped[int] = _kind_id()
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


class CalTable(Product):
    """Bandpass and gain solutions of one calibrator transit, ``results/caltables/{calgroup}``."""

    __tablename__ = "caltables"
    __mapper_args__ = {"polymorphic_identity": "caltable"}

    id: Mapped[int] = _kind_id()
    calibrator: Mapped[str | None] = mapped_column(String(32), index=True)
    refant: Mapped[str | None] = mapped_column(String(16))
    n_antennas: Mapped[int | None]
    flagged_fraction: Mapped[float | None] = mapped_column(Float)
    amp_scatter: Mapped[float | None] = mapped_column(Float)
    phase_scatter_deg: Mapped[float | None] = mapped_column(Float)
    snr_median: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    transit_time: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    valid_start: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    valid_end: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    flux_measured_jy: Mapped[float | None] = mapped_column(Float)
    flux_expected_jy: Mapped[float | None] = mapped_column(Float)
    flux_ratio: Mapped[float | None] = mapped_column(Float)
    cal_status: Mapped[str] = mapped_column(String(16), index=True)  # ACTIVE or RETIRED


class CalibratedMS(Product):
    """A calibrated Measurement Set, ``results/calibrated/{group}.ms``."""

    __tablename__ = "calibrated_ms"
    __mapper_args__ = {"polymorphic_identity": "calibrated"}

    id: Mapped[int] = _kind_id()
    caltable: Mapped[str | None] = mapped_column(String(32), index=True)  # calgroup id
    separation_h: Mapped[float | None] = mapped_column(Float)
    flagged_fraction: Mapped[float | None] = mapped_column(Float)  # after RFI flagging
    n_channels: Mapped[int | None]
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    time_start: Mapped[dt.datetime | None] = mapped_column(DateTime)
    time_end: Mapped[dt.datetime | None] = mapped_column(DateTime)
    rfi_flagged_fraction: Mapped[float | None] = mapped_column(Float)  # newly flagged as RFI (revision 0003)


class Image(Product):
    """A restored image, ``results/images/{group}.image.fits``."""

    __tablename__ = "images"
    __mapper_args__ = {"polymorphic_identity": "image"}

    id: Mapped[int] = _kind_id()
    rms_jy: Mapped[float | None] = mapped_column(Float)
    peak_jy: Mapped[float | None] = mapped_column(Float)
    dynamic_range: Mapped[float | None] = mapped_column(Float)
    beam_major_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_minor_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_pa_deg: Mapped[float | None] = mapped_column(Float)
    n_sources_5sigma: Mapped[int | None]
    grade: Mapped[str | None] = mapped_column(String(16), index=True)
    thermal_rms_jy: Mapped[float | None] = mapped_column(Float)
    rms_over_thermal: Mapped[float | None] = mapped_column(Float)
    imager: Mapped[str | None] = mapped_column(String(16))
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    freq_hz: Mapped[float | None] = mapped_column(Float)


class Photometry(Product):
    """Forced photometry of one image, ``results/photometry/{group}.parquet``."""

    __tablename__ = "photometry"
    __mapper_args__ = {"polymorphic_identity": "photometry"}

    id: Mapped[int] = _kind_id()
    mjd: Mapped[float | None] = mapped_column(Float)
    n_flagged: Mapped[int | None]
    n_measurements: Mapped[int | None]  # rows loaded from the file (not from QA)


class LightCurves(Product):
    """Light curves of a set of sources (fan-in of photometry), ``results/lightcurves/{name}.parquet``."""

    __tablename__ = "lightcurves"
    __mapper_args__ = {"polymorphic_identity": "lightcurves"}

    id: Mapped[int] = _kind_id()
    n_sources: Mapped[int | None]
    n_epochs: Mapped[int | None]
    first_mjd: Mapped[float | None] = mapped_column(Float)
    last_mjd: Mapped[float | None] = mapped_column(Float)
    n_reference_sources: Mapped[int | None]


class Variability(Product):
    """Per-source variability metrics, ``results/variability/{name}.parquet``."""

    __tablename__ = "variability"
    __mapper_args__ = {"polymorphic_identity": "variability"}

    id: Mapped[int] = _kind_id()
    n_sources: Mapped[int | None]  # rows loaded from the file
    n_variable: Mapped[int | None]


class EseCandidates(Product):
    """Extreme-scattering-event candidates, ``results/variability/ese_candidates.csv``."""

    __tablename__ = "ese_candidate_lists"
    __mapper_args__ = {"polymorphic_identity": "ese_candidates"}

    id: Mapped[int] = _kind_id()
    preset: Mapped[str | None] = mapped_column(String(16))
    n_candidates: Mapped[int | None]  # rows loaded from the file


class NewSources(Product):
    """Blind detections not in the catalogue, ``results/photometry/{group}.new_sources.csv``."""

    __tablename__ = "new_source_lists"
    __mapper_args__ = {"polymorphic_identity": "new_sources"}

    id: Mapped[int] = _kind_id()
    threshold_sigma: Mapped[float | None] = mapped_column(Float)
    n_candidates: Mapped[int | None]  # rows loaded from the file


class MosaicPlan(Product):
    """Which images a mosaic takes (and why others not), ``results/mosaics/{tier}/{name}.plan.csv``."""

    __tablename__ = "mosaic_plans"
    __mapper_args__ = {"polymorphic_identity": "mosaic_plan"}

    id: Mapped[int] = _kind_id()
    tier: Mapped[str | None] = mapped_column(String(16), index=True)
    name: Mapped[str | None] = mapped_column(String)
    n_images: Mapped[int | None]
    n_rejected: Mapped[int | None]
    time_start: Mapped[dt.datetime | None] = mapped_column(DateTime)
    time_end: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)


class Mosaic(Product):
    """A linear mosaic, ``results/mosaics/{tier}/{name}.fits``."""

    __tablename__ = "mosaics"
    __mapper_args__ = {"polymorphic_identity": "mosaic"}

    id: Mapped[int] = _kind_id()
    tier: Mapped[str | None] = mapped_column(String(16), index=True)
    name: Mapped[str | None] = mapped_column(String)
    n_images: Mapped[int | None]
    time_start: Mapped[dt.datetime | None] = mapped_column(DateTime)
    time_end: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    width_deg: Mapped[float | None] = mapped_column(Float)
    height_deg: Mapped[float | None] = mapped_column(Float)
    pixel_arcsec: Mapped[float | None] = mapped_column(Float)


class MosaicQA(Product):
    """QA of one mosaic, ``results/mosaics/{tier}/{name}.qa.png`` (preview; metrics in its sidecar)."""

    __tablename__ = "mosaic_qa"
    __mapper_args__ = {"polymorphic_identity": "mosaic_qa"}

    id: Mapped[int] = _kind_id()
    rms_jy: Mapped[float | None] = mapped_column(Float)
    rms_uniformity: Mapped[float | None] = mapped_column(Float)
    peak_jy: Mapped[float | None] = mapped_column(Float)
    dynamic_range: Mapped[float | None] = mapped_column(Float)
    astrometry_offset_arcsec: Mapped[float | None] = mapped_column(Float)
    flux_ratio: Mapped[float | None] = mapped_column(Float)
    n_matched: Mapped[int | None]
    grade: Mapped[str | None] = mapped_column(String(16), index=True)


class CalFlux(Product):
    """Calibrator flux monitoring over all solutions, ``results/calibration/calibrator_flux.csv``."""

    __tablename__ = "calflux_tables"
    __mapper_args__ = {"polymorphic_identity": "calflux"}

    id: Mapped[int] = _kind_id()
    n_solutions: Mapped[int | None]  # rows loaded from the file
    n_measured: Mapped[int | None]
    n_alerts: Mapped[int | None]


# ------------------------------------------------- rows loaded from products


class CalibratorFlux(Base):
    """One calibration's calibrator flux, measured against the catalogue: a row of a calflux table.

    ``calgroup`` is not a foreign key: ``db sync`` may load this table before
    the caltables (and their groups) it describes.
    """

    __tablename__ = "calibrator_flux"

    id: Mapped[int] = mapped_column(primary_key=True)
    calflux_id: Mapped[int] = _fk_product(index=True)
    calgroup: Mapped[str] = mapped_column(String(32), index=True)
    calibrator: Mapped[str] = mapped_column(String(32), index=True)
    transit_time: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    dec_deg: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    flux_expected_jy: Mapped[float | None] = mapped_column(Float)
    flux_measured_jy: Mapped[float | None] = mapped_column(Float)
    flux_ratio: Mapped[float | None] = mapped_column(Float)
    n_references: Mapped[int | None]
    alert: Mapped[bool | None] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)


class Measurement(Base):
    """One forced-photometry measurement: a row of a photometry parquet file."""

    __tablename__ = "photometry_measurements"
    __table_args__ = (Index("ix_photometry_measurements_source_mjd", "source", "mjd"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    photometry_id: Mapped[int] = _fk_product(index=True)  # its group: the product's
    source: Mapped[str] = mapped_column(String)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    flux_jy: Mapped[float | None] = mapped_column(Float)
    flux_err_jy: Mapped[float | None] = mapped_column(Float)
    local_rms_jy: Mapped[float | None] = mapped_column(Float)
    pb: Mapped[float | None] = mapped_column(Float)
    flags: Mapped[int] = mapped_column(default=0)
    mjd: Mapped[float] = mapped_column(Float)


class VariabilityMetric(Base):
    """Variability metrics of one source: a row of a variability parquet file."""

    __tablename__ = "variability_metrics"

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    variability_id: Mapped[int] = _fk_product(index=True)
    source: Mapped[str] = mapped_column(String, index=True)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    n_epochs: Mapped[int]
    eta: Mapped[float | None] = mapped_column(Float)
    v: Mapped[float | None] = mapped_column(Float)
    vs_max: Mapped[float | None] = mapped_column(Float)
    m_max: Mapped[float | None] = mapped_column(Float)
    chi2_red: Mapped[float | None] = mapped_column(Float)
    mean_flux_jy: Mapped[float | None] = mapped_column(Float)


class EseCandidate(Base):
    """One extreme-scattering-event candidate: a row of ese_candidates.csv."""

    __tablename__ = "ese_candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = _fk_product(index=True)
    source: Mapped[str] = mapped_column(String, index=True)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    start_mjd: Mapped[float] = mapped_column(Float)
    end_mjd: Mapped[float] = mapped_column(Float)
    depth: Mapped[float] = mapped_column(Float)
    significance: Mapped[float | None] = mapped_column(Float)


class NewSourceCandidate(Base):
    """One blind detection with no catalogue counterpart."""

    __tablename__ = "new_source_candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = _fk_product(index=True)  # its group: the product's
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    flux_jy: Mapped[float] = mapped_column(Float)
    flux_err_jy: Mapped[float | None] = mapped_column(Float)
    snr: Mapped[float] = mapped_column(Float)
    mjd: Mapped[float | None] = mapped_column(Float)


# ----------------------------------------------------------------- job runs


class JobRun(Base):
    """One run of one workflow job: the journal behind "what failed last night, and why".

    Not a product (nothing on disk describes it), so ``db sync`` cannot
    rebuild it; the job's log file, named here, is the lasting record.
    """

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    wildcards: Mapped[dict[str, Any]] = mapped_column(JSON)
    group_id: Mapped[str | None] = mapped_column(ForeignKey("observation_groups.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # JOB_STATUSES
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime)
    runtime_s: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str | None] = mapped_column(String)
    pid: Mapped[int | None]
    slurm_job_id: Mapped[str | None] = mapped_column(String(32))
    log_path: Mapped[str | None] = mapped_column(String)
    message: Mapped[str | None] = mapped_column(Text)  # why it failed
