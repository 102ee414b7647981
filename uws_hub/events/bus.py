"""Events: every job and workspace change, stored, then published to subscribers.

An event is written in the same transaction as the change it records
(:meth:`EventBus.record`) and published only once that transaction commits,
so subscribers never see a change that was rolled back, and a client that
reconnects can replay from the database whatever it missed (event ids are
increasing).

Each subscriber has a bounded queue, so a slow consumer cannot grow the hub's
memory without bound. A subscriber whose queue is full is not dropped: it
*lags*, its queue is emptied, and its stream replays what it missed from the
database (stored events have increasing ids) before it goes live again. A
burst of events, or a hub too busy to write them out for a while, costs a
reader nothing but a query; only a reader that stops taking what is sent is
cut off, by its stream (``UWSHub.event_stream_stall_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert
from sqlalchemy.orm import Session

from ..orm import Event, isoformat, utcnow

_PENDING = "uws_events_pending"
_FLUSHED = "uws_events_flushed"
#: :meth:`EventBus.insert`'s statement, built once (its id comes back)
_INSERT = insert(Event).returning(Event.id)
#: the columns it sets (the id is the database's), None unless given
_NO_VALUES = dict.fromkeys(c.key for c in Event.__table__.columns if c.key != "id")


def event_model(ev: Event | SimpleNamespace) -> dict[str, Any]:
    return {
        "id": ev.id,
        "kind": ev.kind,
        "created_at": isoformat(ev.created_at),
        "owner_id": ev.owner_id,
        "workspace_id": ev.workspace_id,
        "job_id": ev.job_id,
        "actor": ev.actor,
        "status": ev.status,
        "previous": ev.previous,
        "reason": ev.reason,
        "data": ev.data or {},
    }


def transient_event(**fields: Any) -> dict[str, Any]:
    """An event published but not stored (``id`` None: it is not replayed on resume)."""
    event: dict[str, Any] = {
        "id": None,
        "created_at": isoformat(utcnow()),
        "actor": "hub",
        "previous": None,
        "reason": None,
        "data": {},
    }
    event.update(fields)
    return event


class Subscription:
    """One subscriber's bounded queue of events it accepts."""

    def __init__(self, accept: Callable[[dict], bool], max_queue: int, *, replays: bool = False):
        self.accept = accept
        #: the subscriber replays what it missed from the database (:meth:`catch_up`);
        #: one that does not is dropped when its queue is full
        self.replays = replays
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=max_queue)
        #: the queue overflowed: what it missed is in the database (see :meth:`catch_up`)
        self.lagging = False
        #: the id of the first stored event it missed, when it lags
        self.missed_from: int | None = None
        #: what :meth:`next_batch` awaits: done when the queue gets an event, lags, or
        #: the subscription ends
        self._waiter: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()

    def offer(self, event: dict) -> bool:
        """Queue ``event`` if accepted; past the queue's size, lag (a subscriber that
        replays) or return False (one that does not: the bus drops it)."""
        if not self.accept(event) or self.lagging:
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self.replays:
                return False
            # ids increase: the first stored event still queued is the first one missed
            missed = [e["id"] for e in self._drain() if e["id"] is not None]
            self.missed_from = missed[0] if missed else event["id"]
            self.lagging = True
        self._wake()
        return True

    def close(self) -> None:
        """End the subscription (its reader's :meth:`next_batch` returns)."""
        self.closed.set()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _drain(self) -> list[dict]:
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    def discard_queued(self) -> None:
        """Forget what is queued and not yet taken (its reader may no longer see it)."""
        self._drain()

    def catch_up(self, last: int | None) -> int | None:
        """Start receiving live events again after a lag; returns the id to replay after.

        Called before the replay's query: every event published from now on
        is queued, every earlier one is in the database, so the replay and
        the queue leave no gap between them (the overlap is skipped by id).
        """
        self.lagging = False
        if last is None and self.missed_from is not None:
            last = self.missed_from - 1
        self.missed_from = None
        return last

    async def next_batch(self, timeout: float) -> list[dict]:
        """Every queued event (waiting for at least one), or [] after ``timeout``
        seconds, on a lag or once closed (or dropped). Taking them all at once lets a reader
        keep up with bursts (one write and one flush for many events).

        It awaits a future of its own, which the event's publisher completes: its
        reader resumes in the loop's next turn. (Waiting on events through
        ``asyncio.wait`` took three turns, each after whatever else was ready then,
        such as the rest of a stop's cleanup.)"""
        if self.queue.empty() and not self.lagging and not self.closed.is_set():
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        return self._drain()


