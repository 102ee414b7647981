"""What every UWS route shares: HTTP Basic beside the hub's tokens, and UWS's answers.

Authentication: the hub's tokens as everywhere (``Authorization: token …``
or ``bearer``), and, on these routes only, **HTTP Basic** with the user's
name and one of their API tokens as the password, because many UWS clients
know no other scheme (``requests.Session.auth = (user, token)``). The token
must belong to the user named: a token with another owner's name is refused
like a wrong password. Either way it is a hub API token, so its scopes decide
what the request may do, through :mod:`uws_hub.access`, as in the JSON API.
Unauthenticated requests get ``401`` with ``WWW-Authenticate: Basic``.
A browser keeps Basic credentials once given (its login prompt) and sends them
with every request to the hub, also those a page of another site makes (a form
POST needs no CORS preflight), so Basic is refused (``403``) on a request a
browser marks as coming from another site (``Origin`` not the hub's,
``Sec-Fetch-Site`` not ``same-origin`` or ``none``): no page elsewhere can run,
change or delete a job with them. Clients send neither header.

Answers: XML documents and ``text/plain`` atoms as UWS says, and every error
as its HTTP status with a ``text/plain`` message (UWS has no error
document). A request the job's state forbids is ``403`` (STD §2.2: uws-hub's
``409`` becomes UWS's ``403``); an unexpected failure says nothing of itself.
"""

from __future__ import annotations

import base64
import binascii
from http.client import responses

from tornado import web

from ...apihandlers.base import UWSAPIHandler
from ...errors import UWSError
from .documents import XML_TYPE

TEXT_TYPE = "text/plain; charset=UTF-8"
#: the realm a client is asked to log in to
REALM = "uws-hub UWS"


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic …`` header, None for any other."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon and user and password else None


def cross_site(handler: web.RequestHandler, own_origin: str) -> bool:
    """Whether a browser made this request for a page of another site: its ``Origin``
    is not ``own_origin`` (``null`` included), or its ``Sec-Fetch-Site`` is neither
    ``same-origin`` nor ``none`` (typed in, a bookmark). Clients send neither."""
    headers = handler.request.headers
    origin = headers.get("Origin")
    fetch_site = headers.get("Sec-Fetch-Site")
    return (origin is not None and origin != own_origin) or (
        fetch_site is not None and fetch_site not in ("same-origin", "none")
    )


def error_status(status_code: int, error: BaseException | None) -> int:
    """The status UWS gives a refusal: a state conflict (uws-hub's ``409``) is ``403``."""
    if isinstance(error, UWSError) and status_code == 409:
        return 403
    return status_code


def error_text(status_code: int, error: BaseException | None) -> str:
    """The message of an error answer: the refusal's own, else the status's phrase."""
    if status_code >= 500 and not isinstance(error, UWSError):
        return "Internal server error; the hub's log has the details"
    if isinstance(error, UWSError):
        return error.message
    if isinstance(error, web.HTTPError) and error.log_message:
        return error.log_message % error.args if error.args else error.log_message
    return responses.get(status_code, "Error")


class UWSHandler(UWSAPIHandler):
    """A route of the UWS interface."""

    def get_token(self):
        """The request's API token: from HTTP Basic (the password, if the token is the
        named user's) or, as everywhere in the hub, from ``Authorization: token``."""
        if not hasattr(self, "_uws_token"):
            credentials = basic_credentials(self.request.headers.get("Authorization", ""))
            if credentials is None:
                self._uws_token = super().get_token()
            else:
                user, password = credentials
                token = self.uws.token_ids.find(self.db, password)
                owner = token.user if token is not None else None
                self._uws_token = token if owner is not None and owner.name == user else None
        return self._uws_token

    async def prepare(self):
        if basic_credentials(self.request.headers.get("Authorization", "")) and cross_site(self, self.public_origin):
            raise web.HTTPError(
                403,
                "HTTP Basic is not taken on requests from other sites (a page elsewhere could make"
                " them with the login your browser keeps); use 'Authorization: token <token>'",
            )
        await super().prepare()
        if self.current_user is None:
            raise web.HTTPError(
                401,
                "Authentication required: HTTP Basic with your user name and an API token as the password,"
                " or 'Authorization: token <token>'",
            )

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        status = error_status(status_code, error)
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", TEXT_TYPE)
        if status == 401:
            self.set_header("WWW-Authenticate", f'Basic realm="{REALM}"')
        for name, value in (getattr(error, "headers", None) or {}).items():
            self.set_header(name, value)
        self.finish(error_text(status, error) + "\n")

    # ---------------------------------------------------------------- answers
    def write_xml(self, document: bytes) -> None:
        self.set_header("Content-Type", XML_TYPE)
        self.finish(document)

    def write_text(self, text: str) -> None:
        self.set_header("Content-Type", TEXT_TYPE)
        self.finish(text)

    def see_other(self, url: str) -> None:
        """UWS's answer to a state-changing request: ``303`` to ``url`` (absolute), no body."""
        self.set_status(303)
        self.set_header("Location", url)
        self.clear_header("Content-Type")
        self.finish()
