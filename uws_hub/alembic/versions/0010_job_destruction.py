"""jobs' run ids, destruction times and archiving (the UWS interface)

A batch job may carry a label its client gave it (``run_id``, UWS's runId),
a time at which the hub destroys it (``destroy_at``: stopped if it still
runs, its results and log deleted) and when that happened (``archived_at``:
its record is kept, archived). Existing jobs get none of them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("run_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("destroy_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_uws_jobs_destroy_at", ["destroy_at"])


def downgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.drop_index("ix_uws_jobs_destroy_at")
        for column in ("archived_at", "destroy_at", "run_id"):
            batch.drop_column(column)
