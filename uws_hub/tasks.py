"""Every background task of the hub, in one place: started by the app, drained at shutdown.

Services never start tasks: they expose coroutines (one step of a loop, a
worker, a sender), and the app hands them to one :class:`TaskPool`
(dask-gateway's ``TaskPool``, in small). The pool runs

- **loops** (:meth:`TaskPool.every`): a step every few seconds, forever; a
  failing step is logged (and its database session rolled back) and the loop
  goes on; jitter keeps loops started together from firing together;
- **workers** (:meth:`TaskPool.run`): a coroutine that runs until cancelled
  (the reconciler's workers, the mail sender);
- **helpers** (:meth:`TaskPool.spawn`): one piece of work started by a
  reconciler step that outlives the step (a server's start or stop, a copy, a
  deletion), kept so that shutdown cancels and awaits it too;
- **closers** (:meth:`TaskPool.on_close`): what the plug-ins hold open (the
  shared SLURM poller), closed last.

:meth:`TaskPool.close` cancels everything and waits for it, so that nothing
the hub started outlives ``UWSHub.cleanup``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.orm import Session


class TaskPool:
    def __init__(self, log: logging.Logger, db: Session | None = None):
        self.log = log
        #: rolled back after a failing step, so the next one starts from a clean session
        self.db = db
        self._tasks: set[asyncio.Task] = set()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
        """Run ``coro`` in a task that shutdown cancels and awaits."""
        if self.closed:
            coro.close()
            raise RuntimeError("The hub is shutting down: no new background work")
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def run(self, name: str, func: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task:
        """Run a worker (a coroutine that runs until cancelled)."""
        return self.spawn(func(), name)

    def every(
        self, name: str, step: Callable[[], Awaitable[Any]], interval: float, *, jitter: float = 0.1
    ) -> asyncio.Task | None:
        """Run ``step`` now and then every ``interval`` seconds (0: never)."""
        if interval <= 0:
            return None
        return self.spawn(self._loop(name, step, interval, jitter), name)

    async def _loop(self, name: str, step: Callable[[], Awaitable[Any]], interval: float, jitter: float) -> None:
        while True:
            await self.guarded(name, step)
            await asyncio.sleep(interval * (1 + random.uniform(-jitter, jitter)))

    async def guarded(self, name: str, step: Callable[[], Awaitable[Any]]) -> bool:
        """Run one step; log a failure (and roll back) instead of raising. Returns whether it worked."""
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.db is not None:
                self.db.rollback()
            self.log.exception("Error in background task %s; continuing", name)
            return False
        return True

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Call ``closer`` at shutdown, after every task has ended."""
        self._closers.append(closer)

    async def close(self) -> None:
        """Cancel every task and wait for them; then run the closers."""
        self.closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                self.log.exception("Closing %s failed", closer)
        self._closers = []
