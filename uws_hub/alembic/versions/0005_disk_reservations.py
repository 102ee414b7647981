"""disk space reserved by writes in progress

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "uws_disk_reservations",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uws_disk_reservations_user_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reserved_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_uws_disk_reservations"),
    )


def downgrade():
    op.drop_table("uws_disk_reservations")
