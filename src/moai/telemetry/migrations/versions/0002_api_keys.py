"""Gateway keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("allowed_mixes", sa.JSON),
        sa.Column("budget_day_usd", sa.Float),
        sa.Column("budget_month_usd", sa.Float),
        sa.Column("rpm", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
