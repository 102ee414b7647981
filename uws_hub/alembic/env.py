"""alembic environment for uws-hub's tables (version table ``uws_alembic_version``).

Called by :mod:`uws_hub.dbutil`, which passes an open connection in
``config.attributes["connection"]``; from the command line, the URL comes from
``-x db_url=...`` or ``sqlalchemy.url``.
"""

from alembic import context
from sqlalchemy import engine_from_config, pool

from uws_hub.dbutil import TARGET_METADATA, include_name
from uws_hub.orm import VERSION_TABLE

config = context.config


def _configure(connection):
    context.configure(
        connection=connection,
        target_metadata=TARGET_METADATA,
        include_name=include_name,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("db_url")
    if url:
        config.set_main_option("sqlalchemy.url", url)
    engine = engine_from_config(
        config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        _configure(connection)


run_migrations_online()
