"""an index matching the backup list's filter and order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:30:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_backups_project_order",
        "backups",
        ["project_id", "updated", "created", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_backups_project_order", table_name="backups")
