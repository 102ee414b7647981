"""uws-hub's Prometheus metrics, served with JupyterHub's own at ``/hub/metrics``.

Like :mod:`jupyterhub.metrics`, the metrics live in prometheus_client's
default registry, so JupyterHub's ``/hub/metrics`` endpoint (and its
``read:metrics`` scope, or ``c.JupyterHub.authenticate_prometheus = False``)
serves them with no handler of ours.

Counts that the database already knows (jobs by status, workspaces, disk
usage) are read from it at scrape time by :class:`StateCollector`, so they are
right after a restart and cannot drift; what happens over time (launch
latency; SLURM poll cycles in :mod:`uws_hub.spawners.slurm.metrics`) is observed
where it happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .events.bus import EventBus

JOB_LAUNCH_DURATION_SECONDS = Histogram(
    "uws_job_launch_duration_seconds",
    "Seconds from a launch request until its server answers (pending to running), queue time included",
    ["resource"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
)


RECONCILER_STEPS = Counter(
    "uws_reconciler_steps",
    "Steps the reconciler took, by kind of object (job, workspace, copy): each a look at one"
    " object that moves it on if it can; many steps for few changes is wasted work on the event loop",
    ["kind"],
)


EVENT_LOOP_LAG_SECONDS = Histogram(
    "uws_event_loop_lag_seconds",
    "How late the hub's event loop woke a probe that slept 0.1 s: how long a request"
    " or an event waits behind other work in the loop",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)


class LoopLagProbe:
    """How late the hub's event loop runs what is due: now, and over time (a histogram).

    Everything the hub does runs on one event loop; work that holds it (a
    slow query, JSON of a long list, JupyterHub's spawn bookkeeping) delays
    every request and event behind it by that much. The probe sleeps a fixed
    time and records how late the loop woke it (``uws_event_loop_lag_seconds``
    at ``/hub/metrics``); :meth:`lag` also counts a probe that is overdue right
    now, so work can be held back the moment the loop falls behind (the
    reconciler does, for job starts). Listeners are called after each probe.
    """

    def __init__(self, interval_seconds: float = 0.1):
        self.interval_seconds = interval_seconds
        #: the last probe's lag
        self.last = 0.0
        self._due: float | None = None
        self._listeners: list[Callable[[], None]] = []
        self._next: list[asyncio.Future] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def next_probe(self) -> None:
        """Wait until the next probe has run: by then the loop has served what was due before it."""
        future = asyncio.get_running_loop().create_future()
        self._next.append(future)
        await future

    def lag(self) -> float:
        """The loop's lag now: the last probe's, or how overdue the next probe already is."""
        if self._due is None:
            return self.last
        return max(self.last, asyncio.get_running_loop().time() - self._due)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + self.interval_seconds
            await asyncio.sleep(self.interval_seconds)
            self.last = max(0.0, loop.time() - self._due)
            EVENT_LOOP_LAG_SECONDS.observe(self.last)
            waiting, self._next = self._next, []
            for future in waiting:
                if not future.done():
                    future.set_result(None)
            for listener in self._listeners:
                listener()


class StateCollector(Collector):
    """Jobs by status and resource, workspaces by status, their disk usage, event subscribers."""

    def __init__(self, db: Session, events: EventBus):
        self.db = db
        self.events = events

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .orm import Job, Workspace

        jobs = GaugeMetricFamily("uws_jobs", "Jobs by status and resource", labels=["status", "resource"])
        for status, resource, n in self.db.execute(
            select(Job.status, Job.resource, func.count()).group_by(Job.status, Job.resource)
        ):
            jobs.add_metric([status, resource], n)
        yield jobs

        workspaces = GaugeMetricFamily("uws_workspaces", "Workspaces by status", labels=["status"])
        disk = 0
        for status, n, used in self.db.execute(
            select(Workspace.status, func.count(), func.coalesce(func.sum(Workspace.disk_usage_bytes), 0)).group_by(
                Workspace.status
            )
        ):
            workspaces.add_metric([status], n)
            disk += int(used)
        yield workspaces
        yield GaugeMetricFamily(
            "uws_workspaces_disk_bytes", "Bytes in all workspaces, as last measured by the usage loop", value=disk
        )
        yield GaugeMetricFamily(
            "uws_event_subscribers",
            "Open event streams (server-sent events and WebSockets)",
            value=self.events.subscriber_count,
        )


_state_collector: StateCollector | None = None


def register_state_collector(db: Session, events: EventBus) -> None:
    """Serve the hub's state at ``/hub/metrics`` (replacing an earlier hub's in this process)."""
    global _state_collector
    if _state_collector is not None:
        REGISTRY.unregister(_state_collector)
    _state_collector = StateCollector(db, events)
    REGISTRY.register(_state_collector)
