"""Long requests each reader holds open at once, bounded per reader.

A zip download, an event stream or a followed log stays open as long as its
reader wants, and each holds something of the hub's (descriptors, memory, a
subscription every event is offered to, a poll of the database): without a
bound one account opening thousands would take them from everyone. Readers are
told apart as ``kind:name`` (a user or a service), whichever token they use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def reader_of(user) -> str:
    """Who holds a request open: ``user:<name>`` or ``service:<name>`` (a JupyterHub caller)."""
    return f"{user.kind}:{user.name}"


@dataclass
class ReaderSlots:
    """How many of one kind of long request each reader holds open: at most ``most``."""

    most: int
    #: what each reader holds now (readers holding none are not kept)
    held: dict[str, int] = field(default_factory=dict)

    def take(self, reader: str) -> bool:
        """A slot for ``reader``, or False if it holds ``most`` already."""
        count = self.held.get(reader, 0)
        if count >= self.most:
            return False
        self.held[reader] = count + 1
        return True

    def give_back(self, reader: str) -> None:
        left = self.held.get(reader, 0) - 1
        if left > 0:
            self.held[reader] = left
        else:
            self.held.pop(reader, None)

    @contextmanager
    def try_hold(self, reader: str) -> Iterator[bool]:
        """A slot for the block if ``reader`` holds fewer than ``most``: yields whether it
        got one (given back at the block's end), for a request that has another answer
        than a refusal (a UWS ``WAIT`` answers at once)."""
        taken = self.take(reader)
        try:
            yield taken
        finally:
            if taken:
                self.give_back(reader)

    @contextmanager
    def hold(self, reader: str, refusal: Callable[[int], Exception]) -> Iterator[None]:
        """A slot for the block, or ``refusal(most)`` raised."""
        with self.try_hold(reader) as taken:
            if not taken:
                raise refusal(self.most)
            yield
