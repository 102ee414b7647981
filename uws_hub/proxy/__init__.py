"""The default proxy: node configurable-http-proxy (CHP), started through
``configurable-http-proxy.mjs`` beside this module.

CHP 5.x answers a request whose path has a %-escape that does not decode (``%ff``)
with a 500: it decodes the path to find the route and does not catch the error.
Nothing a client sends may get a 500, so the hub starts CHP through that small
entry point, which routes such a request by its path as sent (the hub or the
server behind answers it, a 400 or a 404) and otherwise runs CHP's own command
line, unchanged. ``c.ConfigurableHTTPProxy.command`` still replaces it.
"""

from __future__ import annotations

from pathlib import Path

from jupyterhub.proxy import ConfigurableHTTPProxy
from traitlets import default

#: CHP's command line, with undecodable paths routed (see the module's docstring)
ENTRY_POINT = Path(__file__).with_name("configurable-http-proxy.mjs")


class WorkspaceConfigurableHTTPProxy(ConfigurableHTTPProxy):
    """JupyterHub's ``ConfigurableHTTPProxy``, started as ``node configurable-http-proxy.mjs``
    (``node`` and CHP's ``configurable-http-proxy`` command found on ``PATH``)."""

    @default("command")
    def _default_command(self):
        return ["node", str(ENTRY_POINT)]
