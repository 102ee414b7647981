"""Background loops: run a coroutine every few seconds, forever, safely.

A loop survives a failing iteration (it logs and goes on), adds jitter so
that loops started together do not fire together, and is cancelled and
awaited when the hub shuts down (dask-gateway's TaskPool, in small).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable


class Loop:
    def __init__(
        self,
        name: str,
        func: Callable[[], Awaitable[None]],
        interval: float,
        log: logging.Logger,
        jitter: float = 0.1,
    ):
        self.name = name
        self.func = func
        self.interval = interval
        self.log = log
        self.jitter = jitter
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.func()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Error in background loop %s; continuing", self.name)
            delay = self.interval * (1 + random.uniform(-self.jitter, self.jitter))
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
