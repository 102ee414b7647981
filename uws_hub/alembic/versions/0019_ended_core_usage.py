"""the core-hours of users' ended jobs, kept as they end

Every start of a job under a core-hours quota summed the run time of every job
its owner ran in the period, one row at a time: a burst of N jobs read N² rows,
and a long period's history made every start slower. The run time of the ended
jobs is now kept per user and period (``uws_ended_core_usage``), added to as
each job ends; a check reads it and the owner's running jobs. The table starts
empty: each user's row is made from their jobs at the first end of one of them
(until then a check sums the jobs, as before).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "uws_ended_core_usage",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uws_ended_core_usage_user_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("core_microseconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_uws_ended_core_usage"),
    )


def downgrade():
    op.drop_table("uws_ended_core_usage")
