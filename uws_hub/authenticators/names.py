"""User names with no control characters, whichever authenticator makes them."""

from __future__ import annotations

from jupyterhub.auth import Authenticator

from ..redaction import CONTROL_CHARACTERS


class PrintableNamesMixin(Authenticator):
    """Refuse user names that hold a control character (a NUL, a newline, a carriage
    return, ESC, NEL, a line separator), wherever JupyterHub checks a name: a login
    (the name an identity provider or a login form hands), a user admin's ``POST
    /hub/api/users`` and ``PATCH /hub/api/users/{name}``. Mix in before a JupyterHub
    Authenticator.

    Such a name has no system account (``getpwnam`` refuses a NUL); PostgreSQL cannot
    store a NUL (JupyterHub's ``POST /users`` was a 500 there); and JupyterHub's own log
    lines put the name into their text as it is, where a carriage return or a newline
    starts a line of whoever chose it (the hub's own lines write their values on one
    line, :func:`uws_hub.redaction.one_line`). ``Authenticator.username_pattern`` still
    applies after this."""

    def validate_username(self, username: str) -> bool:
        return CONTROL_CHARACTERS.search(username) is None and super().validate_username(username)
