"""uws-hub's pages, under ``/hub/``."""

from . import accounts, pages

default_handlers = [*pages.default_handlers, *accounts.default_handlers]
