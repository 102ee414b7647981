"""Blocking file work done for a request: in threads of its own, a few at once per reader.

Every storage call blocks (a listing, a zip's next piece, a read, a write, a
move), so it runs in a thread, and a slow disk, a folder of a million entries or
a file system that hangs holds that thread as long as it takes. Earlier versions
ran them all in the event loop's default pool (``min(32, cores + 4)`` threads,
six on a small machine, shared with the hub's own work): one user looping slow
listings took every thread, and everyone else's file operations waited behind
theirs. Now they run in a pool of their own (``UWSHub.file_operation_threads``),
and one reader (a user or a service, ``kind:name``) holds at most
``UWSHub.max_file_operations_per_user`` of its threads at once; the reader's
further calls wait in line behind their own (a normal user's calls take
milliseconds, so nobody sees the line), never behind anyone else's.

The request being served says whose work it is (:func:`serve`, set by the API
handlers as they prepare a request), so the services call :func:`in_file_thread`
as they would ``asyncio.to_thread``; work the hub does for itself (no request
served) runs in the default pool as before.

The same pool with a bounded line keeps the local accounts' password hashing
(:mod:`uws_hub.authenticators.local`) off the default pool: past its line a
call is refused at once (:class:`LineFull`) rather than waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class LineFull(RuntimeError):
    """A reader's line of :class:`FileThreads` is full: the call was not made."""


class FileThreads:
    """A pool of threads for requests' file work, at most ``most`` of them held by one reader,
    and (``waiting``, if given) at most that many of its further calls waiting in its line."""

    def __init__(self, threads: int, most: int, *, waiting: int | None = None, name: str = "uws-files"):
        self.threads = threads
        self.most = most
        self.waiting = waiting
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        #: each reader's line (a semaphore of ``most``), kept while it holds or waits for a thread
        self._lines: dict[str, asyncio.Semaphore] = {}
        #: calls holding or waiting for a thread, by reader
        self._calls: dict[str, int] = {}

    async def run(self, reader: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in one of the pool's threads, once ``reader`` holds
        fewer than ``most``. The thread counts until its call really ends, even if the
        request waiting for it is cancelled meanwhile (the call cannot be).
        :class:`LineFull` if ``waiting`` of the reader's calls wait already."""
        if self.waiting is not None and self._calls.get(reader, 0) >= self.most + self.waiting:
            raise LineFull(f"{self.most + self.waiting} calls of {reader} are under way or waiting")
        line = self._lines.setdefault(reader, asyncio.Semaphore(self.most))
        self._calls[reader] = self._calls.get(reader, 0) + 1
        try:
            await line.acquire()
        except BaseException:
            self._done(reader, line, taken=False)
            raise
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        try:
            future = self.executor.submit(call)
        except BaseException:
            self._done(reader, line, taken=True)
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done, reader, line, True))
        return await asyncio.wrap_future(future)

    def _done(self, reader: str, line: asyncio.Semaphore, taken: bool) -> None:
        if taken:
            line.release()
        left = self._calls.get(reader, 0) - 1
        if left > 0:
            self._calls[reader] = left
        else:
            self._calls.pop(reader, None)
            self._lines.pop(reader, None)


#: the file threads and the reader of the request being served (see :func:`serve`)
_serving: contextvars.ContextVar[tuple[FileThreads, str] | None] = contextvars.ContextVar("uws_file_work", default=None)


def serve(threads: FileThreads, reader: str) -> None:
    """Make the file work of the request being served (this task) ``reader``'s, in ``threads``."""
    _serving.set((threads, reader))


async def in_file_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in a thread: the request's reader's file threads
    (:meth:`FileThreads.run`) when serving one, else the default pool (the hub's own work)."""
    serving = _serving.get()
    if serving is None:
        return await asyncio.to_thread(func, *args, **kwargs)
    threads, reader = serving
    return await threads.run(reader, func, *args, **kwargs)
