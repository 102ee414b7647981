"""The stray kills under way, by workspace: a barrier an editor's job start waits at.

A kill of the processes that hold a workspace's group unallowed reads who may hold
it (owner, editors; under the POSIX lock), then scans ``/proc`` in a thread. An
editor added between the two, whose job started before the scan's end, had that
brand-new job's processes killed: the scan allowed them no longer than the
re-check knew of them. So the start of a job that gets a workspace's group (an
editor's) waits while a kill of that group is between its re-check and the end
of its scan; a start that came first needs no wait, since its launcher was an
editor before the re-check read the editors. Owners' starts, which get no group,
and other workspaces' never wait, and nothing holds the POSIX lock meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator


class GroupKills:
    """The workspaces whose group a stray kill is under way for (see the module)."""

    def __init__(self) -> None:
        #: workspace id -> what to call when its kill ends (the starts that wait for it)
        self._under_way: dict[int, list[Callable[[], None]]] = {}

    @contextlib.contextmanager
    def under_way(self, ws_ids: Iterable[int]) -> Iterator[None]:
        """Around a kill of these workspaces' groups, from before its re-check of who may
        hold them to the end of its scan: the starts that waited meanwhile go on after."""
        ids = set(ws_ids)
        for ws_id in ids:
            self._under_way.setdefault(ws_id, [])
        try:
            yield
        finally:
            for ws_id in ids:
                for then in self._under_way.pop(ws_id, []):
                    then()

    def call_after(self, ws_id: int, then: Callable[[], None]) -> bool:
        """If a kill of the workspace's group is under way, call ``then`` once it ended and
        say True; else False (nothing to wait for)."""
        waiting = self._under_way.get(ws_id)
        if waiting is None:
            return False
        waiting.append(then)
        return True

    async def wait(self, ws_id: int) -> None:
        """Return once no kill of the workspace's group is under way."""
        while True:
            done = asyncio.get_running_loop().create_future()
            if not self.call_after(ws_id, functools.partial(_resolve, done)):
                return
            await done


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # (not if its waiter was cancelled)
        future.set_result(None)
