"""Local accounts: user names and bcrypt password hashes in the hub's database.

The default authenticator of uws-hub (entry point ``uws-local``). Accounts
live in the ``uws_local_accounts`` table, created by uws-hub's migrations;
only an account holder can log in, so no separate allow list is needed.

- The first admin is created at first start (password from
  ``$UWS_ADMIN_PASSWORD`` or generated and printed once).
- Admins create, disable and enable accounts and set passwords (uws-hub's
  ``/hub/api/accounts`` API and its admin page call the methods below).
- Sign-up is off by default (:attr:`WorkspaceLocalAuthenticator.allow_signup`);
  when on, new accounts wait for an admin to enable them unless
  :attr:`~WorkspaceLocalAuthenticator.signup_requires_approval` is off.
- Sign-up refuses every name already in use (an account, a hub user without
  one, an admin or blocked name) with one and the same answer, so that it
  neither takes over a user nor tells which names exist.
- Repeated failures lock an account for a while
  (:attr:`~WorkspaceLocalAuthenticator.max_failed_logins`,
  :attr:`~WorkspaceLocalAuthenticator.lockout_seconds`); see
  :meth:`WorkspaceLocalAuthenticator.check_login` for how parallel logins are
  counted. The login form says "Invalid username or password" for a wrong
  password, an unknown name, a locked and a disabled account alike; the hub's
  log says which it was.

This module knows nothing of the hub beyond its database URL.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

import bcrypt
from jinja2 import Template
from jupyterhub.handlers.base import BaseHandler
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    create_engine,
    delete,
    false,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from tornado import web
from traitlets import Bool, Unicode, default
from traitlets import Integer as IntegerTrait

from ..errors import TooManyRequests
from ..filethreads import FileThreads, LineFull
from .names import PrintableNamesMixin, look_alike

T = TypeVar("T")

#: what a login over the password checks' line is told (429), and a sign-up or a new password
TOO_MANY_LOGINS = "Too many login attempts, try again shortly"
TOO_MANY_PASSWORDS = "Too many passwords are being checked, try again shortly"

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
    return datetime.now(UTC).replace(tzinfo=None)


class AccountError(ValueError):
    """A refused account change (the message says why, for the admin)."""


class AccountExists(AccountError):
    pass


class NoSuchAccount(AccountError):
    pass


#: sign-up's one answer for every name in use, whatever uses it
NAME_NOT_AVAILABLE = "This user name is not available: choose another."


class NameNotAvailable(AccountError):
    """Sign-up refused a name in use; the message never says what uses it."""

    def __init__(self):
        super().__init__(NAME_NOT_AVAILABLE)


class LoginCheck(Enum):
    """What a password check found (only ``OK`` logs in)."""

    OK = "ok"
    WRONG_PASSWORD = "wrong password"
    NO_ACCOUNT = "no such account"
    DISABLED = "account disabled"
    LOCKED = "account locked"


@dataclass(frozen=True)
class Account:
    """One row of the accounts table, without its password hash."""

    username: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or _utcnow())

    def to_model(self) -> dict[str, Any]:
        """JSON-able, as uws-hub's accounts API returns it (UTC, ISO 8601 with a Z, as JupyterHub)."""
        iso = lambda t: t.isoformat() + "Z" if t else None  # noqa: E731
        return {
            "username": self.username,
            "disabled": self.disabled,
            "locked": self.locked(),
            "locked_until": iso(self.locked_until) if self.locked() else None,
            "failed_logins": self.failed_logins,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class WorkspaceLocalAuthenticator(PrintableNamesMixin):
    """Log in with a user name and a password kept (hashed) in the hub's database."""

    db_url = Unicode(
        "",
        config=True,
        help="""Database holding the accounts table. Empty (the default): the hub's own
        database, ``JupyterHub.db_url``.""",
    )

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

    max_failed_logins = IntegerTrait(
        5,
        config=True,
        help="""Failed logins in a row after which an account is locked (0: never lock).

        A login counts as failed from the moment its password check starts
        until the password proves right, so logins sent in parallel cannot
        check more than this many passwords: the one that takes the last
        place locks the account at once, and later ones are refused without
        their password being checked. A right password resets the count (and
        ends a lock that started while it was being checked); one that
        arrives while the account is locked is refused like a wrong one and
        changes nothing. An admin setting the password or unlocking the
        account also resets the count; when a lock ends by itself, the next
        login starts a new count. While locked, even the right password gets
        the same "Invalid username or password" as a wrong one; the hub's log
        says the account is locked.

        .. versionadded:: 0.2
        """,
    )

    lockout_seconds = IntegerTrait(
        600,
        config=True,
        help="""How long an account stays locked after :attr:`max_failed_logins` failures, in seconds.

        Default: 10 minutes. An admin can unlock it earlier (``PATCH
        /hub/api/accounts/<name>`` with ``{"unlock": true}``, or the Local
        accounts admin page).

        .. versionadded:: 0.2
        """,
    )

    password_check_threads = IntegerTrait(
        2,
        config=True,
        help="""Threads that hash and check passwords: logins, sign-ups, new accounts and passwords.

        bcrypt holds a thread for a good fraction of a second per password (see
        ``bcrypt_rounds``). In the event loop's default pool, which the hub's own
        work shares (its file work, a user's account looked up), an anonymous flood
        of logins took every thread and the hub's work waited behind it: password
        checks have a pool of their own, of this many threads, with a line of at
        most ``max_waiting_password_checks`` behind them.

        .. versionadded:: 0.2
        """,
    )

    max_waiting_password_checks = IntegerTrait(
        8,
        config=True,
        help="""Password checks that may wait for one of the ``password_check_threads``, per line.

        Anonymous requests (logins, sign-ups) share one line; each signed-in
        caller (a user admin's new accounts and passwords) has its own, so that
        an anonymous flood does not refuse them. A check that finds its line full
        is not made: the login form answers 429 "Too many login attempts, try
        again shortly" (sign-up and the accounts API alike, the API with
        ``Retry-After``), at once, rather than after a wait that grows with the
        flood.

        .. versionadded:: 0.2
        """,
    )

    allow_signup = Bool(
        False,
        config=True,
        help="""Let anyone create an account at ``/hub/signup``.

        Off by default: admins create the accounts (``POST /hub/api/accounts``
        or the Local accounts admin page). When on, see
        :attr:`signup_requires_approval`.

        .. versionadded:: 0.2
        """,
    )

    signup_requires_approval = Bool(
        True,
        config=True,
        help="""Accounts made through sign-up start disabled until an admin enables them.

        Only used when :attr:`allow_signup` is on. Always on with
        ``UWSHub.system_users`` (the hub says so at start): a new account's
        name is then a system account's, which an admin gives only to its person.

        .. versionadded:: 0.2
        """,
    )

    username_pattern = Unicode(
        r"^[a-z0-9][a-z0-9._-]{0,62}$",
        config=True,
        help="""Regular expression every new account's (normalized, lower-case) user name must match.

        The default allows what also works as a system account name.

        .. versionadded:: 0.2
        """,
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
    _password_threads: FileThreads | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = self.db_url or getattr(self.parent, "db_url", "sqlite:///jupyterhub.sqlite")
            self._engine = create_engine(url, pool_pre_ping=True)
        return self._engine

    # ---------------------------------------------------------------- hashing
    async def in_password_thread(
        self, func: Callable[..., T], *args: Any, refusal: str = TOO_MANY_PASSWORDS, caller: str | None = None
    ) -> T:
        """``func(*args)``, which hashes or checks a password, in a thread of the password
        checks' own pool (see ``password_check_threads``); 429 with ``refusal`` when the
        line behind them is full.

        A line per ``caller``, the hub user of an authenticated request (an admin's new
        account, a new password), and one for anonymous requests (logins, sign-ups): an
        anonymous flood filled the one line there was, and a signed-in user's new password
        was refused for as long as it lasted. A caller's checks take at most every thread
        in turn (the pool's threads are handed out in order of asking), so another line's
        check waits for no more than one round of those under way."""
        if self._password_threads is None:
            n = max(1, self.password_check_threads)
            self._password_threads = FileThreads(
                n, n, waiting=max(0, self.max_waiting_password_checks), name="uws-passwords"
            )
        line = "anonymous" if caller is None else f"user:{caller}"
        try:
            return await self._password_threads.run(line, func, *args)
        except LineFull:
            self.log.warning("Password check refused (%s): %s", caller or "anonymous", refusal)
            raise TooManyRequests(refusal, retry_after_seconds=5) from None

    def _hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.bcrypt_rounds)).decode("ascii")

    @staticmethod
    def _matches(password: str, password_hash: str) -> bool:
        return bcrypt.checkpw(password.encode("utf-8"), password_hash.encode("ascii"))

    @property
    def _dummy_hash(self) -> str:
        if not hasattr(self, "_dummy"):
            self._dummy = self._hash(secrets.token_hex(8))
        return self._dummy

    # ---------------------------------------------------------------- accounts (blocking: run in a thread)
    def check_new_password(self, password: str) -> None:
        if len(password) < self.min_password_length:
            raise AccountError(f"Passwords need at least {self.min_password_length} characters")
        if len(password.encode("utf-8")) > 72:
            # bcrypt only looks at the first 72 bytes
            raise AccountError("Passwords may have at most 72 bytes")

    def check_new_username(self, username: str) -> str:
        """The normalized name, if it may name a new account."""
        name = self.normalize_username(username or "")
        why = look_alike(name)
        if why is not None:
            raise AccountError(f"Invalid user name {username!r}: {why}")
        if not re.fullmatch(self.username_pattern, name) or not self.validate_username(name):
            raise AccountError(f"Invalid user name {username!r}: it must match {self.username_pattern}")
        return name

    def create_account(
        self, username: str, password: str, disabled: bool = False, *, check_name: bool = True
    ) -> Account:
        """Create an account; :class:`AccountExists` if the name is taken.

        ``check_name=False`` skips :attr:`username_pattern` (for the admins named in config).
        """
        username = self.check_new_username(username) if check_name else self.normalize_username(username)
        self.check_new_password(password)
        return self._insert(username, self._hash(password), disabled)

    def _insert(self, username: str, password_hash: str, disabled: bool) -> Account:
        now = _utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(accounts_table).values(
                        username=username,
                        password_hash=password_hash,
                        disabled=disabled,
                        failed_logins=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AccountExists(f"The account {username!r} exists already") from None
        return self.get_account(username)

    async def sign_up(self, username: str, password: str, hub_user_exists: Callable[[str], bool]) -> Account:
        """Create an account for someone signing up; :class:`NameNotAvailable` for a name in use.

        A name is in use if it has an account, or is a hub user without one
        (made through JupyterHub's API: the account would log in as them and
        get their workspaces), or is an admin or blocked name. All get the same
        refusal, after the same work (the password is hashed whatever the
        name), so that sign-up does not tell which names exist.
        ``hub_user_exists`` looks the name up in the hub's users table (the
        accounts may live in another database); it is called here, on the
        event loop, where the hub's database session may be used, and the
        hashing and the insert run in a thread.
        """
        name = self.check_new_username(username)
        self.check_new_password(password)
        in_use = name in self.admin_users or name in self.blocked_users or hub_user_exists(name)
        return await self.in_password_thread(self._sign_up, name, password, in_use)

    def _sign_up(self, name: str, password: str, in_use: bool) -> Account:
        password_hash = self._hash(password)
        if in_use:
            raise NameNotAvailable()
        try:
            return self._insert(name, password_hash, disabled=self.signup_requires_approval)
        except AccountExists:
            raise NameNotAvailable() from None

    def get_account(self, username: str) -> Account:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts_table).where(accounts_table.c.username == username)).first()
        if row is None:
            raise NoSuchAccount(f"No such account: {username!r}")
        return _account(row)

    def has_account(self, username: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.scalar(select(accounts_table.c.username).where(accounts_table.c.username == username)) is not None
            )

    def list_accounts(self) -> list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(accounts_table).order_by(accounts_table.c.username)).all()
        return [_account(row) for row in rows]

    def _update(self, username: str, **values: Any) -> Account:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(accounts_table)
                .where(accounts_table.c.username == username)
                .values(updated_at=_utcnow(), **values)
            )
        if result.rowcount == 0:
            raise NoSuchAccount(f"No such account: {username!r}")
        return self.get_account(username)

    def set_password(self, username: str, password: str) -> Account:
        """Set a new password (an admin's reset); also unlocks the account."""
        self.check_new_password(password)
        return self._update(username, password_hash=self._hash(password), failed_logins=0, locked_until=None)

    def set_disabled(self, username: str, disabled: bool) -> Account:
        """Disable (no login at all) or enable an account."""
        return self._update(username, disabled=bool(disabled))

    def unlock(self, username: str) -> Account:
        """End a lockout and forget past failures."""
        return self._update(username, failed_logins=0, locked_until=None)

    def delete_account(self, username: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(accounts_table).where(accounts_table.c.username == username)).rowcount > 0

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
            self.create_account(name, password, check_name=False)
            created.append((name, generated))
        return created

    # ---------------------------------------------------------------- login
    def check_login(self, username: str, password: str) -> LoginCheck:
        """Check a password, counting failures and locking (blocking).

        The failure is counted in the database *before* bcrypt runs: one
        conditional UPDATE takes a place for this attempt only while the
        account is enabled and not locked, and the attempt that takes the
        :attr:`max_failed_logins`-th place locks the account in the same
        statement. The database serializes these updates (a row lock on
        PostgreSQL, the write lock on SQLite), so however many logins run at
        once, no more than the limit of passwords is checked in a row. A right
        password then resets the count; a wrong one leaves it counted. An
        attempt that gets no place is refused without checking its password.
        """
        # bcrypt refuses passwords over 72 bytes, which no account can have
        candidate = (
            password if len(password.encode("utf-8")) <= 72 else password.encode("utf-8")[:72].decode("utf-8", "ignore")
        )
        now = _utcnow()
        attempt = self._take_attempt(username, now)
        if attempt is None:
            # the same work as a check, so that timing does not tell why
            self._matches(candidate, self._dummy_hash)
            return self._refusal(username)
        password_hash, failures = attempt
        if self._matches(candidate, password_hash) and candidate == password:
            with self.engine.begin() as conn:
                conn.execute(
                    update(accounts_table)
                    .where(accounts_table.c.username == username)
                    .values(failed_logins=0, locked_until=None)
                )
            return LoginCheck.OK
        if self.max_failed_logins and failures >= self.max_failed_logins:
            self.log.warning(
                "Local account %s locked for %d s after %d failed logins", username, self.lockout_seconds, failures
            )
        return LoginCheck.WRONG_PASSWORD

    def _take_attempt(self, username: str, now: datetime) -> tuple[str, int] | None:
        """Count a login attempt as a failure, if the account may be tried now.

        Returns the password hash and the failures counted with this one, or
        None when the account does not exist, is disabled or is locked.
        """
        c = accounts_table.c
        lock_ended = and_(c.locked_until.is_not(None), c.locked_until <= now)
        failures = case((lock_ended, 1), else_=c.failed_logins + 1)
        locked_until = None
        if self.max_failed_logins:
            locked_until = case(
                (failures >= self.max_failed_logins, now + timedelta(seconds=self.lockout_seconds)), else_=None
            )
        where = c.username == username
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(accounts_table)
                .where(where, c.disabled == false(), or_(c.locked_until.is_(None), lock_ended))
                .values(failed_logins=failures, locked_until=locked_until)
            ).rowcount
            if not taken:
                return None
            # the row stays locked for others until this transaction ends: this is our count
            row = conn.execute(select(c.password_hash, c.failed_logins).where(where)).one()
        return row.password_hash, row.failed_logins

    def _refusal(self, username: str) -> LoginCheck:
        """Why :meth:`_take_attempt` found no place for a login (for the log)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts_table).where(accounts_table.c.username == username)).first()
        if row is None:
            return LoginCheck.NO_ACCOUNT
        if row.disabled:
            return LoginCheck.DISABLED
        return LoginCheck.LOCKED

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", "") or "")
        password = data.get("password", "") or ""
        if not username or not password:
            return None
        result = await self.in_password_thread(self.check_login, username, password, refusal=TOO_MANY_LOGINS)
        if result is LoginCheck.OK:
            return {"name": username}
        # the form says "Invalid username or password" whatever the reason; the log says which
        self.log.warning("Login refused for %s: %s", username, result.value)
        return None

    async def refresh_user(self, user, handler=None):
        """A disabled account's browser sessions end at the next refresh.

        Users without a local account (made through JupyterHub's REST API,
        services) are left alone.
        """
        try:
            account = await asyncio.to_thread(self.get_account, user.name)
        except NoSuchAccount:
            return True
        if account.disabled:
            self.log.warning("Local account %s is disabled: its session ends", user.name)
            return False
        return True

    def delete_user(self, user):
        """JupyterHub deleted the user: delete the account too."""
        if self.delete_account(user.name):
            self.log.info("Deleted the local account of %s", user.name)

    # ---------------------------------------------------------------- sign-up
    def get_handlers(self, app):
        handlers = super().get_handlers(app)
        if self.allow_signup:
            handlers.append((r"/signup", SignupHandler))
        return handlers


def _account(row) -> Account:
    return Account(
        username=row.username,
        disabled=bool(row.disabled),
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


SIGNUP_HTML = """{% extends "page.html" %}
{% block title %}Create an account{% endblock title %}
{% block main %}
<div class="container" style="max-width: 32rem">
  <h1>Create an account</h1>
  {% if message %}<p id="signup-message" class="alert alert-{{ 'success' if ok else 'danger' }}">{{ message }}</p>{% endif %}
  {% if not ok %}
  <form method="post" id="signup-form">
    <input type="hidden" name="_xsrf" value="{{ xsrf }}" />
    <label class="form-label" for="signup-username">User name</label>
    <input class="form-control" id="signup-username" name="username" value="{{ username }}" autocomplete="username" required />
    <label class="form-label" for="signup-password">Password ({{ min_length }} characters or more)</label>
    <input class="form-control" id="signup-password" name="password" type="password" autocomplete="new-password" required />
    <label class="form-label" for="signup-password2">Password again</label>
    <input class="form-control" id="signup-password2" name="password2" type="password" autocomplete="new-password" required />
    <button class="btn btn-jupyter mt-3" id="signup-submit" type="submit">Create account</button>
  </form>
  {% endif %}
  <p class="mt-3"><a href="{{ login_url }}">Sign in</a></p>
