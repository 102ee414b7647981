"""Measuring workspaces' disk usage: the body of the hub's usage loop.

Uploads and copies update a workspace's usage themselves; this measures what
changed behind the hub's back (jobs writing into workspaces), and every
workspace once per ``UWSHub.workspace_usage_full_scan_seconds``: the first
pass after a start measures them all, and sweeps what uploads the last hub
process left. Owners whose usage changed are checked against their disk
quota's warning threshold.

A workspace measured in the frequent passes (one a job may write to) keeps
what its last measurement found (a :class:`~.usagetree.UsageTree`), so the
next one re-reads only the directories that changed, and the files written
lately; the full pass reads every tree afresh. Only the trees of the
workspaces of the last frequent pass are kept, so the hub's memory follows
the workspaces in use, not all of them.

A job's end measures its workspace soon after (:meth:`UsageMeter.job_ended`),
not at the next pass: what a job wrote (a batch job's results) counts toward
its owner's disk quota at once. Ends are collected while a measurement runs,
so a burst of ends in one workspace makes one more measurement of it, not one
each, and the next pass measures it once more (a shared filesystem may show
what a job wrote on another machine a little late). Measurements never
overlap (one lock); each walks its tree in a thread, as the passes do.

After each measurement that jobs' ends asked for, the next one waits
:data:`AFTER_JOBS_REST` times as long as it took: a workspace's owner decides
how costly its walk is (a folder of a million empty files costs no quota
and seconds of the hub's CPU each time a job wrote in it lately) and how
often jobs end there (many tiny jobs), and earlier versions walked it again
after each end, back to back, for as long as the jobs went on: the hub spent
a thread, and much of its interpreter's time, on one user's folders. Now
such measurements take at most a tenth of the time, and a cheap one (most:
milliseconds) is followed by one a few milliseconds later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..orm import Workspace
from ..quotas.service import QuotaService
from .service import WorkspaceService
from .storage import WorkspaceStorage
from .usagetree import UsageTree

#: after a measurement that jobs' ends asked for, the next waits this many times as long
#: as it took (so they take at most 1 / (1 + AFTER_JOBS_REST) of the time; see above)
AFTER_JOBS_REST = 9.0


class UsageMeter:
    def __init__(
        self,
        workspaces: WorkspaceService,
        storage: WorkspaceStorage,
        quotas: QuotaService,
        log: logging.Logger,
        *,
        full_scan_seconds: float,
        isolated: bool,
    ):
        self.workspaces = workspaces
        self.storage = storage
        self.quotas = quotas
        self.log = log
        self.full_scan_seconds = full_scan_seconds
        #: jobs run as their owners (system users): a job writes into its own workspaces only
        self.isolated = isolated
        self._last_full_scan = float("-inf")
        #: what the last measurement of each workspace of the frequent passes found, by id
        self._trees: dict[int, UsageTree] = {}
        #: the workspaces whose jobs ended since the last measurement of them (see job_ended)
        self._ended: set[int] = set()
        self._ended_event = asyncio.Event()
        #: one measurement at a time: a pass and the measurement after a job's end share the trees
        self._lock = asyncio.Lock()
        #: how long the last measurement after jobs' ends took (its walks, not its wait for the lock)
        self._after_jobs_seconds = 0.0

    def job_ended(self, workspace_id: int) -> None:
        """A job of this workspace ended (every end passes here, see
        :meth:`~uws_hub.jobs.service.JobService.transition`): measure it soon."""
        self._ended.add(workspace_id)
        self._ended_event.set()

    async def measure_ended_forever(
        self, guarded: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[bool]]
    ) -> None:
        """A worker: measure the workspaces whose jobs ended, as they end (each
        measurement ``guarded``: a failure is logged, and the worker goes on)."""
        while True:
            await self._ended_event.wait()
            self._after_jobs_seconds = 0.0
            await guarded("workspace-usage-after-jobs", self.measure_ended)
            # ends told meanwhile wait: the owner decides what a measurement costs
            await self._rest(self._after_jobs_seconds * AFTER_JOBS_REST)

    async def _rest(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def measure_ended(self) -> None:
        """Measure the workspaces whose jobs ended since the last call (their trees kept)."""
        self._ended_event.clear()
        ids, self._ended = self._ended, set()
        async with self._lock:
            started = time.monotonic()
            try:
                workspaces = self.workspaces.to_measure(True, isolated=self.isolated, among=ids)
                trees = {ws.id: self._trees.setdefault(ws.id, UsageTree()) for ws in workspaces}
                await self._measure(workspaces, trees, settled=False)
            finally:
                self._after_jobs_seconds = time.monotonic() - started

    async def measure(self) -> None:
        """One pass: measure the workspaces that may have changed (all of them, now and then)."""
        async with self._lock:
            now = time.monotonic()
            everything = now - self._last_full_scan >= self.full_scan_seconds
            if everything:
                self._last_full_scan = now
            # the workspaces of the frequent passes (those jobs may write to) keep their trees
            suspects = self.workspaces.to_measure(False, isolated=self.isolated)
            trees = {ws.id: (UsageTree() if everything else self._trees.get(ws.id) or UsageTree()) for ws in suspects}
            self._trees = trees
            await self._measure(
                self.workspaces.to_measure(True, isolated=self.isolated) if everything else suspects, trees
            )

    async def _measure(self, workspaces: list[Workspace], trees: dict[int, UsageTree], *, settled: bool = True) -> None:
        """Measure these workspaces (each with its tree, if it has one), store what was found
        (see :meth:`~uws_hub.quotas.service.QuotaService.record_measured` for ``settled``),
        and check their owners' disk warnings."""
        owners = set()
        for ws in workspaces:
            before = ws.disk_usage_bytes
            try:
                usage = await asyncio.to_thread(self.storage.measure, ws.directory, trees.get(ws.id))
            except FileNotFoundError:
                # keep the last measurement: the filesystem may be away for a moment
                self.log.warning("Workspace %s: directory %s is missing", ws.id, ws.directory)
                continue
            except OSError as e:
                # keep the last measurement; the other workspaces are measured all the same
                self.log.warning("Workspace %s: cannot measure %s: %s", ws.id, ws.directory, e)
                continue
            if self.quotas.record_measured(ws, before, usage, settled=settled) and usage != before:
                owners.add(ws.owner)
        for owner in owners:
            self.quotas.check_disk_warning(owner)
