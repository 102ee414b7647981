"""How a subscriber's reader wakes up: counted in turns of the event loop, which no real
hub can count (a job's end reaches its stream in the turn after the commit that
published it, not after whatever else the loop had ready in three turns)."""

from __future__ import annotations

import asyncio
import logging

from uws_hub.events.bus import EventBus, transient_event


def _bus() -> EventBus:
    return EventBus(logging.getLogger("test.bus"))


async def _turns_until_done(task: asyncio.Task, most: int = 10) -> int:
    for turns in range(1, most + 1):
        await asyncio.sleep(0)
        if task.done():
            return turns
    raise AssertionError(f"the reader was still waiting after {most} turns")


def test_a_waiting_reader_gets_a_published_event_in_the_next_turn_of_the_loop():
    async def run():
        bus = _bus()
        sub = bus.subscribe(lambda event: True)
        reader = asyncio.ensure_future(sub.next_batch(timeout=30))
        await asyncio.sleep(0)  # the reader waits
        assert not reader.done()
        event = transient_event(kind="job", status="cancelled")
        bus.publish(event)
        assert await _turns_until_done(reader) == 1
        assert reader.result() == [event]

    asyncio.run(run())


def test_an_unsubscribed_reader_stops_waiting_in_the_next_turn_with_nothing():
    async def run():
        bus = _bus()
        sub = bus.subscribe(lambda event: True)
        reader = asyncio.ensure_future(sub.next_batch(timeout=30))
        await asyncio.sleep(0)
        bus.unsubscribe(sub)
        assert await _turns_until_done(reader) == 1
        assert reader.result() == []
        assert sub.closed.is_set()

    asyncio.run(run())


def test_a_reader_gets_nothing_after_its_timeout_and_then_what_comes_next():
    async def run():
        bus = _bus()
        sub = bus.subscribe(lambda event: event["status"] == "cancelled")
        assert await sub.next_batch(timeout=0.01) == []
        bus.publish(transient_event(kind="job", status="running"))  # not accepted
        reader = asyncio.ensure_future(sub.next_batch(timeout=30))
        await asyncio.sleep(0)
        assert not reader.done()
        event = transient_event(kind="job", status="cancelled")
        bus.publish(event)
        assert await _turns_until_done(reader) == 1
        assert reader.result() == [event]

    asyncio.run(run())


def test_a_cancelled_reader_leaves_the_subscription_usable():
    async def run():
        bus = _bus()
        sub = bus.subscribe(lambda event: True)
        reader = asyncio.ensure_future(sub.next_batch(timeout=30))
        await asyncio.sleep(0)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        assert reader.cancelled()
        event = transient_event(kind="job", status="cancelled")
        bus.publish(event)  # queued, no waiter to wake
        assert await sub.next_batch(timeout=30) == [event]

    asyncio.run(run())
