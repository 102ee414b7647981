"""Page: the user admins' view of local accounts (``/hub/admin/accounts``).

Lists the accounts and acts on them through the REST API
(``/hub/api/accounts``) from the browser, like the other pages. Only when
the hub logs in with local accounts (404 otherwise). It shows and offers what
:mod:`uws_hub.accounts.access` lets the viewer do, and nothing more: the
accounts inside their ``admin:users`` filter, no buttons on an admin's
account for a non-admin (with JupyterHub's reason instead), no "Admin" box
for a non-admin, no form to create accounts for a filtered ``admin:users``,
no Disable on the viewer's own account.
"""

from __future__ import annotations

import asyncio

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..accounts.access import ADMIN_USERS, AccountAccess
from ..accounts.service import account_model, local_accounts_or_404


class AdminAccountsPageHandler(BaseHandler):
    @web.authenticated
    @needs_scope(ADMIN_USERS, post_filter=True)
    async def get(self):
        auth = local_accounts_or_404(self.authenticator)
        access = AccountAccess(self)
        accounts = [a for a in await asyncio.to_thread(auth.list_accounts) if access.sees(a.username)]
        html = await self.render_template(
            "admin_accounts.html",
            accounts=[
                {
                    **account_model(self.db, a),
                    "refusal": access.refusal(a.username),
                    "may_disable": access.may_disable(a.username),
                }
                for a in accounts
            ],
            may_create=access.may_create,
            may_grant_admin=access.is_admin,
            min_password_length=auth.min_password_length,
            max_failed_logins=auth.max_failed_logins,
            lockout_seconds=auth.lockout_seconds,
            allow_signup=auth.allow_signup,
        )
        self.finish(html)


default_handlers = [
    (r"/admin/accounts", AdminAccountsPageHandler),
]
