"""The fraction of a calibrated Measurement Set newly flagged as RFI, as a column.

``calibrated_ms.rfi_flagged_fraction`` (apply_calibration's sidecar key of the
same name: what target RFI flagging added to the flags the data came with),
so that ``contimg status`` and ``contimg products night`` show it per night
and per group. Rows registered before this revision are filled from the
sidecar QA the database already holds (``products.qa``); ``contimg db sync``
would refresh them from the sidecars anyway (a new revision changes every
sidecar's registration digest). Downgrading drops the column.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE, COLUMN = "calibrated_ms", "rfi_flagged_fraction"

#: The QA key as a number (NULL when absent or not a number), per back end.
_QA_NUMBER = {
    "sqlite": f"CASE WHEN json_type(p.qa, '$.{COLUMN}') IN ('real', 'integer') "
    f"THEN json_extract(p.qa, '$.{COLUMN}') END",
    "postgresql": f"CASE WHEN json_typeof(p.qa -> '{COLUMN}') = 'number' "
    f"THEN (p.qa ->> '{COLUMN}')::double precision END",
}


def upgrade() -> None:
    op.add_column(TABLE, sa.Column(COLUMN, sa.Float(), nullable=True))
    number = _QA_NUMBER.get(op.get_bind().dialect.name)
    if number is not None:
        op.execute(
            f"UPDATE {TABLE} SET {COLUMN} = "
            f"(SELECT {number} FROM products p WHERE p.id = {TABLE}.id)"
        )


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column(COLUMN)
