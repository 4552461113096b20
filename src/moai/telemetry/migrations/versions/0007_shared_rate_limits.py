"""Rate limits seen by one replica hold back every replica: a 429's ``Retry-After`` is kept on its call row.

- calls.retry_after_s: how long the upstream asked to be left alone (NULL: it did not say);
- calls (ended_at) WHERE status = 'rate_limited': each process reads the last minute's 429s at each refresh of
  its live statistics, without walking any other call.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RATE_LIMITED = sa.text("status = 'rate_limited'")


def upgrade() -> None:
    op.add_column("calls", sa.Column("retry_after_s", sa.Float, nullable=True))  # no copy of the table, even in SQLite
    op.create_index("ix_calls_rate_limited", "calls", ["ended_at"],
                    sqlite_where=RATE_LIMITED, postgresql_where=RATE_LIMITED)


def downgrade() -> None:
    op.drop_index("ix_calls_rate_limited", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("retry_after_s")
