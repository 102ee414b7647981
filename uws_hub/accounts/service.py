"""Local accounts as the accounts API and page change them, over the local authenticator.

The account rules (password length, lockout, sign-up) are the authenticator's
(:class:`~uws_hub.authenticators.local.WorkspaceLocalAuthenticator`); who may
act on which account is :mod:`.access`'s. This module holds what a change of
an account does to its hub user (identity, admin flag, sessions), and runs
the authenticator's calls in a thread (bcrypt is slow on purpose), turning
its refusals into 4xx errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from jupyterhub import orm as hub_orm
from jupyterhub import roles
from jupyterhub.utils import new_token
from sqlalchemy.orm import Session

from ..authenticators.identity import display_name_of, email_of, make_user_info
from ..authenticators.local import Account, AccountError, AccountExists, NoSuchAccount, WorkspaceLocalAuthenticator
from ..errors import Conflict, NotFound, Unprocessable

T = TypeVar("T")


def account_model(db, account: Account) -> dict:
    """The account as the API shows it: its state, and its user's admin flag and identity."""
    model = account.to_model()
    orm_user = hub_orm.User.find(db, account.username)
    info = orm_user.user_info if orm_user is not None else None
    model.update(
        admin=bool(orm_user is not None and orm_user.admin),
        email=email_of(info),
        display_name=display_name_of(info, account.username),
    )
    return model


def local_accounts_or_404(auth) -> WorkspaceLocalAuthenticator:
    """The hub's authenticator if it is the local-accounts one; else a 404 that says why."""
    if not isinstance(auth, WorkspaceLocalAuthenticator):
        raise NotFound(
            f"Local accounts are not in use on this hub: it logs in with {type(auth).__name__}."
            " Manage people at that identity provider, and users in JupyterHub's admin panel."
        )
    return auth


async def call(func: Callable[..., T], *args: Any) -> T:
    """Run an account operation in a thread; its refusals become 409, 404 or 422."""
    try:
        return await asyncio.to_thread(func, *args)
    except AccountExists as e:
        raise Conflict(str(e)) from None
    except NoSuchAccount as e:
        raise NotFound(str(e)) from None
    except AccountError as e:
        raise Unprocessable(str(e)) from None


def set_identity(orm_user: hub_orm.User, email: str | None, display_name: str | None) -> None:
    """Set a local account's e-mail address and display name in its hub user's ``user_info``."""
    info = dict(orm_user.user_info or {})
    fresh = make_user_info("local", orm_user.name, email, display_name)
    for key in ("email", "display_name"):
        if key in fresh:
            info[key] = fresh[key]
    info["external_ids"] = {**(info.get("external_ids") or {}), **fresh["external_ids"]}
    orm_user.user_info = info


def make_admin(db: Session, orm_user: hub_orm.User) -> None:
    """Give a new account's hub user JupyterHub's admin flag and role."""
    if not orm_user.admin:
        orm_user.admin = True
        roles.assign_default_roles(db, entity=orm_user)


def end_sessions(db: Session, user_name: str) -> None:
    """A disabled account is out at once: its browser sessions and API tokens end."""
    orm_user = end_browser_sessions(db, user_name)
    if orm_user is None:
        return
    for token in list(orm_user.api_tokens):
        db.delete(token)


def end_browser_sessions(db: Session, user_name: str) -> hub_orm.User | None:
    """A password someone else set ends every browser session of the account: the hub's
    login cookie (its ``cookie_id``) and the tokens JupyterHub gave those sessions for
    servers (``session_id``), so that whoever logged in with the old password (an
    intruder, after whose visit an admin resets it) is out, as a logout would put them.
    The user's API tokens and their servers' own go on. The user's hub row, or None."""
    orm_user = hub_orm.User.find(db, user_name)
    if orm_user is None:
        return None
    orm_user.cookie_id = new_token()
    for token in list(orm_user.api_tokens):
        if token.session_id is not None:
            db.delete(token)
    return orm_user
