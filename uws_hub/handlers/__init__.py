"""uws-hub's pages, under ``/hub/``."""

from . import accounts, jobs, pages, servers, sharing

default_handlers = [
    *pages.default_handlers,
    *jobs.default_handlers,
    *sharing.default_handlers,
    *accounts.default_handlers,
    *servers.default_handlers,
]
