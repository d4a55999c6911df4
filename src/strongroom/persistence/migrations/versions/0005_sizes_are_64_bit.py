"""byte and size columns are 64-bit (databases over 2 GiB)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 11:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (table, column, nullable)
BYTE_COLUMNS = [
    ("backups", "progress_done", False),
    ("backups", "progress_expected", True),
    ("backups", "stored_bytes", True),
    ("instances", "volume_size", True),
]


def _alter(integer: type[sa.types.TypeEngine], size_gb: sa.types.TypeEngine) -> None:
    mysql_family = op.get_bind().dialect.name in ("mysql", "mariadb")
    # Batch mode: SQLite rebuilds the table; the others alter the column in place.
    for table in ("backups", "instances"):
        with op.batch_alter_table(table) as batch:
            for name, column, nullable in BYTE_COLUMNS:
                if name == table:
                    batch.alter_column(column, type_=integer(), existing_nullable=nullable)
            if table == "backups" and mysql_family:
                batch.alter_column("size_gb", type_=size_gb, existing_nullable=True)


def upgrade() -> None:
    _alter(sa.BigInteger, mysql.DOUBLE())


def downgrade() -> None:
    _alter(sa.Integer, sa.Float())
