"""Alembic environment: uses the connection handed over by ``moai.telemetry.migrations.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from moai.telemetry.records import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # invoked by the alembic CLI: connect from the URL
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
