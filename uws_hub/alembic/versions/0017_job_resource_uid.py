"""the uid a job's resource runs as, recorded with its id

SLURM gives a job id again once it has forgotten the job (slurmctld restarted
without its state, ``FirstJobId``, ``MaxJobId`` wrapped), to any account's next
job. The hub followed such a job as its own: taken for running (its node and
port the server's), its end the hub job's outcome. ``resource_uid`` is the uid
the job was submitted as; a SLURM job of another uid under the stored id is not
the hub's. A column, not the account's uid looked up again: an account made
again with another uid (or a freed uid given to a new account) must not make the
hub disown its own running job, nor adopt another's. Empty for the jobs from
before (followed by id alone, as they were).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("resource_uid", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.drop_column("resource_uid")
