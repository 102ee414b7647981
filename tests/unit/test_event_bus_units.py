"""How a subscriber's reader wakes up: counted in turns of the event loop, which no real
hub can count (a job's end reaches its stream in the turn after the commit that
published it, not after whatever else the loop had ready in three turns)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uws_hub.events.bus import EventBus, transient_event


@pytest.fixture
def bus() -> EventBus:
    return EventBus(logging.getLogger("test.bus"))


async def _turns_until_done(task: asyncio.Future, most: int = 10) -> int:
    for turns in range(1, most + 1):
        await asyncio.sleep(0)
        if task.done():
            return turns
    raise AssertionError(f"the reader was still waiting after {most} turns")


async def _waiting_reader(sub) -> asyncio.Future:
    """A reader of ``sub`` that waits in ``next_batch``."""
    reader = asyncio.ensure_future(sub.next_batch(timeout=30))
    await asyncio.sleep(0)
    assert not reader.done()
    return reader


async def _published_to_a_waiting_reader(bus: EventBus, sub, event: dict) -> list[dict]:
    """What a reader waiting in ``next_batch`` gets once ``event`` is published; it must
    have it in the loop's next turn."""
    reader = await _waiting_reader(sub)
    bus.publish(event)
    assert await _turns_until_done(reader) == 1
    return reader.result()


async def test_a_waiting_reader_gets_a_published_event_in_the_next_turn_of_the_loop(bus):
    event = transient_event(kind="job", status="cancelled")
    assert await _published_to_a_waiting_reader(bus, bus.subscribe(lambda event: True), event) == [event]


async def test_an_unsubscribed_reader_stops_waiting_in_the_next_turn_with_nothing(bus):
    sub = bus.subscribe(lambda event: True)
    reader = await _waiting_reader(sub)
    bus.unsubscribe(sub)
    assert await _turns_until_done(reader) == 1
    assert reader.result() == [] and sub.closed.is_set()


async def test_a_reader_gets_nothing_after_its_timeout_and_then_what_comes_next(bus):
    sub = bus.subscribe(lambda event: event["status"] == "cancelled")
    assert await sub.next_batch(timeout=0.01) == []
    bus.publish(transient_event(kind="job", status="running"))  # not accepted
    event = transient_event(kind="job", status="cancelled")
    assert await _published_to_a_waiting_reader(bus, sub, event) == [event]


async def test_a_cancelled_reader_leaves_the_subscription_usable(bus):
    sub = bus.subscribe(lambda event: True)
    reader = await _waiting_reader(sub)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    event = transient_event(kind="job", status="cancelled")
    bus.publish(event)  # queued, no waiter to wake
    assert await sub.next_batch(timeout=30) == [event]
