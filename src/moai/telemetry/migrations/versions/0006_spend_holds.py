"""Spend held for the requests of budgeted keys still running, shared by every replica (budgets under load).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend_holds",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("minute", sa.Integer, primary_key=True),
        sa.Column("usd", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spend_holds")
