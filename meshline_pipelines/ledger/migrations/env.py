"""Alembic environment: runs on the connection the ledger passes in, or on `sqlalchemy.url`."""

import sqlalchemy as sa
from alembic import context

from meshline_pipelines.ledger.tables import metadata

config = context.config

# Dagster's PostgreSQL storage keeps its own Alembic revisions in `alembic_version`; the ledger
# keeps its own table, so both can share one database.
VERSION_TABLE = "meshline_alembic_version"


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as new_connection:
        _run_on(new_connection)
    engine.dispose()


def _run_on(connection: sa.Connection) -> None:
    # SQLite cannot alter columns in place, so changes on it are replayed as table copies.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