class EventBus:
    def __init__(self, log: logging.Logger, max_queue: int = 1000, stall_seconds: float = 60.0):
        self.log = log
        self.max_queue = max_queue
        #: how long a stream waits for its reader to take what was sent (0: for ever)
        self.stall_seconds = stall_seconds
        self._subscriptions: set[Subscription] = set()
        #: called with every published event, before the subscribers (e.g. the mailer);
        #: they must not block
        self.listeners: list[Callable[[dict], None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    # ---------------------------------------------------------------- subscribers
    def subscribe(self, accept: Callable[[dict], bool], *, replays: bool = False) -> Subscription:
        """A subscription to the events ``accept`` takes; one that ``replays`` what it
        missed from the database lags instead of being dropped when its queue is full."""
        sub = Subscription(accept, self.max_queue, replays=replays)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        sub.close()

    def publish(self, event: dict) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                self.log.exception("Event listener %s failed", listener)
        for sub in list(self._subscriptions):
            try:
                kept = sub.offer(event)
            except Exception:
                self.log.exception("Event subscriber failed; dropping it")
                kept = False
            if not kept:
                self.log.warning("Dropping an event subscriber %s events behind", self.max_queue)
                self.unsubscribe(sub)

    # ---------------------------------------------------------------- recording
    def record(self, db: Session, ev: Event) -> None:
        """Add ``ev`` to the session; it is published when the session commits."""
        db.add(ev)
        db.info.setdefault(_PENDING, []).append(ev)

    @staticmethod
    def recorded_in_order(db: Session) -> bool:
        """Whether an event inserted now (:meth:`insert`) keeps its place among those of the
        session's transaction: none of them waits for the ORM's flush (its id would come
        after the inserted one's)."""
        return not db.info.get(_PENDING)

    def insert(self, db: Session, values: dict[str, Any]) -> None:
        """Store an event (``values``: its columns', but the id and, if missing, the time)
        now, with an INSERT of its own in the session's transaction, not through the ORM's
        flush; it is published when the session commits, as :meth:`record`'s.

        For what the hub records many times at once (a launch: 200 requests in a burst
        are answered one after the other): the ORM's flush of a new row costs the loop
        about ten times the statement's own time, and making the row's object alone
        (attribute events on every column) as long as the statement: there is none.
        """
        row = {**_NO_VALUES, "created_at": utcnow(), **values}
        row_id = db.connection().execute(_INSERT, row).scalar_one()
        db.info.setdefault(_FLUSHED, []).append(event_model(SimpleNamespace(id=row_id, **row)))

    def change(
        self,
        db: Session,
        kind: str,
        *,
        owner_id: int,
        actor: str,
        status: str | None = None,
        previous: str | None = None,
        reason: str | None = None,
        workspace_id: int | None = None,
        job_id: int | None = None,
        data: dict[str, Any] | None = None,
        at_once: bool = False,
    ) -> None:
        """Record a change of a job, a workspace or a share, or a notification (see :meth:`record`;
        ``at_once``: :meth:`insert`)."""
        values = dict(
            kind=kind,
            owner_id=owner_id,
            workspace_id=workspace_id,
            job_id=job_id,
            actor=actor,
            status=status,
            previous=previous,
            reason=reason,
            data=data or {},
        )
        if at_once:
            self.insert(db, values)
        else:
            self.record(db, Event(**values))

    def attach(self, db: Session) -> None:
        """Publish the events a session records when (and only if) it commits."""
        sa_event.listen(db, "before_commit", self._before_commit)
        sa_event.listen(db, "after_commit", self._after_commit)
        sa_event.listen(db, "after_soft_rollback", self._after_rollback)

    @staticmethod
    def _before_commit(db: Session) -> None:
        pending = db.info.pop(_PENDING, [])
        if pending:
            db.flush()  # assigns ids
            db.info.setdefault(_FLUSHED, []).extend(event_model(ev) for ev in pending)

    def _after_commit(self, db: Session) -> None:
        # in the order of their ids, which is the streams' (an event inserted at once may
        # have been recorded after one the ORM had flushed before it)
        for event in sorted(db.info.pop(_FLUSHED, []), key=lambda event: event["id"]):
            self.publish(event)

    @staticmethod
    def _after_rollback(db: Session, previous_transaction) -> None:
        db.info.pop(_PENDING, None)
        db.info.pop(_FLUSHED, None)