</div>
{% endblock main %}
"""


class SignupHandler(BaseHandler):
    """``/hub/signup``: create a local account (only when sign-up is on)."""

    async def _render(self, status: int = 200, **ns) -> None:
        auth = self.authenticator
        template: Template = self.settings["jinja2_env"].from_string(SIGNUP_HTML)
        values = {
            **self.template_namespace,
            "min_length": auth.min_password_length,
            "message": "",
            "ok": False,
            "username": "",
        }
        values.update(ns)
        self.set_status(status)
        self.finish(await template.render_async(**values))

    async def get(self):
        await self._render()

    async def post(self):
        auth: WorkspaceLocalAuthenticator = self.authenticator
        username = self.get_body_argument("username", "", strip=True)
        password = self.get_body_argument("password", "", strip=False)
        if password != self.get_body_argument("password2", "", strip=False):
            return await self._render(400, message="The passwords differ", username=username)
        try:
            account = await auth.sign_up(username, password, lambda name: self.find_user(name) is not None)
        except TooManyRequests as e:
            return await self._render(e.status_code, message=e.message, username=username)
        except AccountError as e:
            if isinstance(e, NameNotAvailable):
                self.log.warning("Sign-up refused for %r: the name is in use", username)
            return await self._render(400, message=str(e), username=username)
        self.log.info(
            "Sign-up: new local account %s%s", account.username, " (waits for approval)" if account.disabled else ""
        )
        message = (
            "Your account was created. An administrator must enable it before you can sign in."
            if account.disabled
            else "Your account was created: you can sign in now."
        )
        await self._render(201, message=message, ok=True)

    def check_xsrf_cookie(self):
        try:
            return super().check_xsrf_cookie()
        except web.HTTPError:
            raise web.HTTPError(403, "The form expired: reload the page and try again") from None
