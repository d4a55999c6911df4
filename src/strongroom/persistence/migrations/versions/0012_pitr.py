"""point-in-time restore: archiving policies and archived log batches

Revision ID: 0012_pitr
Revises: 0011_backup_copies
Create Date: 2026-12-06 16:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012_pitr"
down_revision = "0011_backup_copies"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "pitr_policies",
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("store_name", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=255), nullable=False),
        sa.Column("next_start", sa.BigInteger(), nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("instance_id"),
    )
    op.create_table(
        "wal_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("store_name", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=255), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("stop", sa.BigInteger(), nullable=False),
        sa.Column("archived_from", Timestamp, nullable=False),
        sa.Column("archived_through", Timestamp, nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_wal_batches_instance_start", "wal_batches", ["instance_id", "start"])


def downgrade() -> None:
    op.drop_index("ix_wal_batches_instance_start", table_name="wal_batches")
    op.drop_table("wal_batches")
    op.drop_table("pitr_policies")
