"""Alembic environment for the registry: runs on the connection the registry hands over.

`shipyard.registry.database.Database.migrate` opens a write transaction (which already holds
the registry's write lock, so two processes opening a fresh registry never race to create
tables) and passes its connection in `config.attributes["connection"]`. No alembic.ini and no
logging configuration: importing shipyard must not touch the logging tree.
"""

from __future__ import annotations

from alembic import context

from shipyard.registry.tables import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things in place; batch mode rebuilds tables when a later
    # migration needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
