"""Every product kind, provenance links, companion files, rows loaded from products
(photometry, variability, ESE and new-source candidates, calibrator flux), job runs.

Measurement Sets move into the shared ``products`` table (their ids are
kept), so that every product can be an input of another through real
foreign keys (``product_inputs``). The Measurement Sets' links to their raw
files are filled from the raw files of their group, which is what revision
0001 recorded; ``contimg db sync`` then refreshes every link from the
sidecars. Downgrading keeps the Measurement Sets and drops everything else.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

MS_COLUMNS = (
    "n_rows", "n_antennas", "n_channels", "freq_min_hz", "freq_max_hz", "time_start",
    "time_end", "ra_deg", "dec_deg", "flagged_fraction", "zero_fraction",
)  # fmt: skip

def _float(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable)


def _int(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _time(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=True)


def _str(name: str, length: int | None = None, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or f"ix_{table}_{columns[0]}", table, list(columns))


def _kind_table(name: str, *columns: sa.Column, indexed: tuple[str, ...] = ()) -> None:
    """A kind's own table: its id is the product's id."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["id"], ["products.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in indexed:
        _index(name, column)


def _row_table(name: str, parent: str, *columns: sa.Column, row_id=sa.Integer()) -> None:
    """Rows loaded from a product's file, removed with the product."""
    op.create_table(
        name,
        sa.Column("id", row_id, nullable=False),
        sa.Column(parent, sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint([parent], ["products.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _index(name, parent)


def _group_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["group_id"], ["observation_groups.id"])


def _reset_sequence(table: str) -> None:
    """PostgreSQL: the id sequence continues after rows copied in with their ids."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        )


def _create_products() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("kind", 32, nullable=False),
        _str("path", nullable=False),
        _str("group_id", 32),
        _str("status", 16, nullable=False),
        _time("created"),
        _str("config_digest", 64),
        sa.Column("qa", sa.JSON(), nullable=True),
        sa.Column("software", sa.JSON(), nullable=True),
        _str("host"),
        _str("sidecar", nullable=False),
        _str("sidecar_digest", 64),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        _time("mtime"),
        _time("registered_at"),
        _time("updated_at"),
        _group_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    for column in ("group_id", "kind", "status"):
        _index("products", column)
    op.create_table(
        "product_inputs",
        sa.Column("id", sa.Integer(), nullable=False),
        _int("product_id", nullable=False),
        _str("input_path", nullable=False),
        _int("input_product_id"),
        _int("raw_file_id"),
        sa.ForeignKeyConstraint(["input_product_id"], ["products.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["raw_file_id"], ["raw_files.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("product_id", "input_path"),
    )
    for column in ("input_path", "input_product_id", "product_id", "raw_file_id"):
        _index("product_inputs", column)
    op.create_table(
        "product_files",
        sa.Column("id", sa.Integer(), nullable=False),
        _int("product_id", nullable=False),
        _str("name", 32, nullable=False),
        _str("path", nullable=False),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    _index("product_files", "product_id")


def _create_ms_table() -> None:
    _kind_table(
        "measurement_sets",
        sa.Column("n_rows", sa.BigInteger(), nullable=True),
        _int("n_antennas"),
        _int("n_channels"),
        _float("freq_min_hz"),
        _float("freq_max_hz"),
        _time("time_start"),
        _time("time_end"),
        _float("ra_deg"),
        _float("dec_deg"),
        _float("flagged_fraction"),
        _float("zero_fraction"),
    )


def _move_measurement_sets() -> None:
    """Shared columns into ``products`` (same ids), the rest into the new ``measurement_sets``."""
    op.execute(
        "INSERT INTO products (id, kind, path, group_id, status, created, config_digest, qa, "
        "sidecar, registered_at, updated_at) "
        "SELECT id, 'ms', path, group_id, status, created, config_digest, qa, sidecar, "
        "created, created FROM measurement_sets"
    )
    _reset_sequence("products")
    columns = ", ".join(("id", *MS_COLUMNS))
    op.execute(f"CREATE TABLE _ms_rev1 AS SELECT {columns} FROM measurement_sets")
    op.drop_index("ix_measurement_sets_group_id", table_name="measurement_sets")
    op.drop_index("ix_measurement_sets_status", table_name="measurement_sets")
    op.drop_table("measurement_sets")
    _create_ms_table()
    op.execute(f"INSERT INTO measurement_sets ({columns}) SELECT {columns} FROM _ms_rev1")
    op.drop_table("_ms_rev1")
    op.execute(
        "INSERT INTO product_inputs (product_id, input_path, raw_file_id) "
        "SELECT p.id, r.path, r.id FROM products p JOIN raw_files r ON r.group_id = p.group_id "
        "WHERE p.kind = 'ms'"
    )


def _create_kind_tables() -> None:
    _kind_table(
        "caltables",
        _str("calibrator", 32), _str("refant", 16), _int("n_antennas"),
        _float("flagged_fraction"), _float("amp_scatter"), _float("phase_scatter_deg"),
        _float("snr_median"), sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True), _time("transit_time"),
        _time("valid_start"), _time("valid_end"), _float("dec_deg"),
        _float("flux_measured_jy"), _float("flux_expected_jy"), _float("flux_ratio"),
        _str("cal_status", 16, nullable=False),
        indexed=("cal_status", "calibrator", "transit_time", "valid_end", "valid_start"),
    )  # fmt: skip
    _kind_table(
        "calibrated_ms",
        _str("caltable", 32), _float("separation_h"), _float("flagged_fraction"),
        _int("n_channels"), _float("ra_deg"), _float("dec_deg"), _time("time_start"),
        _time("time_end"),
        indexed=("caltable",),
    )  # fmt: skip
    _kind_table(
        "images",
        _float("rms_jy"), _float("peak_jy"), _float("dynamic_range"),
        _float("beam_major_arcsec"), _float("beam_minor_arcsec"), _float("beam_pa_deg"),
        _int("n_sources_5sigma"), _str("grade", 16), _float("thermal_rms_jy"),
        _float("rms_over_thermal"), _str("imager", 16), _float("ra_deg"), _float("dec_deg"),
        _float("freq_hz"),
        indexed=("grade",),
    )  # fmt: skip
    _kind_table("photometry", _float("mjd"), _int("n_flagged"), _int("n_measurements"))
    _kind_table(
        "lightcurves",
        _int("n_sources"), _int("n_epochs"), _float("first_mjd"), _float("last_mjd"),
        _int("n_reference_sources"),
    )  # fmt: skip
    _kind_table("variability", _int("n_sources"), _int("n_variable"))
    _kind_table("ese_candidate_lists", _str("preset", 16), _int("n_candidates"))
    _kind_table("new_source_lists", _float("threshold_sigma"), _int("n_candidates"))
    _kind_table("calflux_tables", _int("n_solutions"), _int("n_measured"), _int("n_alerts"))
    _kind_table(
        "mosaic_plans",
        _str("tier", 16), _str("name"), _int("n_images"), _int("n_rejected"),
        _time("time_start"), _time("time_end"), _float("ra_deg"), _float("dec_deg"),
        indexed=("tier",),
    )  # fmt: skip
    _kind_table(
        "mosaics",
        _str("tier", 16), _str("name"), _int("n_images"), _time("time_start"),
        _time("time_end"), _float("ra_deg"), _float("dec_deg"), _float("width_deg"),
        _float("height_deg"), _float("pixel_arcsec"),
        indexed=("tier",),
    )  # fmt: skip
    _kind_table(
        "mosaic_qa",
        _float("rms_jy"), _float("rms_uniformity"), _float("peak_jy"), _float("dynamic_range"),
        _float("astrometry_offset_arcsec"), _float("flux_ratio"), _int("n_matched"),
        _str("grade", 16),
        indexed=("grade",),
    )  # fmt: skip


def _create_row_tables() -> None:
    _row_table(
        "photometry_measurements", "photometry_id",
        _str("source", nullable=False),
        _float("ra_deg", False), _float("dec_deg", False), _float("flux_jy"),
        _float("flux_err_jy"), _float("local_rms_jy"), _float("pb"),
        _int("flags", nullable=False), _float("mjd", False),
        row_id=RowId,
    )  # fmt: skip
    _index(
        "photometry_measurements", "source", "mjd", name="ix_photometry_measurements_source_mjd"
    )
    _row_table(
        "variability_metrics", "variability_id",
        _str("source", nullable=False), _float("ra_deg", False), _float("dec_deg", False),
        _int("n_epochs", nullable=False), _float("eta"), _float("v"), _float("vs_max"),
        _float("m_max"), _float("chi2_red"), _float("mean_flux_jy"),
        row_id=RowId,
    )  # fmt: skip
    _index("variability_metrics", "source")
    _row_table(
        "ese_candidates", "list_id",
        _str("source", nullable=False), _float("ra_deg", False), _float("dec_deg", False),
        _float("start_mjd", False), _float("end_mjd", False), _float("depth", False),
        _float("significance"),
    )  # fmt: skip
    _index("ese_candidates", "source")
    _row_table(
        "new_source_candidates", "list_id",
        _float("ra_deg", False), _float("dec_deg", False), _float("flux_jy", False),
        _float("flux_err_jy"), _float("snr", False), _float("mjd"),
    )  # fmt: skip
    _row_table(
        "calibrator_flux", "calflux_id",
        _str("calgroup", 32, nullable=False), _str("calibrator", 32, nullable=False),
        _time("transit_time"), _float("dec_deg"), sa.Column("passed", sa.Boolean(), nullable=True),
        _float("flux_expected_jy"), _float("flux_measured_jy"), _float("flux_ratio"),
        _int("n_references"), sa.Column("alert", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )  # fmt: skip
    for column in ("calgroup", "calibrator", "transit_time"):
        _index("calibrator_flux", column)


def _create_job_runs() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("rule", 64, nullable=False),
        sa.Column("wildcards", sa.JSON(), nullable=False),
        _str("group_id", 32),
        _str("status", 16, nullable=False),
        _time("started"),
        _time("finished"),
        _float("runtime_s"),
        _str("host"),
        _int("pid"),
        _str("slurm_job_id", 32),
        _str("log_path"),
        sa.Column("message", sa.Text(), nullable=True),
        _group_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("group_id", "rule", "started", "status"):
        _index("job_runs", column)


def upgrade() -> None:
    _create_products()
    _move_measurement_sets()
    _create_kind_tables()
    _create_row_tables()
    _create_job_runs()


#: Tables dropped by downgrade, those referring to others first.
NEW_TABLES = (
    "job_runs", "calibrator_flux", "calflux_tables", "new_source_candidates", "ese_candidates", "variability_metrics",
    "photometry_measurements", "mosaic_qa", "mosaics", "mosaic_plans", "new_source_lists",
    "ese_candidate_lists", "variability", "lightcurves", "photometry", "images",
    "calibrated_ms", "caltables", "product_files", "product_inputs",
)  # fmt: skip


def downgrade() -> None:
    for table in NEW_TABLES:
        op.drop_table(table)
    columns = ", ".join(f"m.{c}" for c in MS_COLUMNS)
    op.execute(
        "CREATE TABLE _ms_rev2 AS SELECT p.id, p.path, p.group_id, p.status, p.created, "
        f"p.config_digest, p.qa, p.sidecar, {columns} "
        "FROM products p JOIN measurement_sets m ON m.id = p.id"
    )
    op.drop_table("measurement_sets")
    op.drop_table("products")
    op.create_table(
        "measurement_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("path", nullable=False),
        _str("group_id", 32),
        _str("status", 16, nullable=False),
        _time("created"),
        _str("config_digest", 64),
        sa.Column("qa", sa.JSON(), nullable=True),
        _str("sidecar", nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=True),
        _int("n_antennas"),
        _int("n_channels"),
        _float("freq_min_hz"),
        _float("freq_max_hz"),
        _time("time_start"),
        _time("time_end"),
        _float("ra_deg"),
        _float("dec_deg"),
        _float("flagged_fraction"),
        _float("zero_fraction"),
        _group_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_measurement_sets_group_id", "measurement_sets", ["group_id"])
    op.create_index("ix_measurement_sets_status", "measurement_sets", ["status"])
    every = f"id, path, group_id, status, created, config_digest, qa, sidecar, {', '.join(MS_COLUMNS)}"
    op.execute(f"INSERT INTO measurement_sets ({every}) SELECT {every} FROM _ms_rev2")
    op.drop_table("_ms_rev2")
    _reset_sequence("measurement_sets")
