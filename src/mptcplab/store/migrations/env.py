"""Alembic environment: always run programmatically by mptcplab.store.migrate on a live connection."""
from __future__ import annotations

from alembic import context

from mptcplab.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use (authoring a new revision): a URL from -x url=...
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///scratch.db")
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
if "connection" not in context.config.attributes:
    connection.commit()
    connection.close()
