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
from collections.abc import Awaitable, Callable, Collection
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


async def call(func: Callable[..., T], *args: Any, thread: Callable[..., Awaitable[T]] = asyncio.to_thread) -> T:
    """Run an account operation in a thread (``thread``: one of the password checks' for
    one that hashes a password, see ``in_password_thread``); its refusals become 409, 404
    or 422."""
    try:
        return await thread(func, *args)
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


def end_sessions(db: Session, user_name: str, keep_tokens: Collection[int] = ()) -> hub_orm.User | None:
    """End every way in that the account's credentials gave: its browser sessions (the
    hub's login cookie, its ``cookie_id``, and the servers' logins made from it) and its
    API tokens but ``keep_tokens`` (ids). A disabled account keeps none; a password someone
    else set keeps its running servers' own tokens (:func:`running_server_tokens`), so
    that whoever logged in with the old password (an intruder, after whose visit an admin
    resets it) is out, with the tokens they could mint meanwhile, while the user's
    servers run on. The user's hub row, or None."""
    orm_user = hub_orm.User.find(db, user_name)
    if orm_user is None:
        return None
    orm_user.cookie_id = new_token()
    for token in list(orm_user.api_tokens):
        if token.id not in keep_tokens:
            db.delete(token)
    return orm_user


def running_server_tokens(db: Session, user: Any) -> set[int]:
    """The ids of the API tokens JupyterHub gave the user's running servers (each one's
    ``Spawner.api_token``, revoked when it stops): found by the token itself, not by a note
    such as ``"Server at …"``, which anyone minting a token may write."""
    ids = set()
    for spawner in user.spawners.values() if user is not None else ():
        token = hub_orm.APIToken.find(db, spawner.api_token) if spawner.active and spawner.api_token else None
        if token is not None:
            ids.add(token.id)
    return ids
