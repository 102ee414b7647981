"""What every route of the HuBMAP-compatible API shares: HuBMAP's authentication
header and answers, CORS, and the lookups of workspaces and jobs in HuBMAP's words.

Authentication is by token only: ``UWS-Authorization: <word> <token>`` (the
word is not checked, as HuBMAP's server does not check it), JupyterHub's
``Authorization: token <token>``, and for WebSockets ``?token=`` (browsers
cannot set their headers). The hub's cookies are not accepted here: the API
answers cross-origin calls from the origins in ``HubMAPCompat.cors_origins``,
which must not act with a logged-in user's cookie. The tokens are hub API
tokens, so their scopes decide, through :mod:`uws_hub.access`, as everywhere
in uws-hub.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from http.client import responses
from typing import Any

from tornado import web

from ...apihandlers.base import UWSAPIHandler
from ...errors import NotFound, UWSError
from ...inputs import MAX_ID, unicode_text
from ...orm import Job, Workspace
from ...scopes import READ_WORKSPACES
from .config import HubMAPCompat
from .models import HubMAPError, failure, job_type_ids

UWS_AUTHORIZATION = "UWS-Authorization"
ALLOWED_HEADERS = "Content-Type, UWS-Authorization, Authorization"
ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
_ID = re.compile(r"^-?[0-9]{1,10}$")


def parse_int(value: Any) -> int | None:
    """An id from a path or a body (ints and numeric strings, as HuBMAP's clients send), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ID.match(value):
        number = int(value)
    else:
        return None
    return number if -MAX_ID <= number <= MAX_ID else None


class HubMAPHandler(UWSAPIHandler):
    """A route of the HuBMAP-compatible API."""

    #: routes HuBMAP's server serves without credentials (a token, if given, must still be valid)
    anonymous = False
    #: the hub's cookies never authenticate here (see the module)
    _accept_cookie_auth = False
    _bad_header = False

    def initialize(self, compat: HubMAPCompat):
        self.compat = compat

    # ---------------------------------------------------------------- authentication
    def get_auth_token(self):
        header = self.request.headers.get(UWS_AUTHORIZATION)
        if header is not None:
            parts = header.split(" ")
            if len(parts) != 2 or not parts[1]:
                self._bad_header = True
                return None
            return parts[1]
        # JupyterHub's own header (not UWSAPIHandler's, which reads UWS-Authorization its way)
        token = super(UWSAPIHandler, self).get_auth_token()
        if token is None and self.request.headers.get("Upgrade", "").lower() == "websocket":
            token = self.get_query_argument("token", None)
        return token

    def check_xsrf_cookie(self):
        """Tokens only (no cookies): nothing for a cross-site request to forge."""

    async def prepare(self):
        if self.request.method == "OPTIONS":
            self._jupyterhub_user = None
            self._cors()
            return
        await super().prepare()
        self._cors()
        if self._bad_header:
            raise HubMAPError(401, "Invalid auth header format.")
        if self.current_user is None and self.get_auth_token() is not None:
            raise HubMAPError(401, "Invalid token provided.")
        if self.current_user is None and not self.anonymous:
            raise HubMAPError(401, "Authentication credentials were not provided.")

    # ---------------------------------------------------------------- CORS
    def _allowed_origin(self) -> str | None:
        origin = self.request.headers.get("Origin")
        compat = getattr(self, "compat", None)
        return origin if origin and compat is not None and origin in compat.cors_origins else None

    def _cors(self) -> None:
        origin = self._allowed_origin()
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def set_default_headers(self):
        super().set_default_headers()
        # also when an error clears the headers (the first call comes before initialize)
        self._cors()

    def options(self, *args, **kwargs):
        if self._allowed_origin():
            self.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
            self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    # ---------------------------------------------------------------- answers
    def write_error(self, status_code, **kwargs):
        """Every error as HuBMAP's ``{"success": false, "message"}``. uws-hub's refusals of
        a state (409) or of values (422) are HuBMAP's client errors (400)."""
        exception = kwargs.get("exc_info", (None, None, None))[1]
        message = None
        if isinstance(exception, (HubMAPError, UWSError)):
            message = exception.message
        elif isinstance(exception, web.HTTPError) and exception.log_message:
            message = exception.log_message % exception.args if exception.args else exception.log_message
        if isinstance(exception, UWSError) and status_code in (409, 422):
            status_code = 400
        if status_code == 405:
            message = f'Method "{self.request.method}" not allowed.'
        if status_code >= 500 and not isinstance(exception, HubMAPError):
            message = "A server error occurred."
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Token")
        self.finish(json.dumps(failure(message or responses.get(status_code, "Error"))))

    def answer(self, body: dict[str, Any]) -> None:
        self.write_json(body)

    def json_body(self, invalid: str = "Invalid JSON: {}") -> dict[str, Any]:
        """The body as a JSON object, whatever its Content-Type (HuBMAP's server reads it so)."""
        try:
            body = json.loads(self.request.body or b"")
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
            raise HubMAPError(400, invalid.format(e)) from None
        if not isinstance(body, dict):
            raise HubMAPError(400, invalid.format("expected a JSON object"))
        return unicode_text(body)

    # ---------------------------------------------------------------- lookups
    @property
    def caller(self):
        """The user making the request (HuBMAP's objects all belong to users)."""
        if getattr(self.current_user, "kind", None) != "user":
            raise HubMAPError(400, "Only users have workspaces here; use a user's token.")
        return self.current_user.orm_user

    def workspace(self, workspace_id: str, scope: str = READ_WORKSPACES, *, grantees: bool = True) -> Workspace:
        """The workspace, if this request may act on it with ``scope``; HuBMAP's 404 otherwise."""
        try:
            return self.find_workspace(workspace_id, scope, grantees=grantees)
        except NotFound:
            raise HubMAPError(404, f"Workspace {workspace_id} not found for user.") from None

    def job(self, job_id: str, scope: str = READ_WORKSPACES) -> Job:
        try:
            return self.find_job(job_id, scope)
        except NotFound:
            raise HubMAPError(404, f"Job {job_id} not found for user.") from None

    def offered_job_types(self) -> dict[str, str]:
        """HuBMAP job type id -> uws-hub job type, of the interactive job types this hub has
        (HuBMAP's jobs are servers the portal opens)."""
        names = {name: jt.display_name or name for name, jt in self.uws.job_types.items() if jt.interactive}
        return job_type_ids(self.compat.job_type_ids, names)

    async def wait_for_stop(self, ws: Workspace, scope: str, *, grantees: bool = True) -> Workspace:
        """Let a stop of the workspace's job finish first, up to ``stop_wait_seconds``;
        then the workspace, found again with ``scope`` (:meth:`workspace`).

        HuBMAP's portal renews a session with a stop and, at once, a start
        (and may delete right after a stop); uws-hub runs one job per
        workspace, so the start or delete waits for the stop it follows. A
        job that is not being stopped is not waited for. The request's rights
        are asked again after the wait, as a new request would ask them: an
        editor whose share was revoked meanwhile launched a job as themselves.
        """
        active = Job.active_in(self.db, ws.id)
        if active is None or active.target != "stopped":
            return ws
        job_id = active.id
        self.log.info("%s %s waits for job %s to stop", self.request.method, self.request.path, job_id)
        events = self.uws.events
        sub = events.subscribe(lambda event: event["kind"] == "job" and event["job_id"] == job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.compat.stop_wait_seconds
        try:
            while Job.active_in(self.db, ws.id) is not None and loop.time() < deadline and not sub.closed.is_set():
                await sub.next_batch(timeout=deadline - loop.time())
        finally:
            events.unsubscribe(sub)
        return self.workspace(str(ws.id), scope, grantees=grantees)

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)
