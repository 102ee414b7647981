"""REST API: local accounts (user admins), when the hub logs in with local accounts.

``/hub/api/accounts``: list and create; ``/hub/api/accounts/{name}``: read,
disable or enable, set a password, unlock, set the email and display name.
Needs JupyterHub's ``admin:users`` scope, and follows JupyterHub's rules for
who may act on which user (filters, admins): :mod:`uws_hub.accounts.access`
decides. With any other authenticator these answer 404 and say which
authenticator is in use.

The account rules (password length, lockout) live in
:class:`uws_hub.authenticators.local.WorkspaceLocalAuthenticator`, what a change
does to the account's hub user in :mod:`uws_hub.accounts.service`; this module
only parses, checks access and calls them.
"""

from __future__ import annotations

from functools import partial

from jupyterhub import orm as hub_orm
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import maybe_future
from pydantic import BaseModel, ConfigDict, Field

from ..accounts.access import ADMIN_USERS, AccountAccess
from ..accounts.service import (
    account_model,
    call,
    end_sessions,
    local_accounts_or_404,
    make_admin,
    running_server_tokens,
    set_identity,
)
from ..authenticators.local import (
    Account,
    WorkspaceLocalAuthenticator,
)
from ..inputs import Text
from .base import UWSAPIHandler
from .servers import refuse_name_being_deleted


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


class AccountsAPIHandlerBase(UWSAPIHandler):
    def local_accounts(self) -> WorkspaceLocalAuthenticator:
        return local_accounts_or_404(self.authenticator)

    @property
    def access(self) -> AccountAccess:
        return AccountAccess(self)

    def account_model(self, account: Account) -> dict:
        return account_model(self.db, account)


class AccountsAPIHandler(AccountsAPIHandlerBase):
    @needs_scope(ADMIN_USERS, post_filter=True)
    async def get(self):
        auth = self.local_accounts()
        access = self.access
        accounts = [a for a in await call(auth.list_accounts) if access.sees(a.username)]
        offset, limit = self.get_api_pagination()
        page = accounts[offset : offset + limit]
        self.write_json(self.paginated_model([self.account_model(a) for a in page], offset, limit, len(accounts)))

    @needs_scope(ADMIN_USERS)
    async def post(self):
        auth = self.local_accounts()
        body = self.parse_body(AccountCreateModel)
        self.access.check_change(auth.normalize_username(body.username), grant_admin=body.admin)
        # (its hub user is made below, as POST /hub/api/users/{name} makes one)
        refuse_name_being_deleted(self, body.username)
        hashing = partial(auth.in_password_thread, caller=self.current_user.name)
        account = await call(auth.create_account, body.username, body.password, body.disabled, thread=hashing)
        # the account's hub user, so that it shows in JupyterHub's admin panel and can join groups
        user = self.find_user(account.username)
        if user is None:
            user = self.user_from_username(account.username)
            await maybe_future(self.authenticator.add_user(user))
        if body.admin:
            make_admin(self.db, user.orm_user)
        set_identity(user.orm_user, body.email, body.display_name)
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
        self.write_json(self.account_model(await call(auth.get_account, username)))

    @needs_scope(ADMIN_USERS, post_filter=True)
    async def patch(self, username):
        auth = self.local_accounts()
        self.access.check_sees(username)
        body = self.parse_body(AccountPatchModel)
        account = await call(auth.get_account, username)
        self.access.check_change(username)
        if body.disabled:
            self.access.check_disable(username)
        who = self.current_user.name
        if body.password is not None:
            hashing = partial(auth.in_password_thread, caller=who)
            account = await call(auth.set_password, username, body.password, thread=hashing)
            self.log.info("%s set the password of %s", who, username)
            if username != who:
                keep = running_server_tokens(self.db, self.find_user(username))
                end_sessions(self.db, username, keep_tokens=keep)
        if body.unlock:
            account = await call(auth.unlock, username)
            self.log.info("%s unlocked %s", who, username)
        if body.disabled is not None and body.disabled != account.disabled:
            account = await call(auth.set_disabled, username, body.disabled)
            self.log.info("%s %s the local account %s", who, "disabled" if body.disabled else "enabled", username)
            if body.disabled:
                end_sessions(self.db, username)
        orm_user = hub_orm.User.find(self.db, username)
        if orm_user is not None and (body.email is not None or body.display_name is not None):
            set_identity(orm_user, body.email, body.display_name)
        self.db.commit()
        self.write_json(self.account_model(account))


default_handlers = [
    (r"/api/accounts", AccountsAPIHandler),
    (r"/api/accounts/([^/]+)", AccountAPIHandler),
]
