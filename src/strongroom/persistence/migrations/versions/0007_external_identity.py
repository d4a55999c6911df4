"""external instances record the identity of the database they register

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 12:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# The row every external registration locks while it checks (services.instances): made
# here, because two first registrations creating it at once deadlock on MariaDB.
REGISTRATION_LOCK = {"project_id": "", "resource": "external_registrations", "in_use": 0}


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("external_identity", sa.String(64), nullable=True))
        batch.create_index("ix_instances_external_identity", ["external_identity"])
    usages = sa.table(
        "quota_usages",
        sa.column("project_id", sa.String),
        sa.column("resource", sa.String),
        sa.column("in_use", sa.Integer),
    )
    op.bulk_insert(usages, [REGISTRATION_LOCK])


def downgrade() -> None:
    op.execute(
        "delete from quota_usages where project_id = '' and resource = 'external_registrations'"
    )
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_external_identity")
        batch.drop_column("external_identity")
