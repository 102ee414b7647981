"""the jobs indexed by owner, kind and status

Every batch launch counts its workspace owner's unfinished batch jobs
(``UWSHub.max_unfinished_batch_jobs_per_user``). Through the index of the jobs'
owner alone, that read every job the owner ever ran, one row at a time: a burst
of launches cost each more than the one before, and an account's history made
every launch slower. The jobs are now also indexed by owner, kind and status:
the count reads the owner's unfinished batch jobs in the index, not their rows.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_uws_jobs_owner_id_interactive_status", "uws_jobs", ["owner_id", "interactive", "status"])


def downgrade():
    op.drop_index("ix_uws_jobs_owner_id_interactive_status", table_name="uws_jobs")
