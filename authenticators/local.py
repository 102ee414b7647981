"""Local accounts: user names and bcrypt password hashes in the hub's database.

The default authenticator of uws-hub (entry point ``uws-local``). Accounts
live in the ``uws_local_accounts`` table, created by uws-hub's migrations;
only an account holder can log in, so no separate allow list is needed.
Sign-up is off: the first admin is created at first start (password from
``$UWS_ADMIN_PASSWORD`` or generated and printed once), and admins create the
other accounts.

This module knows nothing of the hub beyond its database URL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import datetime, timezone

import bcrypt
from jupyterhub.auth import Authenticator
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from traitlets import Bool, Integer as IntegerTrait, Unicode, default

metadata = MetaData()

#: the accounts table (created by uws-hub's alembic migration 0002)
accounts_table = Table(
    "uws_local_accounts",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class WorkspaceLocalAuthenticator(Authenticator):
    """Log in with a user name and a password kept (hashed) in the hub's database."""

    db_url = Unicode(
        config=True,
        help="""Database holding the accounts table; defaults to the hub's ``JupyterHub.db_url``.""",
    )

    @default("db_url")
    def _default_db_url(self):
        return getattr(self.parent, "db_url", "sqlite:///jupyterhub.sqlite")

    admin_password_env = Unicode(
        "UWS_ADMIN_PASSWORD",
        config=True,
        help="""Environment variable holding the first admin's password.

        At the first start, each name in ``Authenticator.admin_users`` without an
        account gets one, with this password, or with a generated one printed
        once on the hub's standard output.
        """,
    )

    bcrypt_rounds = IntegerTrait(
        12,
        config=True,
        help="""bcrypt cost factor for new password hashes (each +1 doubles the work).""",
    )

    min_password_length = IntegerTrait(
        8,
        config=True,
        help="""Shortest password accepted when an account is created or its password set.""",
    )

    @default("allow_all")
    def _default_allow_all(self):
        # an account is the permission to log in: only account holders authenticate
        return True

    allow_existing_users = Bool(
        False,
        config=True,
        help="""Unused by local accounts (holding an account is what allows login).""",
    )

    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_pre_ping=True)
        return self._engine

    # ---------------------------------------------------------------- hashing
    def _hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.bcrypt_rounds)).decode("ascii")

    @staticmethod
    def _matches(password: str, password_hash: str) -> bool:
        return bcrypt.checkpw(password.encode("utf-8"), password_hash.encode("ascii"))

    # ---------------------------------------------------------------- accounts
    def create_account(self, username: str, password: str) -> None:
        """Create an account (blocking: bcrypt and the database)."""
        username = self.normalize_username(username)
        if len(password) < self.min_password_length:
            raise ValueError(f"Passwords need at least {self.min_password_length} characters")
        now = _utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                insert(accounts_table).values(
                    username=username,
                    password_hash=self._hash(password),
                    disabled=False,
                    failed_logins=0,
                    created_at=now,
                    updated_at=now,
                )
            )

    def has_account(self, username: str) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(select(accounts_table.c.username).where(accounts_table.c.username == username)) is not None

    def bootstrap_admins(self) -> list[tuple[str, str | None]]:
        """Create accounts for admins that have none; returns (name, generated password or None)."""
        created = []
        for name in sorted(self.admin_users):
            if self.has_account(name):
                continue
            password = os.environ.get(self.admin_password_env)
            generated = None
            if not password:
                password = generated = secrets.token_urlsafe(12)
            self.create_account(name, password)
            created.append((name, generated))
        return created

    # ---------------------------------------------------------------- login
    def _check(self, username: str, password: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts_table).where(accounts_table.c.username == username)).first()
        # hash anyway when there is no account, so timing does not reveal names
        ok = self._matches(password, row.password_hash if row else self._dummy_hash)
        if row is None or row.disabled:
            return False
        if ok:
            with self.engine.begin() as conn:
                conn.execute(
                    update(accounts_table)
                    .where(accounts_table.c.username == username)
                    .values(failed_logins=0, updated_at=_utcnow())
                )
        return ok

    @property
    def _dummy_hash(self) -> str:
        if not hasattr(self, "_dummy"):
            self._dummy = self._hash(secrets.token_hex(8))
        return self._dummy

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", "") or "")
        password = data.get("password", "") or ""
        if not username or not password:
            return None
        if await asyncio.to_thread(self._check, username, password):
            return username
        self.log.warning("Failed login for %s", username)
        return None
