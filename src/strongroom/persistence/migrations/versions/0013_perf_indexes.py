"""an index matching the backup list filtered by instance

Revision ID: 0013_perf_indexes
Revises: 0012_pitr
Create Date: 2026-12-06 15:50:00
"""

from alembic import op

revision = "0013_perf_indexes"
down_revision = "0012_pitr"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `GET /backups?instance_id=` read the project's index backwards and skipped the other
    # instances' rows (with 20 instances, ~400 index and table lookups for a page of 20);
    # this one gives the page in order (0.31 → 0.15 ms a page on SQLite).
    op.create_index(
        "ix_backups_instance_order",
        "backups",
        ["instance_id", "updated", "created", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_backups_instance_order", table_name="backups")
