"""The reconciler's machinery in-process: the work queue, the task pool, and the
reconciler's workers and scan with fake steps (no hub, no database)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uws_hub.reconciler import Reconciler, waker
from uws_hub.tasks import TaskPool
from uws_hub.workqueue import WorkQueue, WorkQueueClosed

log = logging.getLogger("test")


class FakeDB:
    """What the reconciler and the pool do with the hub's session: roll back after a failure."""

    def __init__(self):
        self.rollbacks = 0

    def rollback(self):
        self.rollbacks += 1


class FakeSteps:
    """Steps of one kind: records each step; ``fail`` makes an id's next steps raise."""

    def __init__(self, kind: str, unfinished=()):
        self.kind = kind
        self._unfinished = list(unfinished)
        self.steps: list[int] = []
        self.fail: dict[int, int] = {}
        self.scans = 0
        self.gate: asyncio.Event | None = None

    def unfinished(self):
        return list(self._unfinished)

    async def after_scan(self):
        self.scans += 1

    async def reconcile(self, object_id: int) -> None:
        self.steps.append(object_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail.get(object_id):
            self.fail[object_id] -= 1
            raise RuntimeError(f"step {object_id} failed")


async def until(predicate, seconds: float = 5.0):
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- work queue
async def test_queue_holds_a_key_once_and_keeps_order():
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        q.put(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_put_while_processed_comes_back_once_after():
    q: WorkQueue[str] = WorkQueue()
    q.put("a")
    assert await q.get() == "a"
    q.put("a")
    q.put("a")
    assert len(q) == 0  # not twice at once
    q.task_done("a")
    assert len(q) == 1 and await q.get() == "a"
    q.task_done("a")
    assert len(q) == 0


async def test_backoff_doubles_and_resets():
    q: WorkQueue[str] = WorkQueue(backoff_base=0.01, backoff_max=0.03)
    assert [q.put_backoff("a") for _ in range(4)] == [0.01, 0.02, 0.03, 0.03]
    await asyncio.wait_for(q.get(), 1)  # the timer put it back
    q.reset_backoff("a")
    assert q.put_backoff("a") == 0.01


async def test_a_failed_step_that_woke_its_own_key_waits_its_backoff():
    """A step that fails every time and wakes its own key while it runs (a SLURM job's
    state asked of the poller wakes the job) ran back to back, every few milliseconds,
    whatever its backoff said: the wake made while it ran queued it again at its end."""
    q: WorkQueue[str] = WorkQueue(backoff_base=60, backoff_max=60)
    q.put("a")
    assert await q.get() == "a"
    q.put("a")  # woken by its own step
    assert q.put_backoff("a") == 60  # the step failed
    q.task_done("a")
    assert len(q) == 0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.get(), 0.05)
    q.put("a")  # a change seen after the failure: at once
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.close()


async def test_put_now_overrides_a_delayed_put():
    q: WorkQueue[str] = WorkQueue()
    q.put_after("a", 60)
    q.put("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_close_wakes_waiting_getters_and_drops_timers():
    q: WorkQueue[str] = WorkQueue()
    q.put_after("a", 0.01)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(WorkQueueClosed):
        await getter
    q.put("b")
    await asyncio.sleep(0.03)
    assert len(q) == 0


# ---------------------------------------------------------------- task pool
async def test_a_loop_survives_a_failing_step_and_rolls_back():
    db = FakeDB()
    pool = TaskPool(log, db)
    calls = []

    async def step():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    pool.every("test", step, 0.01)
    await until(lambda: len(calls) >= 3)
    assert db.rollbacks == 1
    await pool.close()


async def test_close_cancels_every_task_then_runs_the_closers():
    pool = TaskPool(log)
    order = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            order.append("task ended")

    async def closer():
        order.append("closed")

    pool.run("worker", forever)
    pool.spawn(forever())
    pool.on_close(closer)
    await asyncio.sleep(0)
    assert len(pool) == 2
    await pool.close()
    assert order == ["task ended", "task ended", "closed"] and len(pool) == 0
    with pytest.raises(RuntimeError, match="shutting down"):
        pool.spawn(forever())


async def test_a_zero_interval_loop_never_runs():
    pool = TaskPool(log)
    assert pool.every("never", lambda: None, 0) is None
    assert len(pool) == 0


# ---------------------------------------------------------------- reconciler
def reconciler(*steps, workers=2):
    queue: WorkQueue = WorkQueue(backoff_base=0.01)
    db = FakeDB()
    return Reconciler(queue, steps, db, log, workers=workers), queue, db


async def test_scan_queues_every_unfinished_object_of_every_kind():
    jobs, copies = FakeSteps("job", [1, 2]), FakeSteps("copy", [7])
    rec, queue, _ = reconciler(jobs, copies)
    await rec.scan()
    assert sorted([await queue.get() for _ in range(3)]) == [("copy", 7), ("job", 1), ("job", 2)]
    assert jobs.scans == copies.scans == 1


async def test_workers_take_each_key_to_its_kind_and_retry_failures_with_backoff():
    jobs, workspaces = FakeSteps("job"), FakeSteps("workspace")
    jobs.fail[3] = 2
    rec, queue, db = reconciler(jobs, workspaces)
    pool = TaskPool(log)
    for i in range(rec.workers):
        pool.run(f"worker-{i}", rec.worker)
    waker(queue, "job")(3)
    waker(queue, "workspace")(4)
    await until(lambda: jobs.steps == [3, 3, 3] and workspaces.steps == [4])
    assert db.rollbacks == 2
    rec.close()
    await pool.close()


async def test_an_object_is_never_reconciled_twice_at_once():
    jobs = FakeSteps("job")
    jobs.gate = asyncio.Event()
    rec, queue, _ = reconciler(jobs, workers=4)
    pool = TaskPool(log)
    for i in range(rec.workers):
        pool.run(f"worker-{i}", rec.worker)
    wake = waker(queue, "job")
    wake(5)
    await until(lambda: jobs.steps == [5])
    wake(5)
    wake(5)
    await asyncio.sleep(0.05)
    assert jobs.steps == [5]  # the others wait for the step under way
    jobs.gate.set()
    await until(lambda: jobs.steps == [5, 5])
    await asyncio.sleep(0.05)
    assert jobs.steps == [5, 5]
    rec.close()
    await pool.close()


async def test_workers_end_when_the_queue_closes():
    rec, _, _ = reconciler(FakeSteps("job"))
    worker = asyncio.ensure_future(rec.worker())
    await asyncio.sleep(0)
    rec.close()
    await asyncio.wait_for(worker, 1)


async def test_a_worker_gives_way_to_the_loop_between_steps():
    """Steps that never wait (jobs waiting in the start line) do not hold the event loop
    for a whole burst of keys: other work runs between two steps of one worker."""
    jobs = FakeSteps("job")
    rec, queue, _ = reconciler(jobs, workers=1)
    wake = waker(queue, "job")
    for job_id in range(1, 51):
        wake(job_id)
    seen: list[int] = []

    async def other_work():
        # a request served while the worker goes through the burst
        while len(jobs.steps) < 50:
            seen.append(len(jobs.steps))
            await asyncio.sleep(0)

    pool = TaskPool(log)
    pool.run("worker-0", rec.worker)
    await asyncio.wait_for(other_work(), 5)
    # the other task ran between the steps, not only before the first or after the last
    assert len(set(seen)) > 25, seen
    rec.close()
    await pool.close()


async def test_while_the_loop_is_late_a_worker_waits_for_the_lag_probe_between_steps():
    """services.give_way: while the loop is later than the limit, a worker's next step
    waits until the loop-lag probe ran again (what waited before it was served); on time,
    one turn of the loop."""
    from uws_hub.metrics import LoopLagProbe
    from uws_hub.services import give_way

    probe = LoopLagProbe(interval_seconds=0.01)
    probes: list[float] = []
    probe.add_listener(lambda: probes.append(probe.last))
    probe.last = 1.0  # the last probe found the loop a second late
    wait = give_way(probe, 0.1)
    waiting = asyncio.ensure_future(wait())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # no probe has run since
    runner = asyncio.ensure_future(probe.run())
    await asyncio.wait_for(waiting, 5)
    assert probes  # it went on once the probe ran
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    probe.last, probe._due = 0.0, None  # on time
    await asyncio.wait_for(wait(), 1)
    # 0: the limit is off, late or not
    probe.last = 1.0
    await asyncio.wait_for(give_way(probe, 0)(), 1)
