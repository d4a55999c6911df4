"""a schedule records its drills apart from its backup runs

Revision ID: 0014_schedule_drill_outcome
Revises: 0013_perf_indexes
Create Date: 2026-12-08 03:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0014_schedule_drill_outcome"
down_revision = "0013_perf_indexes"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # A skipped drill wrote over last_status/last_error, hiding the backup run's outcome.
    with op.batch_alter_table("backup_schedules") as table:
        table.add_column(sa.Column("last_drill_at", Timestamp, nullable=True))
        table.add_column(sa.Column("last_drill_backup_id", sa.String(length=36), nullable=True))
        table.add_column(sa.Column("last_drill_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_schedules") as table:
        table.drop_column("last_drill_error")
        table.drop_column("last_drill_backup_id")
        table.drop_column("last_drill_at")
