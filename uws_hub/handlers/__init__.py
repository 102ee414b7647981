"""uws-hub's pages, under ``/hub/``."""

from . import accounts, pages, servers, sharing

default_handlers = [
    *pages.default_handlers,
    *sharing.default_handlers,
    *accounts.default_handlers,
    *servers.default_handlers,
]
