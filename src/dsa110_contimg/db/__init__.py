"""The product database: an index of what exists on disk, rebuilt from sidecars.

Files are the truth (DESIGN.md, principle 1). Every product has a JSON sidecar
(:mod:`dsa110_contimg.provenance`); registering a product copies what its
sidecar says into rows, in one transaction, and :meth:`Database.sync`
reconciles the whole database with the files, so a lost write or a deleted and
rerun product always ends up right.

- :mod:`.schema`: the tables (one ``products`` table plus one per kind,
  provenance links, rows loaded from products, job runs).
- :mod:`.registry`: registering a sidecar; :func:`register_kind` adds a kind.
- :mod:`.kinds`: the kinds the pipeline makes (contract: ``docs/products.md``).
- :mod:`.core`: :class:`Database` (transactions, retries, sync), the parse-time
  :func:`check_database`, :func:`register` and :func:`job_run` for stages.
- :mod:`.queries`: listing, provenance trees, the night summary.
- :mod:`.migrate`: schema revisions and Alembic upgrades (``contimg db upgrade``).

Paths are stored absolute (resolved), so a product registered by a job and the
same product found by ``sync`` from another directory are the same row.
Datetimes are stored as naive UTC.
"""

from . import kinds as _kinds  # noqa: F401  (registers the pipeline's kinds)
from .core import (
    Database,
    SyncReport,
    check_database,
    database_url,
    iter_sidecar_files,
    job_run,
    record_job,
    register,
)
from .errors import DatabaseError, SchemaError, SchemaOutdatedError, SchemaTooNewError
from .queries import Node, NotFoundError
from .registry import (
    KINDS,
    Kind,
    Registration,
    UnknownKindError,
    register_kind,
    register_standard,
)
from .schema import (
    ACTIVE,
    CURRENT,
    GONE,
    HEAD_REVISION,
    RETIRED,
    Base,
    CalFlux,
    CalibratedMS,
    CalibratorFlux,
    CalTable,
    EseCandidate,
    EseCandidates,
    Image,
    JobRun,
    LightCurves,
    Measurement,
    MeasurementSet,
    Mosaic,
    MosaicPlan,
    MosaicQA,
    NewSourceCandidate,
    NewSources,
    ObservationGroup,
    Photometry,
    Product,
    ProductFile,
    ProductInput,
    RawFile,
    Variability,
    VariabilityMetric,
)

__all__ = [
    "ACTIVE",
    "CURRENT",
    "GONE",
    "HEAD_REVISION",
    "KINDS",
    "RETIRED",
    "Base",
    "CalFlux",
    "CalTable",
    "CalibratorFlux",
    "CalibratedMS",
    "Database",
    "DatabaseError",
    "EseCandidate",
    "EseCandidates",
    "Image",
    "JobRun",
    "Kind",
    "LightCurves",
    "Measurement",
    "MeasurementSet",
    "Mosaic",
    "MosaicPlan",
    "MosaicQA",
    "NewSourceCandidate",
    "NewSources",
    "Node",
    "NotFoundError",
    "ObservationGroup",
    "Photometry",
    "Product",
    "ProductFile",
    "ProductInput",
    "RawFile",
    "Registration",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SyncReport",
    "UnknownKindError",
    "Variability",
    "VariabilityMetric",
    "check_database",
    "database_url",
    "iter_sidecar_files",
    "job_run",
    "record_job",
    "register",
    "register_kind",
    "register_standard",
]
