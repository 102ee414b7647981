"""JupyterHub's own handlers as the hub serves them: no NUL reaches their database.

The hub serves JupyterHub's routes beside its own (users, groups, tokens, OAuth,
the pages). Their handlers pass what a request names on to the database as it
came; PostgreSQL can neither store nor compare text holding a NUL, so a NUL in
a path (``/hub/api/groups/a%00b``), a JSON body (a token's ``note``) or a form
field (``client_id`` at ``/hub/api/oauth2/token``, which anyone may call) was a
500 there, and JupyterHub then rolled back the session that every request
shares. No name, id, token or note holds one: :class:`NulRefused` answers 400
first, as the hub's own API does (:meth:`~uws_hub.apihandlers.base.UWSAPIHandler.decode_argument`).
"""

from __future__ import annotations

from typing import Any

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .errors import BadRequest
from .inputs import unicode_text

#: what a refused URL is told (the hub's own API says the same)
NUL_IN_URL = "The URL must not contain NUL characters (%00)"


def holds_nul(value: Any) -> bool:
    """Whether parsed JSON has a NUL in any string or key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


class NulRefused:
    """Mixed into each of JupyterHub's handlers (:func:`refusing_nul`): a NUL in a path
    argument, a query or form field, or a JSON body is a 400 before the handler runs."""

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        decoded = super().decode_argument(value, name)  # type: ignore[misc]
        if "\x00" in decoded:
            raise BadRequest(NUL_IN_URL)
        return decoded

    def prepare(self) -> Any:
        # query and form fields as sent (tornado's get_argument turns a NUL into a space;
        # the OAuth endpoints read them raw)
        for name, values in self.request.arguments.items():  # type: ignore[attr-defined]
            if "\x00" in name or any(b"\x00" in v for v in values):
                raise BadRequest(f"The request's field {name[:40]!r} must not contain NUL characters")
        return super().prepare()  # type: ignore[misc]

    def get_json_body(self) -> Any:
        body = unicode_text(super().get_json_body())  # type: ignore[misc]
        if holds_nul(body):
            raise BadRequest("The request body must not contain NUL characters (\\u0000)")
        return body


_refusing: dict[type, type] = {}


def refusing_nul(handler_class: type[web.RequestHandler], exempt: type) -> type[web.RequestHandler]:
    """``handler_class`` with :class:`NulRefused` mixed in, if it is one of JupyterHub's
    (a :class:`~jupyterhub.handlers.base.BaseHandler` and no ``exempt``, the hub's own
    API, which refuses them its way); else itself. One subclass per class."""
    if not issubclass(handler_class, BaseHandler) or issubclass(handler_class, exempt):
        return handler_class
    if handler_class not in _refusing:
        _refusing[handler_class] = type(
            handler_class.__name__,
            (NulRefused, handler_class),
            {"__module__": handler_class.__module__, "__doc__": handler_class.__doc__},
        )
    return _refusing[handler_class]
