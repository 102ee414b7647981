"""The reconciler: makes every job, workspace and copy match what was asked of it.

After dask-gateway-server's backend: each object has a status (where it is)
and a target (where the user wants it): a job ``running`` or ``stopped``, a
workspace ``ready`` or ``deleted``, an accepted copy ``done``. Requests only
set the target and put the object's key (``("job", id)``) on one
de-duplicating :class:`~uws_hub.workqueue.WorkQueue`; workers take keys off
the queue and take one step towards the target with the steps of the key's
kind (:mod:`uws_hub.jobs.reconcile`, :mod:`uws_hub.workspaces.reconcile`,
:mod:`uws_hub.sharing.copies`). A step that fails is retried with backoff. A
periodic scan puts every unfinished object back on the queue, so whatever
was missed (a hub restart mid-launch, mid-delete or mid-copy, a server that
died, a lost proxy route) is repaired within one interval.

Steps never block a worker for long: work that takes time (a server's start,
removing a tree, copying one) runs as a helper task of the app's
:class:`~uws_hub.tasks.TaskPool`, which puts the key back when it ends (or
takes the object's last step itself: a job's start or stop that worked). A
worker gives the event loop back after every step, so that requests and
events are served between the steps of a burst of keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from sqlalchemy.orm import Session

from .metrics import RECONCILER_STEPS
from .workqueue import WorkQueue, WorkQueueClosed

#: a reconciler key: (kind, id), e.g. ("job", 12)
Key = tuple[str, int]


class Steps(Protocol):
    """What the reconciler needs from one kind of object."""

    #: the kind's name in keys: "job", "workspace", "copy"
    kind: str

    def unfinished(self) -> Iterable[int]:
        """Ids of the objects not yet at their target (the scan queues them)."""

    async def reconcile(self, object_id: int) -> None:
        """One step of this object towards its target."""

    async def after_scan(self) -> None:
        """Repairs that look at all objects at once (proxy routes, orphans)."""


class Reconciler:
    def __init__(
        self,
        queue: WorkQueue[Key],
        steps: Iterable[Steps],
        db: Session,
        log: logging.Logger,
        *,
        workers: int,
        give_way: Callable[[], Awaitable[None]] | None = None,
    ):
        self.queue = queue
        self.steps = {s.kind: s for s in steps}
        #: each kind's step counter (the metric's child, looked up once)
        self._counted = {kind: RECONCILER_STEPS.labels(kind=kind) for kind in self.steps}
        self.db = db
        self.log = log
        self.workers = workers
        #: awaited between two steps of a worker (default: one turn of the event loop)
        self.give_way = give_way or (lambda: asyncio.sleep(0))

    async def worker(self) -> None:
        """Take keys off the queue until it closes (run ``workers`` of these)."""
        while True:
            try:
                key = await self.queue.get()
            except WorkQueueClosed:
                return
            kind, object_id = key
            (self._counted.get(kind) or RECONCILER_STEPS.labels(kind=kind)).inc()
            try:
                await self.steps[kind].reconcile(object_id)
            except Exception:
                self.db.rollback()
                delay = self.queue.put_backoff(key)
                self.log.exception("Reconciling %s %s failed; retrying in %.1f s", kind, object_id, delay)
            else:
                self.queue.reset_backoff(key)
            finally:
                self.queue.task_done(key)
            # give way to the loop's other work (requests, events) between two steps: a
            # step that does not wait (a job that waits in the start line, one whose start
            # is under way) never gives the loop back, and the queue hands out the next key
            # without waiting, so a burst of keys (200 launches) would otherwise be one
            # callback of a quarter to half a second that every request waits behind
            await self.give_way()

    async def scan(self) -> None:
        """Queue every unfinished object of every kind; then each kind's repairs."""
        for steps in self.steps.values():
            for object_id in steps.unfinished():
                self.queue.put((steps.kind, object_id))
        for steps in self.steps.values():
            await steps.after_scan()

    def close(self) -> None:
        """No more keys: the workers end (the app's task pool cancels what they started)."""
        self.queue.close()


def waker(queue: WorkQueue[Key], kind: str) -> Callable[[int], None]:
    """``wake(id)``: put an object of ``kind`` on the reconciler's queue now."""
    return lambda object_id: queue.put((kind, object_id))
