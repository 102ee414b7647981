"""uws-hub's REST API handlers, under ``/hub/api/``."""

from . import accounts, events, files, jobs, notifications, quotas, shares, workspaces

default_handlers = [
    *workspaces.default_handlers,
    *files.default_handlers,
    *jobs.default_handlers,
    *shares.default_handlers,
    *quotas.default_handlers,
    *events.default_handlers,
    *notifications.default_handlers,
    *accounts.default_handlers,
]
