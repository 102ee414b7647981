"""batch jobs: parameters, exit status, log file, fair-queue slot

Batch jobs (job types with ``interactive: false``) run a command to an exit
status. A job gets its validated ``parameters``, how its command ended
(``exit_code`` or ``exit_signal``), where its output goes (``log_path``),
and when the fair queue handed it to its runner (``submitted_at``: from then
on it holds a slot of its owner's concurrent-job quota). Existing jobs are
interactive: they get no parameters and keep everything else.

The unique index on unfinished jobs per workspace already covers interactive
jobs only, so any number of batch jobs may run beside a workspace's server.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("submitted_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("parameters", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("exit_signal", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("log_path", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        for column in ("log_path", "exit_signal", "exit_code", "parameters", "submitted_at"):
            batch.drop_column(column)
