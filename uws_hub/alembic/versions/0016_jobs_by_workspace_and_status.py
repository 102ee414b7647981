"""a workspace's unfinished jobs found by an index

Every end of a job asks whether its workspace has another unfinished job (the
workspace goes ``idle`` when it has none). Through the index of the jobs'
workspace alone, that read the workspace's finished jobs one by one before an
unfinished one: a workspace's history made each end slower, and the ends of a
burst of batch jobs in one workspace cost the hub's loop more and more. The
jobs are now indexed by workspace and status.

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


def downgrade():
    op.drop_index("ix_uws_jobs_workspace_id_status", table_name="uws_jobs")
