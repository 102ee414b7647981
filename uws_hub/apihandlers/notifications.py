"""REST API: the caller's notifications (``/hub/api/notifications``), read and dismissed.

Notifications are events of kind ``notification`` to one user (a copy sent to
them, ready or failed, a quota almost used up); the event streams deliver them
as they happen. Here their recipient lists them (newest first, in pages; with
``?unread=true`` only those not read yet), marks one read, and dismisses one
(it leaves their lists). Only the recipient: anyone else's is not found.
"""

from __future__ import annotations

from ..errors import BadRequest
from ..events.notify import notification_model
from ..scopes import READ_WORKSPACES, requires
from .base import UWSAPIHandler, parse_id


class NotificationsAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self):
        unread = self.get_argument("unread", "false")
        if unread not in ("true", "false"):
            raise BadRequest(f"unread must be true or false, not {unread!r}")
        offset, limit = self.get_api_pagination()
        events, total = self.uws.notifier.listed(
            self.calling_user("receive notifications"), unread=unread == "true", offset=offset, limit=limit
        )
        self.write_json(self.paginated_model([notification_model(e) for e in events], offset, limit, total))


class NotificationAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def delete(self, event_id):
        notifier = self.uws.notifier
        event = notifier.find(self.calling_user("receive notifications"), parse_id(event_id, "notification"))
        self.write_json(notification_model(notifier.dismiss(event)))


class NotificationReadAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def post(self, event_id):
        notifier = self.uws.notifier
        event = notifier.find(self.calling_user("receive notifications"), parse_id(event_id, "notification"))
        self.write_json(notification_model(notifier.mark_read(event)))


default_handlers = [
    (r"/api/notifications", NotificationsAPIHandler),
    (r"/api/notifications/([^/]+)", NotificationAPIHandler),
    (r"/api/notifications/([^/]+)/read", NotificationReadAPIHandler),
]
