"""REST API: local accounts (user admins), when the hub logs in with local accounts.

``/hub/api/accounts``: list and create; ``/hub/api/accounts/{name}``: read,
disable or enable, set a password, unlock, set the email and display name.
Needs JupyterHub's ``admin:users`` scope, and follows JupyterHub's rules for
who may act on which user (filters, admins): :mod:`uws_hub.accountaccess`
decides. With any other authenticator these answer 404 and say which
authenticator is in use.

The account rules (password length, lockout) live in
:class:`uws_hub.authenticators.local.WorkspaceLocalAuthenticator`; this module
only parses, checks access and calls it (in a thread: bcrypt is slow on
purpose).
"""

from __future__ import annotations

import asyncio

from jupyterhub import orm as hub_orm
from jupyterhub import roles
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import maybe_future, new_token
from pydantic import BaseModel, ConfigDict, Field

from ..accountaccess import ADMIN_USERS, AccountAccess
from ..authenticators.identity import display_name_of, email_of, make_user_info
from ..authenticators.local import (
    Account,
    AccountError,
    AccountExists,
    NoSuchAccount,
    WorkspaceLocalAuthenticator,
)
from ..errors import Conflict, NotFound, Unprocessable
from ..inputs import Text
from .base import UWSAPIHandler


class AccountCreateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    email: Text | None = Field(None, max_length=320)
    display_name: Text | None = Field(None, max_length=255)
    admin: bool = False
    disabled: bool = False


class AccountPatchModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(None, min_length=1, max_length=1024)
    disabled: bool | None = None
    unlock: bool | None = None
    email: Text | None = Field(None, max_length=320)
    display_name: Text | None = Field(None, max_length=255)


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


class AccountsAPIHandlerBase(UWSAPIHandler):
    def local_accounts(self) -> WorkspaceLocalAuthenticator:
        return local_accounts_or_404(self.authenticator)

    @property
    def access(self) -> AccountAccess:
        return AccountAccess(self)

    def account_model(self, account: Account) -> dict:
        return account_model(self.db, account)

    def set_identity(self, orm_user: hub_orm.User, email: str | None, display_name: str | None) -> None:
        info = dict(orm_user.user_info or {})
        fresh = make_user_info("local", orm_user.name, email, display_name)
        for key in ("email", "display_name"):
            if key in fresh:
                info[key] = fresh[key]
        info["external_ids"] = {**(info.get("external_ids") or {}), **fresh["external_ids"]}
        orm_user.user_info = info

    async def call(self, func, *args):
        try:
            return await asyncio.to_thread(func, *args)
        except AccountExists as e:
            raise Conflict(str(e)) from None
        except NoSuchAccount as e:
            raise NotFound(str(e)) from None
        except AccountError as e:
            raise Unprocessable(str(e)) from None


class AccountsAPIHandler(AccountsAPIHandlerBase):
    @needs_scope(ADMIN_USERS, post_filter=True)
    async def get(self):
        auth = self.local_accounts()
        access = self.access
        accounts = [a for a in await self.call(auth.list_accounts) if access.sees(a.username)]
        offset, limit = self.get_api_pagination()
        page = accounts[offset : offset + limit]
        self.write_json(self.paginated_model([self.account_model(a) for a in page], offset, limit, len(accounts)))

    @needs_scope(ADMIN_USERS)
    async def post(self):
        auth = self.local_accounts()
        body = self.parse_body(AccountCreateModel)
        self.access.check_change(auth.normalize_username(body.username), grant_admin=body.admin)
        account = await self.call(auth.create_account, body.username, body.password, body.disabled)
        # the account's hub user, so that it shows in JupyterHub's admin panel and can join groups
        user = self.find_user(account.username)
        if user is None:
            user = self.user_from_username(account.username)
            await maybe_future(self.authenticator.add_user(user))
        if body.admin and not user.admin:
            user.admin = True
            roles.assign_default_roles(self.db, entity=user)
        self.set_identity(user.orm_user, body.email, body.display_name)
        self.db.commit()
        self.log.info("%s created the local account %s", self.current_user.name, account.username)
        self.write_json(self.account_model(account), status=201)


class AccountAPIHandler(AccountsAPIHandlerBase):
    # the argument is not called user_name, so that @needs_scope leaves the
    # filter to self.access, which decides the same way for lists and pages

    @needs_scope(ADMIN_USERS, post_filter=True)
    async def get(self, username):
        auth = self.local_accounts()
        self.access.check_sees(username)
        self.write_json(self.account_model(await self.call(auth.get_account, username)))

    @needs_scope(ADMIN_USERS, post_filter=True)
    async def patch(self, username):
        auth = self.local_accounts()
        self.access.check_sees(username)
        body = self.parse_body(AccountPatchModel)
        account = await self.call(auth.get_account, username)
        self.access.check_change(username)
        who = self.current_user.name
        if body.password is not None:
            account = await self.call(auth.set_password, username, body.password)
            self.log.info("%s set the password of %s", who, username)
        if body.unlock:
            account = await self.call(auth.unlock, username)
            self.log.info("%s unlocked %s", who, username)
        if body.disabled is not None and body.disabled != account.disabled:
            account = await self.call(auth.set_disabled, username, body.disabled)
            self.log.info("%s %s the local account %s", who, "disabled" if body.disabled else "enabled", username)
            if body.disabled:
                self.end_sessions(username)
        orm_user = hub_orm.User.find(self.db, username)
        if orm_user is not None and (body.email is not None or body.display_name is not None):
            self.set_identity(orm_user, body.email, body.display_name)
        self.db.commit()
        self.write_json(self.account_model(account))

    def end_sessions(self, user_name: str) -> None:
        """A disabled account is out at once: its browser sessions and API tokens end."""
        orm_user = hub_orm.User.find(self.db, user_name)
        if orm_user is None:
            return
        orm_user.cookie_id = new_token()
        for token in list(orm_user.api_tokens):
            self.db.delete(token)


default_handlers = [
    (r"/api/accounts", AccountsAPIHandler),
    (r"/api/accounts/([^/]+)", AccountAPIHandler),
]
