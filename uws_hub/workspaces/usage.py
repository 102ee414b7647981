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
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..quotas.service import QuotaService
from .service import WorkspaceService
from .storage import WorkspaceStorage
from .usagetree import UsageTree


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

    async def measure(self) -> None:
        """One pass: measure the workspaces that may have changed (all of them, now and then)."""
        now = time.monotonic()
        everything = now - self._last_full_scan >= self.full_scan_seconds
        if everything:
            self._last_full_scan = now
        owners = set()
        # the workspaces of the frequent passes (those jobs may write to) keep their trees
        suspects = self.workspaces.to_measure(False, isolated=self.isolated)
        trees = {ws.id: (UsageTree() if everything else self._trees.get(ws.id) or UsageTree()) for ws in suspects}
        self._trees = trees
        for ws in self.workspaces.to_measure(True, isolated=self.isolated) if everything else suspects:
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
            if self.quotas.record_measured(ws, before, usage) and usage != before:
                owners.add(ws.owner)
        for owner in owners:
            self.quotas.check_disk_warning(owner)
