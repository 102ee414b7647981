"""A de-duplicating work queue with per-key exponential backoff.

The reconciler's queue, after dask-gateway-server's ``workqueue.py``: a key
is in the queue at most once; a key put while it is being processed is
processed again afterwards (nothing is missed, nothing runs twice at once);
a key whose reconciliation failed comes back after an increasing delay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueueClosed(Exception):
    pass


class WorkQueue(Generic[K]):
    def __init__(self, backoff_base: float = 0.1, backoff_max: float = 60.0):
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._waiters: deque[asyncio.Future] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, key: K) -> None:
        """Queue ``key`` now (once, however often it is put)."""
        if self.closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._wake()

    def put_after(self, key: K, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds (an earlier put wins)."""
        if self.closed or key in self._queued or key in self._timers:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def put_backoff(self, key: K) -> float:
        """Queue ``key`` again after a delay that doubles with each failure in a row.

        A put while the failed step ran is dropped: the step itself often wakes its key
        (a SLURM job's state asked of the poller wakes it), which queued it again at
        once, so a step failing every time ran back to back, the hub busy with it and
        its traceback every few milliseconds, whatever its backoff said. A put after
        this one still queues it at once (a change seen since)."""
        self._dirty.discard(key)
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self.backoff_max, self.backoff_base * 2**n)
        self.put_after(key, delay)
        return delay

    def reset_backoff(self, key: K) -> None:
        self._failures.pop(key, None)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.put(key)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self) -> K:
        """The next key to process; call :meth:`task_done` when finished with it."""
        while not self._queue:
            if self.closed:
                raise WorkQueueClosed()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def task_done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.put(key)

    def close(self) -> None:
        self.closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
