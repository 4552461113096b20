"""Settings every replica sharing the database shares: the secret that keys session digests.

- settings (name, value): one row per setting;
- settings 'session_secret': 32 random bytes (hex), made here once. Migrations run one at a time (the migration
  lock), so replicas migrating a fresh database at once all find the same secret. Session names are stored as
  HMAC-SHA256 digests under it (``store.session_digest``): an unsalted digest let a list of candidate names (the
  OpenAI ``user`` field is often an email) be tested against the requests table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    settings = op.create_table(
        "settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(settings, [{"name": "session_secret", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("settings")
