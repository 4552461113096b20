"""Indexes for the reads that run per request or every few seconds, so they stay fast at millions of rows.

- calls (model, ended_at): each model's latest calls, read back by every process every ``stats_refresh_s``;
  with an index on model alone the database sorted all of a model's calls each time.
- requests (api_key, created_at): a budgeted key's spend this day or month, read on each of its requests; with
  an index on the key alone every request the key ever made was visited.
- requests (session, api_key, created_at): a session's pinned model, read on each request that names a session;
  beside the index above the planner would otherwise walk the key's requests newest first.
Each replaces the single-column index it starts with.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_calls_model_ended_at", "calls", ["model", "ended_at"])
    op.drop_index("ix_calls_model", "calls")
    op.create_index("ix_requests_api_key_created_at", "requests", ["api_key", "created_at"])
    op.drop_index("ix_requests_api_key", "requests")
    op.create_index("ix_requests_session_api_key_created_at", "requests", ["session", "api_key", "created_at"])
    op.drop_index("ix_requests_session", "requests")


def downgrade() -> None:
    op.create_index("ix_requests_session", "requests", ["session"])
    op.drop_index("ix_requests_session_api_key_created_at", "requests")
    op.create_index("ix_requests_api_key", "requests", ["api_key"])
    op.drop_index("ix_requests_api_key_created_at", "requests")
    op.create_index("ix_calls_model", "calls", ["model"])
    op.drop_index("ix_calls_model_ended_at", "calls")
