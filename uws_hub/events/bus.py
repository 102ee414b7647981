"""Events: every job and workspace change, stored, then published to subscribers.

An event is written in the same transaction as the change it records
(:meth:`EventBus.record`) and published only once that transaction commits,
so subscribers never see a change that was rolled back, and a client that
reconnects can replay from the database whatever it missed (event ids are
increasing).

Each subscriber has a bounded queue. One that stops reading is dropped when
its queue is full (it is told so and can resume from its last event id), so
a slow consumer cannot grow the hub's memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from ..orm import Event, isoformat, utcnow

_PENDING = "uws_events_pending"
_FLUSHED = "uws_events_flushed"


def event_model(ev: Event) -> dict[str, Any]:
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

    def __init__(self, accept: Callable[[dict], bool], max_queue: int):
        self.accept = accept
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=max_queue)
        self.overflowed = False
        self.closed = asyncio.Event()

    def offer(self, event: dict) -> bool:
        """Queue ``event`` if accepted; False if the subscriber is too far behind."""
        if not self.accept(event):
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.closed.set()
            return False
        return True

    async def next_batch(self, timeout: float) -> list[dict]:
        """Every queued event (waiting for at least one), or [] after ``timeout``
        seconds or once dropped. Taking them all at once lets a reader keep up
        with bursts (one write and one flush for many events)."""
        if self.overflowed:
            return []
        if self.queue.empty():
            get = asyncio.ensure_future(self.queue.get())
            closed = asyncio.ensure_future(self.closed.wait())
            done, _ = await asyncio.wait({get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if get not in done:
                get.cancel()
                return []
            batch = [get.result()]
        else:
            batch = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch


class EventBus:
    def __init__(self, log: logging.Logger, max_queue: int = 1000):
        self.log = log
        self.max_queue = max_queue
        self._subscriptions: set[Subscription] = set()
        #: called with every published event, before the subscribers (e.g. the mailer);
        #: they must not block
        self.listeners: list[Callable[[dict], None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    # ---------------------------------------------------------------- subscribers
    def subscribe(self, accept: Callable[[dict], bool]) -> Subscription:
        sub = Subscription(accept, self.max_queue)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        sub.closed.set()

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
    ) -> None:
        """Record a change of a job, a workspace or a share, or a notification (see :meth:`record`)."""
        self.record(
            db,
            Event(
                kind=kind,
                owner_id=owner_id,
                workspace_id=workspace_id,
                job_id=job_id,
                actor=actor,
                status=status,
                previous=previous,
                reason=reason,
                data=data or {},
            ),
        )

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
        for event in db.info.pop(_FLUSHED, []):
            self.publish(event)

    @staticmethod
    def _after_rollback(db: Session, previous_transaction) -> None:
        db.info.pop(_PENDING, None)
        db.info.pop(_FLUSHED, None)
