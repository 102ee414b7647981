"""uws-hub's pages, under ``/hub/``."""

from . import pages

default_handlers = [*pages.default_handlers]
