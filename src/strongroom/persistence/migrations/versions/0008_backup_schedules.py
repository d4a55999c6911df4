"""backup schedules; a backup's schedule, verification and restore drill

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "backup_schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("cron", sa.String(length=255), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("full_every", sa.Integer(), nullable=False),
        sa.Column("storage_driver", sa.String(length=64), nullable=True),
        sa.Column("swift_container", sa.String(length=255), nullable=True),
        sa.Column("retention", sa.JSON(), nullable=False),
        sa.Column("verify", sa.Boolean(), nullable=False),
        sa.Column("drill_cron", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.String(length=255), nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
        sa.Column("next_run_at", Timestamp, nullable=False),
        sa.Column("last_run_at", Timestamp, nullable=True),
        sa.Column("last_backup_id", sa.String(length=36), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pending_backup_id", sa.String(length=36), nullable=True),
        sa.Column("next_drill_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in (
        "project_id",
        "instance_id",
        "next_run_at",
        "pending_backup_id",
        "next_drill_at",
    ):
        op.create_index(f"ix_backup_schedules_{column}", "backup_schedules", [column])
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("verify_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("verified_at", Timestamp, nullable=True))
        batch_op.add_column(sa.Column("verify_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("drill_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("drilled_at", Timestamp, nullable=True))
        batch_op.add_column(sa.Column("drill_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("drill_report", sa.JSON(), nullable=True))
        batch_op.create_index("ix_backups_schedule_id", ["schedule_id"])


def downgrade() -> None:
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_index("ix_backups_schedule_id")
        for column in ("drill_report", "drill_error", "drilled_at", "drill_status"):
            batch_op.drop_column(column)
        batch_op.drop_column("verify_error")
        batch_op.drop_column("verified_at")
        batch_op.drop_column("verify_status")
        batch_op.drop_column("schedule_id")
    op.drop_table("backup_schedules")
