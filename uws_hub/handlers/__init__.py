"""uws-hub's pages, under ``/hub/``."""

from . import accounts, pages, sharing

default_handlers = [*pages.default_handlers, *sharing.default_handlers, *accounts.default_handlers]
