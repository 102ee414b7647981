"""Page: the admin's view of local accounts (``/hub/admin/accounts``).

Lists the accounts and acts on them through the REST API
(``/hub/api/accounts``) from the browser, like the other pages. Only when
the hub logs in with local accounts (404 otherwise).
"""

from __future__ import annotations

import asyncio

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..apihandlers.accounts import account_model, local_accounts_or_404


class AdminAccountsPageHandler(BaseHandler):
    @web.authenticated
    @needs_scope("admin:users")
    async def get(self):
        auth = local_accounts_or_404(self.authenticator)
        accounts = await asyncio.to_thread(auth.list_accounts)
        html = await self.render_template(
            "admin_accounts.html",
            accounts=[account_model(self.db, a) for a in accounts],
            min_password_length=auth.min_password_length,
            max_failed_logins=auth.max_failed_logins,
            lockout_seconds=auth.lockout_seconds,
            allow_signup=auth.allow_signup,
        )
        self.finish(html)


default_handlers = [
    (r"/admin/accounts", AdminAccountsPageHandler),
]
