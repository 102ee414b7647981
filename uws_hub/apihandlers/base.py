"""The base of uws-hub's REST API handlers: JupyterHub's APIHandler plus
request-body validation, workspace/job lookup with scope checks, and JSON output.

Handlers stay thin: parse (pydantic, ``extra='forbid'``), check scopes, call
a service, write JSON. Errors are JupyterHub's JSON errors
(``{"status": ..., "message": ...}``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from jupyterhub import orm as hub_orm
from jupyterhub import scopes as hub_scopes
from jupyterhub.apihandlers.base import APIHandler
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from tornado import httputil, web

from .. import access
from ..errors import BadRequest, Forbidden, NotFound, TooManyRequests, Unprocessable, UWSError
from ..events.bus import Subscription
from ..filethreads import serve
from ..hubhandlers import NUL_IN_URL
from ..inputs import MAX_ID, MAX_OFFSET, MAX_SQL_INT, query_int, shorten, unicode_text
from ..orm import Job, Workspace
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES
from ..services import Services
from ..slots import reader_of

M = TypeVar("M", bound=BaseModel)

#: ``UWS-Authorization: Token <token>``, the header of the older HuBMAP workspaces server
UWS_AUTH_HEADER = "UWS-Authorization"

#: when a reader at ``UWSHub.max_streams_per_user`` is told to try again (seconds)
STREAM_RETRY_SECONDS = 10


def too_many_streams(most: int) -> TooManyRequests:
    """The refusal of a long request over ``UWSHub.max_streams_per_user``."""
    return TooManyRequests(
        f"You hold {most} event streams and log follows open already, the most at once"
        " (UWSHub.max_streams_per_user); close one, or try again later",
        STREAM_RETRY_SECONDS,
    )


_uws_auth_pat = re.compile(r"^(?:token|bearer)\s+([^\s]+)$", flags=re.IGNORECASE)


def validation_message(e: ValidationError) -> str:
    """One readable line per problem: ``field: what is wrong``."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "Invalid request: " + "; ".join(parts)


def parse_id(value: str, what: str) -> int:
    """A row's id from the URL; anything that cannot be one is not found (404).

    Bounded by the id columns (SQL ``INTEGER``): PostgreSQL refuses to compare
    them with a larger number, which was a 500 for any id past 2**31.
    """
    if value.isascii() and value.isdigit() and len(value) <= 10 and 1 <= int(value) <= MAX_ID:
        return int(value)
    raise NotFound(f"No such {what}: {shorten(value)!r}")


