"""events, job outcome and attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("uws_jobs") as batch:
        batch.alter_column("attempts", server_default=None)
    op.create_table(
        "uws_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "owner_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uws_events_owner_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("workspace_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("previous", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uws_events"),
    )
    op.create_index("ix_uws_events_owner_id", "uws_events", ["owner_id"])
    op.create_index("ix_uws_events_workspace_id", "uws_events", ["workspace_id"])
    op.create_index("ix_uws_events_job_id", "uws_events", ["job_id"])


def downgrade():
    op.drop_table("uws_events")
    with op.batch_alter_table("uws_jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("outcome")
