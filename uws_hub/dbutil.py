"""Schema management for uws-hub's tables (alembic, version table ``uws_alembic_version``).

JupyterHub manages its own tables with its own alembic history; these
functions do the same for ours, with the same policy: a new database is
created at the newest revision, an older one is upgraded only when asked
(``uws-hub upgrade-db`` or ``JupyterHub.upgrade_db = True``).
"""

from __future__ import annotations

import logging
import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine

from .authenticators.local import metadata as accounts_metadata
from .orm import VERSION_TABLE, Base
from .protocols.hubmap.store import metadata as hubmap_metadata

#: every table uws-hub's migrations manage
TARGET_METADATA = [Base.metadata, accounts_metadata, hubmap_metadata]
_OUR_TABLES = {name for md in TARGET_METADATA for name in md.tables}


def include_name(name, type_, parent_names) -> bool:
    """alembic filter: only uws-hub's tables (the database also holds JupyterHub's)."""
    return type_ != "table" or name in _OUR_TABLES


_HERE = os.path.dirname(os.path.abspath(__file__))


class SchemaMismatch(RuntimeError):
    """The database's uws-hub tables are older (or newer) than this code."""


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config(os.path.join(_HERE, "alembic.ini"))
    cfg.set_main_option("script_location", os.path.join(_HERE, "alembic"))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run uws-hub's migrations up to ``revision`` on ``engine``.

    On SQLite, with foreign keys off: SQLite alters a table by recreating it, and
    dropping the old one with foreign keys on (as JupyterHub's engine has them, which
    ``JupyterHub.upgrade_db`` upgrades with) first deletes its rows, and with them every
    row referring to them (``ON DELETE CASCADE``): recreating the workspaces' table
    deleted every job and share. The keys are checked before the upgrade commits.
    """
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        enforced = conn.dialect.name == "sqlite" and _sqlite_foreign_keys(conn, False)
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if conn.dialect.name == "sqlite":
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"The upgrade would break foreign keys: {broken[:10]}")
        finally:
            if enforced:
                _sqlite_foreign_keys(conn, True)


def _sqlite_foreign_keys(conn: Connection, on: bool) -> bool:
    """Turn a SQLite connection's foreign keys on or off (out of a transaction, where
    SQLite ignores it); returns whether they were on."""
    was_on = bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
    conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    conn.commit()
    if bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar()) != on:
        raise RuntimeError("Could not switch SQLite's foreign keys: is a transaction open?")
    conn.commit()
    return was_on


def prepare(engine: Engine, *, allow_upgrade: bool, log: logging.Logger) -> None:
    """Make uws-hub's tables current, or explain why the hub cannot start.

    - no uws-hub tables yet: create them by running every migration, so a new
      database and an upgraded one always have the same schema;
    - at the newest revision: nothing to do;
    - older: upgrade if ``allow_upgrade``, else raise :class:`SchemaMismatch`
      naming the command that fixes it.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None:
        if inspect(engine).has_table("uws_workspaces"):
            raise SchemaMismatch(
                "Found uws-hub tables without the uws_alembic_version table;"
                " this database was not created by uws-hub's migrations."
            )
        log.info("Creating uws-hub tables (revision %s)", head)
        upgrade(engine)
        return
    if allow_upgrade:
        log.info("Upgrading uws-hub tables from revision %s to %s", current, head)
        upgrade(engine)
        return
    raise SchemaMismatch(
        f"The uws-hub tables are at revision {current}, this uws-hub needs {head}."
        " Back up the database, then run `uws-hub upgrade-db`."
    )


def sqlite_wal(engine: Engine) -> None:
    """Switch a SQLite database to write-ahead logging, synchronous=NORMAL.

    WAL is a property of the database file (it persists); ``synchronous`` is
    per connection, so it is set on every new one.
    """

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before the listener get the pragma too
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")


def drop_sqlite_ping(engine: Engine) -> None:
    """Remove JupyterHub's check of every connection before its use, on SQLite.

    JupyterHub runs ``SELECT 1`` in a transaction of its own each time a
    session takes a connection, that is before every transaction of the hub:
    on PostgreSQL it finds connections the server has closed. A SQLite file is
    opened by the hub itself and never goes stale, so there the check is only
    a second transaction for each of the hub's (a third of a small commit's CPU
    time, on the event loop).
    """
    for listener in list(engine.dispatch.engine_connect):
        if getattr(listener, "__module__", None) == "jupyterhub.orm" and "ping_connection" in listener.__qualname__:
            event.remove(engine, "engine_connect", listener)


def upgrade_url(db_url: str, log: logging.Logger, **engine_kwargs) -> None:
    """Upgrade uws-hub's tables in the database at ``db_url`` (for ``upgrade-db``)."""
    engine = create_engine(db_url, **engine_kwargs)
    try:
        prepare(engine, allow_upgrade=True, log=log)
    finally:
        engine.dispose()
