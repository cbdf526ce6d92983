"""The foundation's schema: observation groups, raw files, Measurement Sets.

Databases created before migrations existed have exactly these tables and no
``alembic_version``; ``contimg db upgrade`` recognises them as this revision.

Revision ID: 0001
Revises:
Create Date: 2025-06-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "observation_groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("n_subbands", sa.Integer(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_observation_groups_start_time", "observation_groups", ["start_time"])
    op.create_table(
        "measurement_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=True),
        sa.Column("config_digest", sa.String(length=64), nullable=True),
        sa.Column("qa", sa.JSON(), nullable=True),
        sa.Column("sidecar", sa.String(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=True),
        sa.Column("n_antennas", sa.Integer(), nullable=True),
        sa.Column("n_channels", sa.Integer(), nullable=True),
        sa.Column("freq_min_hz", sa.Float(), nullable=True),
        sa.Column("freq_max_hz", sa.Float(), nullable=True),
        sa.Column("time_start", sa.DateTime(), nullable=True),
        sa.Column("time_end", sa.DateTime(), nullable=True),
        sa.Column("ra_deg", sa.Float(), nullable=True),
        sa.Column("dec_deg", sa.Float(), nullable=True),
        sa.Column("flagged_fraction", sa.Float(), nullable=True),
        sa.Column("zero_fraction", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["group_id"], ["observation_groups.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_measurement_sets_group_id", "measurement_sets", ["group_id"])
    op.create_index("ix_measurement_sets_status", "measurement_sets", ["status"])
    op.create_table(
        "raw_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=True),
        sa.Column("subband", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("mtime", sa.DateTime(), nullable=True),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["observation_groups.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_raw_files_group_id", "raw_files", ["group_id"])


def downgrade() -> None:
    op.drop_table("raw_files")
    op.drop_table("measurement_sets")
    op.drop_table("observation_groups")