class UWSAPIHandler(APIHandler):
    #: a long request's caller changed while it was open (:meth:`watch_caller`)
    caller_changed = False
    #: asking again who holds a long request open (:meth:`caller_unchanged`): no activity
    _rechecking = False

    @property
    def uws(self) -> Services:
        return self.settings["uws"]

    async def prepare(self):
        await super().prepare()
        if self.current_user is not None:
            # the request's file work runs in its caller's share of the file threads
            serve(self.uws.file_threads, reader_of(self.current_user))

    @property
    def reader_id(self) -> int | None:
        """The id of the user making this request (None for a service)."""
        user = self.current_user
        return user.id if user is not None and user.kind == "user" else None

    def calling_user(self, what: str) -> hub_orm.User:
        """The user making the request, for what only users have (``what``: "receive shares")."""
        if self.current_user.kind != "user":
            raise BadRequest(f"Only users {what}; use a user's token")
        return self.current_user.orm_user

    @property
    def actor(self) -> str:
        """Who makes this request, for the event log (a user's or a service's name)."""
        return self.current_user.name

    def get_json_body(self) -> Any:
        """JupyterHub's, refusing a body that is no Unicode text (:func:`~uws_hub.inputs.unicode_text`)."""
        return unicode_text(super().get_json_body())

    def write_error(self, status_code: int, **kwargs) -> None:
        """JupyterHub's JSON error, always with a string message.

        JupyterHub writes ``"message": null`` for an error raised without a
        message (tornado's 405 for a method a route does not take, a bare
        ``HTTPError(404)``); the API promises a string, so the status's
        reason phrase ("Method Not Allowed") is the message then. A refusal
        that speaks of the reader is written to them (:meth:`UWSError.message_for`).
        """
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, UWSError):
            # a refusal that speaks of the reader says "you"
            user = getattr(self, "_jupyterhub_user", None)
            error.args = (error.message_for(user.name if user is not None else None),)
        if isinstance(error, web.HTTPError) and not error.log_message and not error.reason:
            error.reason = httputil.responses.get(status_code, "Unknown Error")
        body = getattr(self.request, "_body_future", None)
        if body is not None and not body.done():
            # a streamed body refused before it was read: tornado closes the connection
            # after this answer without saying so, and the proxy, which keeps connections
            # alive, could send its next request on it and answer that one 503
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        """End a response whose headers are out quietly when the hub stops under it.

        A stream (the events, a followed log, a download) still open when the hub
        shuts down has its task cancelled; tornado then tries to send a 500, cannot
        once the headers are sent, and logs an ERROR for each stream, a false alarm
        at every restart. The reader reconnects (events and logs resume from their
        last id). Any other error is tornado's as before.
        """
        task = asyncio.current_task()
        if self._headers_written and task is not None and task.cancelling():
            if not self._finished:
                self.finish()
            return
        super().send_error(status_code, **kwargs)

    def get_token(self) -> hub_orm.APIToken | None:
        """The request's API token's row, as JupyterHub's ``get_token`` (once a request),
        found through :class:`uws_hub.tokenids.TokenIds`: one light query."""
        if "_uws_token" not in self.__dict__:
            token = self.get_auth_token()
            self._uws_token = None if token is None else self.uws.token_ids.find(self.db, token)
        return self._uws_token

    async def caller_unchanged(self) -> bool:
        """Whether this request's credentials still stand for the caller they did when it
        began, with the same scopes.

        JupyterHub authenticates a request once, at its start; a stream lasts as long as
        its reader wants, so it asks again every ``UWSHub.stream_recheck_seconds``, through
        JupyterHub's own lookup (token, then cookie, and the login's refresh): a token
        deleted or expired, a user deleted or disabled or whose login expired, roles, groups or the admin
        flag changed, and the answer is False: the stream ends, and its reader, who
        reconnects, is authorized afresh or refused. Any failure to find out is False too;
        after a database error the hub's session, which every request shares, is rolled
        back, as JupyterHub's ``prepare`` does (else it refuses every query until then).
        """
        before, scopes = self.current_user, self.expanded_scopes
        for cached in ("_jupyterhub_user", "_uws_token", "_refreshed_users"):
            self.__dict__.pop(cached, None)
        self._rechecking = True
        try:
            caller = await self.get_current_user()
            if caller is None or before is None or (caller.kind, caller.id) != (before.kind, before.id):
                return False
            token = self.get_token()
            return hub_scopes.get_scopes_for(token if token is not None else caller) == scopes
        except SQLAlchemyError as e:
            self.db.rollback()
            self.log.error("Could not check again who holds a stream open (database error: %s); ending it", e)
            self._jupyterhub_user = None
            return False
        except Exception:
            self.log.exception("Could not check again who holds a stream open; ending it")
            self._jupyterhub_user = None
            return False
        finally:
            self._rechecking = False

    async def still_reads(self, workspace_id: int) -> bool:
        """Whether the caller (:meth:`caller_unchanged`) may still read the workspace."""
        if not await self.caller_unchanged():
            return False
        ws = Workspace.find(self.db, workspace_id)
        return ws is not None and access.may_workspace(self, READ_WORKSPACES, ws)

    async def still_reads_output(self, job_id: int) -> bool:
        """Whether the caller (:meth:`caller_unchanged`) may still read the job's log."""
        if not await self.caller_unchanged():
            return False
        job = Job.find(self.db, job_id)
        return job is not None and access.may_read_job_output(self, job)

    def reads_rechecked(self, workspace_id: int) -> Callable[[], Awaitable[bool]]:
        """For a download of a workspace's files that lasts as long as its reader likes (a
        zip, a large file): :meth:`rechecked` with :meth:`still_reads`."""
        return self.rechecked(lambda: self.still_reads(workspace_id))

    def rechecked(self, still: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        """For a download that lasts as long as its reader likes (a zip, a large file, a
        job's log): a check before each piece sent, true while ``still()`` was, asked again
        every ``UWSHub.stream_recheck_seconds``: who may no longer read it (a share
        revoked, a token deleted, a login ended) gets no more."""
        loop = asyncio.get_running_loop()
        every = self.uws.stream_recheck_seconds
        recheck = loop.time() + every

        async def check() -> bool:
            nonlocal recheck
            if loop.time() < recheck:
                return True
            recheck = loop.time() + every
            return await still()

        return check

    async def send_piece(self, allowed: Callable[[], Awaitable[bool]], piece: bytes) -> bool:
        """Send ``piece`` of a download if its reader may still read it (``allowed``, from
        :meth:`rechecked`), else cut the download off: not ended, so that it fails (shorter
        than its length) and never looks whole. Whether it was sent."""
        if not await allowed():
            self.request.connection.close()
            return False
        self.write(piece)
        await self.flush()
        return True

    def _record_activity(self, obj, timestamp=None):
        """JupyterHub's record of a user's (and token's) activity, but not for a recheck
        (:meth:`caller_unchanged`): a stream left open in a forgotten tab is no activity,
        and would have kept its user active, never culled as idle, for as long as it stays."""
        if self._rechecking:
            return False
        return super()._record_activity(obj, timestamp)

    def stream_slot(self):
        """One of the caller's ``UWSHub.max_streams_per_user`` long requests (event streams,
        log follows) for the block, or a 429 (:mod:`uws_hub.slots`)."""
        return self.uws.streams.hold(reader_of(self.current_user), too_many_streams)

    def watch_caller(self, sub: Subscription) -> None:
        """End ``sub`` once its caller changed (:meth:`caller_unchanged`, asked every
        ``UWSHub.stream_recheck_seconds`` while it is open), with what it queued meanwhile:
        whoever lost a grant gets nothing more through it. ``caller_changed`` then says why
        it ended."""

        every = self.uws.stream_recheck_seconds

        async def watch() -> None:
            while not sub.closed.is_set():
                try:
                    await asyncio.wait_for(sub.closed.wait(), every)
                    return
                except TimeoutError:
                    pass
                if not await self.caller_unchanged():
                    self.caller_changed = True
                    sub.discard_queued()
                    self.uws.events.unsubscribe(sub)

        # held: the event loop keeps only weak references to tasks
        self._caller_watch = asyncio.ensure_future(watch())

    def get_auth_token(self):
        """The token of ``Authorization: token …`` (JupyterHub's header), else of
        ``UWS-Authorization: Token …`` (clients of the older HuBMAP workspaces
        server). Both carry JupyterHub tokens, with the same scopes."""
        token = super().get_auth_token()
        if token is None:
            match = _uws_auth_pat.match(self.request.headers.get(UWS_AUTH_HEADER, ""))
            token = match.group(1) if match else None
        return token

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Every path and query argument, refused with a 400 if it holds a NUL.

        No name, id or path holds one, PostgreSQL cannot compare with one (a
        500), and the file system refuses one; tornado would silently turn it
        into a space in query arguments.
        """
        decoded = super().decode_argument(value, name)
        if "\x00" in decoded:
            raise BadRequest(NUL_IN_URL)
        return decoded

    def get_api_pagination(self) -> tuple[int, int]:
        """``offset`` and ``limit`` of every list, validated (400 when out of bounds).

        JupyterHub's own parser takes absolute values (``offset=-1`` was
        offset 1) and no upper bound (``offset=2**63`` overflowed the
        database: a 500). A limit above ``c.JupyterHub.api_page_max_limit``
        is that maximum, as in JupyterHub's API; ``_pagination`` says so.
        """
        max_limit = self.settings["api_page_max_limit"]
        # JupyterHub's rule: the full page unless the client says it follows pages
        default_limit = self.settings["api_page_default_limit"] if self.accepts_pagination else max_limit
        offset = query_int(self.get_argument("offset", None), "offset", default=0, minimum=0, maximum=MAX_OFFSET)
        limit = query_int(
            self.get_argument("limit", None), "limit", default=default_limit, minimum=1, maximum=MAX_OFFSET
        )
        return offset, min(limit, max_limit)

    def status_filter(self, statuses: Iterable[str], *, many: bool = True) -> list[str] | None:
        """The statuses a list asks for with ``?status=`` (None: no filter); 400 if unknown.

        ``many``: a comma-separated list (``?status=pending,running``), else one.
        """
        value = self.get_argument("status", None)
        if value is None:
            return None
        allowed = [str(getattr(s, "value", s)) for s in statuses]
        wanted = [s for s in value.split(",") if s] if many else [value]
        if not wanted or any(s not in allowed for s in wanted):
            raise BadRequest(f"Unknown status {value!r}; {'one or more' if many else 'one'} of {allowed}")
        return wanted

    def resume_points(self, parameter: str) -> list[int]:
        """Where a stream resumes: ``?<parameter>=`` and the ``Last-Event-ID`` header (which
        EventSource sends when it reconnects), those given, in that order; 400 if invalid."""
        return [
            query_int(value, name, default=0, minimum=0, maximum=MAX_SQL_INT)
            for value, name in (
                (self.get_argument(parameter, None), parameter),
                (self.request.headers.get("Last-Event-ID"), "The Last-Event-ID header"),
            )
            if value is not None
        ]

    def parse_body(self, model: type[M]) -> M:
        """The JSON body validated against ``model`` (400 if missing or not JSON, 422 if invalid).

        A missing body is not taken for ``{}``: a PUT of a quota without one
        would have silently removed the override. Strict: JSON's types are
        taken as they are (``false`` or ``"5"`` is not a number of GPUs).
        """
        body = self.get_json_body()
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        try:
            return model.model_validate(body, strict=True)
        except ValidationError as e:
            raise Unprocessable(validation_message(e)) from None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    @property
    def public_origin(self) -> str:
        """Where the hub answers browsers and clients: its public URL's origin, else this request's."""
        public = self.settings.get("public_url")
        if public:
            return f"{public.scheme}://{public.netloc}"
        return f"{self.request.protocol}://{self.request.host}"

    async def fresh_launcher(self, ws: Workspace) -> hub_orm.User:
        """Who a launch in ``ws`` by this request runs as (:func:`uws_hub.access.launcher_of`),
        with a fresh login, as JupyterHub refreshes a user before a spawn: the job gets the
        launcher's auth state (tokens; never the owner's for an editor's job); a 403 if the
        launcher's login has expired."""
        launcher = access.launcher_of(self, ws)
        if self.authenticator.refresh_pre_spawn:
            user = self.users[launcher]
            if await self.refresh_auth(user, force=True) is None:
                raise Forbidden(f"{user.name}'s login has expired; log in again to launch jobs")
        return launcher

    def find_workspace(self, workspace_id: str, scope: str = READ_WORKSPACES, *, grantees: bool = True) -> Workspace:
        """The workspace, if this request may act on it with ``scope`` (see :mod:`uws_hub.access`).

        A workspace the request cannot even read is reported as not found, so
        that ids and names do not leak; one it can read but not act on with
        ``scope`` is a 403 naming the missing scope. ``grantees=False``: only
        the owner's scopes count (renaming, deleting, sharing).
        """
        ws = Workspace.find(self.db, parse_id(workspace_id, "workspace"))
        if ws is None or not access.may_workspace(self, READ_WORKSPACES, ws):
            raise NotFound(f"No such workspace: {workspace_id}")
        if (scope != READ_WORKSPACES or not grantees) and not access.may_workspace(self, scope, ws, grantees=grantees):
            owner_only = " on the owner's workspaces" if not grantees else ""
            raise Forbidden(f"This action requires the scope {scope}{owner_only}")
        if scope == LAUNCH_JOBS:
            # on a workspace (not a job), the launch scope is asked for to launch
            self.authorize_launch(ws)
        return ws

    def authorize_launch(self, ws: Workspace) -> None:
        """403 unless this request may start code in ``ws`` (:func:`uws_hub.access.may_launch`);
        every launch, and every run of a held job, passes here."""
        if not access.may_launch(self, ws, editors_run_code=self.uws.editors_run_code):
            raise Forbidden(access.launch_refusal(ws))

    def authorize_held(self, job: Job) -> None:
        """403 unless this request may run, or change, held ``job``
        (:func:`uws_hub.access.may_run_held`: as the account it runs as)."""
        self.authorize_launch(job.workspace)
        if not access.may_run_held(self, job, editors_run_code=self.uws.editors_run_code):
            raise Forbidden(access.held_refusal(job))

    def find_job(self, job_id: str, scope: str = READ_WORKSPACES) -> Job:
        """The job, with the same rules as :meth:`find_workspace` (on the job's workspace)."""
        job = Job.find(self.db, parse_id(job_id, "job"))
        if job is None or not access.may_workspace(self, READ_WORKSPACES, job.workspace):
            raise NotFound(f"No such job: {job_id}")
        if scope != READ_WORKSPACES and not access.may_workspace(self, scope, job.workspace):
            raise Forbidden(f"This action requires the scope {scope}")
        return job


class UnknownAPIRouteHandler(UWSAPIHandler):
    """Every path under ``/hub/api/`` that no handler takes: a 404 saying which.

    It stands in for JupyterHub's own catch-all (``API404``), whose error
    has no message.
    """

    def check_xsrf_cookie(self):
        pass

    async def prepare(self):
        await super().prepare()
        raise NotFound(f"No such API endpoint: {self.request.method} {shorten(self.request.path, 200)}")
