"""who launched a job: the user whose system account it runs as

A job an editor launches in a shared workspace runs as the editor's own
account, not the owner's. ``launcher_id`` is that user; empty for the jobs
from before (they ran as the workspace's owner, and still count as the
owner's), and emptied if the user is deleted.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("launcher_id", sa.Integer(), nullable=True))
        batch.create_index("ix_uws_jobs_launcher_id", ["launcher_id"])
        batch.create_foreign_key("fk_uws_jobs_launcher_id_users", "users", ["launcher_id"], ["id"], ondelete="SET NULL")


def downgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.drop_constraint("fk_uws_jobs_launcher_id_users", type_="foreignkey")
        batch.drop_index("ix_uws_jobs_launcher_id")
        batch.drop_column("launcher_id")
