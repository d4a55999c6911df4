"""microsecond timestamps on MySQL and MariaDB

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 12:15:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "backups": ["created", "updated", "progress_started", "progress_updated"],
    "instances": ["created", "updated"],
    "tokens": ["created", "revoked"],
    "jobs": ["created", "updated", "heartbeat"],
    "workers": ["last_seen"],
}
NOT_NULL = {
    ("backups", "created"),
    ("backups", "updated"),
    ("instances", "created"),
    ("instances", "updated"),
    ("tokens", "created"),
    ("jobs", "created"),
    ("jobs", "updated"),
    ("workers", "last_seen"),
}


def _alter(kind: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return  # SQLite and PostgreSQL already keep microseconds
    for table, columns in COLUMNS.items():
        for column in columns:
            op.alter_column(
                table, column, type_=kind, existing_nullable=(table, column) not in NOT_NULL
            )


def upgrade() -> None:
    _alter(mysql.DATETIME(fsp=6))


def downgrade() -> None:
    _alter(sa.DateTime())
