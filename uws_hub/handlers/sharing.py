"""Pages: "Shared with me" (``/hub/shared``) and the admin's quotas and usage
(``/hub/admin/quotas``).

Like the other pages they render the REST API's models and act through the
API from the browser, so everything here a program can do too.
"""

from __future__ import annotations

from jupyterhub.scopes import needs_scope
from tornado import web

from .. import access
from ..events.notify import notification_model
from ..quotas.limits import PERIODS, SORT_KEYS, limit_words
from ..scopes import ADMIN_QUOTAS, READ_WORKSPACES, WRITE_WORKSPACES, requires
from ..sharing.models import share_model
from ..states import ShareKind, ShareStatus
from .pages import UWSPageHandler

#: notifications shown on the "Shared with me" page
RECENT_NOTIFICATIONS = 20


class SharedPageHandler(UWSPageHandler):
    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self):
        user = self.current_user.orm_user
        last_event_id = self.last_event_id()
        shares = [share_model(s) for s in self.uws.sharing.received(user, [s.value for s in ShareStatus])]
        notes, _ = self.uws.notifier.listed(user, unread=False, offset=0, limit=RECENT_NOTIFICATIONS)
        await self.render_page(
            "shared.html",
            last_event_id=last_event_id,
            invitations=[s for s in shares if s["status"] == ShareStatus.pending.value],
            collaborations=[s for s in shares if s["kind"] == ShareKind.collaborate.value],
            copies=[
                s for s in shares if s["kind"] == ShareKind.copy.value and s["status"] != ShareStatus.pending.value
            ],
            notifications=[notification_model(ev) for ev in notes],
            can_accept=access.may(self, WRITE_WORKSPACES, user),
        )


class AdminQuotasPageHandler(UWSPageHandler):
    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        quotas = self.uws.quotas
        await self.render_page(
            "admin_quotas.html",
            defaults=limit_words(quotas.defaults.to_model()),
            period=quotas.period,
            periods=PERIODS,
            sort_keys=SORT_KEYS,
            can_set=access.holds(self, ADMIN_QUOTAS),
        )


default_handlers = [
    (r"/shared", SharedPageHandler),
    (r"/admin/quotas", AdminQuotasPageHandler),
]
