"""the jobs indexed for the ends of jobs and the fair queue

Every end of a job asks whether its workspace has another unfinished job (the
workspace goes ``idle`` when it has none). Through the index of the jobs'
workspace alone, that read the workspace's finished jobs one by one before an
unfinished one: a workspace's history made each end slower, and the ends of a
burst of batch jobs in one workspace cost the hub's loop more and more. The
jobs are now indexed by workspace and status.

The fair queue, at each of its steps (one at every end of a job in a burst),
counts the slots held: the unfinished interactive jobs and the batch jobs
handed to a runner. Through the index of the status alone, that read every
waiting batch job too. The jobs are now also indexed by status, kind and when
the queue handed them over: the slots held are read, not the queue.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_uws_jobs_workspace_id_status", "uws_jobs", ["workspace_id", "status"])
    op.create_index("ix_uws_jobs_status_interactive_submitted_at", "uws_jobs", ["status", "interactive", "submitted_at"])


def downgrade():
    op.drop_index("ix_uws_jobs_status_interactive_submitted_at", table_name="uws_jobs")
    op.drop_index("ix_uws_jobs_workspace_id_status", table_name="uws_jobs")
