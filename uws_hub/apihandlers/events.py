"""REST API: live events of jobs and workspaces.

``GET /hub/api/events`` is a server-sent-events stream, ``/hub/api/events/ws``
a WebSocket; both take the same tokens and cookies as the rest of the API
(browsers pass the XSRF token as ``?_xsrf=``), show only events of
workspaces the caller may read, filter on ``workspace`` and ``job``, and
resume after ``last_event_id`` (or the ``Last-Event-ID`` header that
EventSource sends when it reconnects): missed events are replayed from the
database, then the stream goes live, with no gap and no repeats. A stream whose
caller changed (token deleted, user deleted, roles or admin flag changed) ends
within ``UWSHub.stream_recheck_seconds``; the reader reconnects and is authorized afresh.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jupyterhub import orm as hub_orm
from sqlalchemy import select
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .. import access
from ..errors import BadRequest
from ..events.bus import Subscription, event_model
from ..orm import Event, Job, Workspace
from ..scopes import READ_WORKSPACES, requires
from ..slots import reader_of
from .base import UWSAPIHandler, parse_id

REPLAY_BATCH = 500
#: kernel send buffer of a stream's socket: with the per-subscriber queue, what
#: a reader that stops reading can make the hub hold (the kernel would grow it to MBs)
SEND_BUFFER_BYTES = 16 * 1024


@dataclass(frozen=True)
class EventFilter:
    workspace_id: int | None
    job_id: int | None
    after: int | None


if TYPE_CHECKING:  # mixed into UWSAPIHandlers, the WebSocket one before WebSocketHandler
    _StreamBase = UWSAPIHandler
else:
    _StreamBase = object


class EventStreamMixin(_StreamBase):
    """What both streams share: the filter, who may see what, replay, subscription."""

    def event_filter(self) -> EventFilter:
        workspace = self.get_argument("workspace", None)
        job = self.get_argument("job", None)
        # both bounded before the stream starts (past SQL's BIGINT the replay query
        # failed after the headers, or in the WebSocket's task); the parameter wins
        given = self.resume_points("last_event_id")
        after = given[0] if given else None
        return EventFilter(
            workspace_id=parse_id(workspace, "workspace") if workspace is not None else None,
            job_id=parse_id(job, "job") if job is not None else None,
            after=after,
        )

    def _matches(self, f: EventFilter, event: dict) -> bool:
        return (f.workspace_id is None or event["workspace_id"] == f.workspace_id) and (
            f.job_id is None or event["job_id"] == f.job_id
        )

    def acceptor(self, f: EventFilter):
        """The subscription's test: matches the filter and the caller may read it.

        What the caller's scopes allow is cached per owner, and what shares
        allow per workspace until the shares change (``sharing.version``), both
        for at most ``UWSHub.stream_recheck_seconds`` (group membership, which scope filters
        and shares with groups name, can change without uws-hub knowing); the
        scopes themselves are checked as often (:meth:`UWSAPIHandler.watch_caller`).

        The events the stream is most likely to carry are decided now, while it
        subscribes (see :meth:`_first_subjects`), not at the first of them: that one
        is offered in the commit that records it, often a launch's, whose request
        and start wait for the look-ups (about 2 ms of the hub's loop).
        """
        visible: dict[int, tuple[float, bool]] = {}
        shared: dict[int, tuple[int, float, bool]] = {}
        sharing = self.settings["uws"].sharing
        every = self.settings["uws"].stream_recheck_seconds

        def allowed(owner_id: int, ws_id: int | None) -> bool:
            now = time.monotonic()
            seen = visible.get(owner_id)
            if seen is None or now - seen[0] > every:
                # events are published from the hub session's after-commit hook, where that
                # session cannot query (an owner it does not hold would raise): look the
                # owner up, as the shares below, in a session of its own
                with sharing.lookup_session() as db:
                    owner = db.get(hub_orm.User, owner_id)
                    seen = visible[owner_id] = (now, owner is not None and access.may(self, READ_WORKSPACES, owner))
            if seen[1]:
                return True
            if ws_id is None:
                return False
            cached = shared.get(ws_id)
            if cached is None or cached[0] != sharing.version or now - cached[1] > every:
                with sharing.lookup_session() as db:
                    may_share = access.shared_may(self, READ_WORKSPACES, ws_id, db=db)
                cached = shared[ws_id] = (sharing.version, now, may_share)
            return cached[2]

        def accept(event: dict) -> bool:
            return self._matches(f, event) and allowed(event["owner_id"], event["workspace_id"])

        for owner_id, ws_id in self._first_subjects(f):
            allowed(owner_id, ws_id)
        return accept

    def _first_subjects(self, f: EventFilter) -> list[tuple[int, int | None]]:
        """(owner id, workspace id) of the events a new stream most likely carries first: the
        filter's workspace (or job's), else the caller's own workspaces. Only which
        answers :meth:`acceptor` looks up first; none of them is an event."""
        if f.workspace_id is not None:
            owner_id = self.db.scalar(select(Workspace.owner_id).where(Workspace.id == f.workspace_id))
            return [] if owner_id is None else [(owner_id, f.workspace_id)]
        if f.job_id is not None:
            row = self.db.execute(select(Job.owner_id, Job.workspace_id).where(Job.id == f.job_id)).first()
            return [] if row is None else [(row.owner_id, row.workspace_id)]
        user = self.current_user
        return [(user.id, None)] if getattr(user, "kind", None) == "user" else []

    def missed(self, f: EventFilter) -> list[dict]:
        """Stored events after ``f.after`` that the caller may see, oldest first (one batch)."""
        where = access.workspace_clause(self, READ_WORKSPACES, Event.owner_id, Event.workspace_id) & (
            Event.id > f.after
        )
        if f.workspace_id is not None:
            where &= Event.workspace_id == f.workspace_id
        if f.job_id is not None:
            where &= Event.job_id == f.job_id
        rows = self.db.scalars(select(Event).where(where).order_by(Event.id).limit(REPLAY_BATCH))
        return [event_model(ev) for ev in rows]

    def subscribe(self, f: EventFilter) -> Subscription:
        stream = self.request.connection.stream
        if stream is not None and stream.socket is not None:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sub = self.settings["uws"].events.subscribe(self.acceptor(f), replays=True)
        self.watch_caller(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.settings["uws"].events.unsubscribe(sub)

    async def batches(self, sub: Subscription, f: EventFilter, timeout: float) -> AsyncIterator[list[dict]]:
        """What to send, in order, once each: the stored events after ``f.after``,
        then live ones; after a lag (the subscriber's queue was full), what it
        missed, from the database. ``[]`` after ``timeout`` seconds without events."""
        last = f.after
        replay = last is not None
        while not sub.closed.is_set():
            if replay or sub.lagging:
                replay = False
                last = sub.catch_up(last)
                while last is not None:
                    batch = self.missed(EventFilter(f.workspace_id, f.job_id, last))
                    if batch:
                        last = batch[-1]["id"]
                        yield batch
                    if len(batch) < REPLAY_BATCH:
                        break
                continue
            batch = []
            for event in await sub.next_batch(timeout):
                if event["id"] is None:
                    batch.append(event)  # progress messages: not stored, never replayed
                elif last is None or event["id"] > last:
                    batch.append(event)
                    last = event["id"]
            if batch or not (sub.lagging or sub.closed.is_set()):
                yield batch

    async def sent(self, written: asyncio.Future) -> bool:
        """Wait until the reader took what was written; False if it took nothing for
        ``UWSHub.event_stream_stall_seconds`` (the stream is then dropped)."""
        stall = self.settings["uws"].events.stall_seconds
        done, _ = await asyncio.wait({written}, timeout=stall or None)
        if written in done:
            written.result()  # a closed stream raises
            return True
        self.log.warning("Dropping an event subscriber that took nothing for %g s", stall)
        return False


class EventsAPIHandler(EventStreamMixin, UWSAPIHandler):
    """Server-sent events."""

    keepalive_seconds = 15.0

    def on_connection_close(self):
        sub = getattr(self, "_subscription", None)
        if sub is not None:
            self.unsubscribe(sub)

    def _write_event(self, event: dict) -> None:
        # transient events (progress messages) have no id: EventSource keeps the last one
        id_line = f"id: {event['id']}\n" if event["id"] is not None else ""
        self.write(f"{id_line}event: {event['kind']}\ndata: {json.dumps(event)}\n\n")

    @requires(READ_WORKSPACES)
    async def get(self):
        f = self.event_filter()
        with self.stream_slot():
            await self._stream(f)

    async def _stream(self, f: EventFilter) -> None:
        # subscribe before replaying, so nothing falls between the two
        sub = self._subscription = self.subscribe(f)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        last = f.after
        try:
            # a first byte: node configurable-http-proxy holds the response's headers
            # back until the body starts, which would delay the client's open by a keepalive
            self.write(": connected\n\n")
            await self.flush()
            async for batch in self.batches(sub, f, self.keepalive_seconds):
                if not batch:
                    self.write(": keepalive\n\n")
                for event in batch:
                    self._write_event(event)
                    last = event["id"] if event["id"] is not None else last
                if not await self.sent(self.flush()):
                    message = {"message": "Too far behind; reconnect with the last event id", "last_event_id": last}
                    self.write(f"event: overflow\ndata: {json.dumps(message)}\n\n")
                    break
        except StreamClosedError:
            pass
        finally:
            self.unsubscribe(sub)
        if not self._finished:
            self.finish()


class EventsWebSocketHandler(EventStreamMixin, WebSocketHandler, UWSAPIHandler):
    """The same events over a WebSocket: one JSON message per event."""

    _subscription: Subscription | None = None
    _pump: asyncio.Task | None = None
    #: who holds the stream's slot (``UWSHub.max_streams_per_user``), until it closes
    _reader: str | None = None

    @requires(READ_WORKSPACES)
    async def get(self, *args, **kwargs):
        self._filter = self.event_filter()
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            # tornado would answer a plain 400 page; the API's errors are JSON
            raise BadRequest("This is a WebSocket endpoint: connect with a WebSocket (Upgrade: websocket)")
        await WebSocketHandler.get(self, *args, **kwargs)

    def take_stream_slot(self) -> bool:
        """A slot of ``UWSHub.max_streams_per_user`` for this WebSocket, given back when it
        closes; over it, the WebSocket is closed with 1013 (try again later: its 429)."""
        reader = reader_of(self.current_user)
        if not self.uws.streams.take(reader):
            self.close(1013, "too many event streams and log follows open (UWSHub.max_streams_per_user)")
            return False
        self._reader = reader
        return True

    def open(self):
        if self.take_stream_slot():
            self._subscription = self.subscribe(self._filter)
            self._pump = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        sub, f = self._subscription, self._filter
        assert sub is not None  # subscribed in open()
        last = f.after
        try:
            async for batch in self.batches(sub, f, 30):
                for event in batch:
                    if not await self.sent(self.write_message(json.dumps(event))):
                        # not waited for: the reader takes nothing
                        self.write_message(json.dumps({"kind": "overflow", "last_event_id": last}))
                        self.close(1008, "too far behind; reconnect with the last event id")
                        return
                    last = event["id"] if event["id"] is not None else last
            if self.caller_changed:
                self.close(1008, "your access changed: reconnect")
        except (WebSocketClosedError, StreamClosedError):
            pass

    def on_message(self, message):
        """Clients only listen; messages from them are ignored."""

    def on_close(self):
        if self._reader is not None:
            self.uws.streams.give_back(self._reader)
            self._reader = None
        if self._subscription is not None:
            self.unsubscribe(self._subscription)
        if self._pump is not None:
            self._pump.cancel()


default_handlers = [
    (r"/api/events", EventsAPIHandler),
    (r"/api/events/ws", EventsWebSocketHandler),
]
