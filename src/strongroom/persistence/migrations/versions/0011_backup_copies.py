"""copies of backups in a second store; a schedule's copy target and its retention there

Revision ID: 0011_backup_copies
Revises: 0010
Create Date: 2026-12-06 15:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0011_backup_copies"
down_revision = "0010"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "backup_copies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("backup_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("store_name", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("location_ref", sa.Text(), nullable=True),
        sa.Column("verified_at", Timestamp, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # One copy of a backup per store: a restore falls back to it by store.
        sa.UniqueConstraint("backup_id", "store_name", name="uq_backup_copies_backup_store"),
    )
    op.create_index("ix_backup_copies_backup_id", "backup_copies", ["backup_id"])
    with op.batch_alter_table("backup_schedules") as batch:
        batch.add_column(sa.Column("copy_to", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("copy_retention", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_schedules") as batch:
        batch.drop_column("copy_retention")
        batch.drop_column("copy_to")
    op.drop_index("ix_backup_copies_backup_id", table_name="backup_copies")
    op.drop_table("backup_copies")
