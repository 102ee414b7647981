"""Measuring workspaces' disk usage: the body of the hub's usage loop.

Uploads and copies update a workspace's usage themselves; this measures what
changed behind the hub's back (jobs writing into workspaces), and every
workspace once per ``UWSHub.workspace_usage_full_scan_seconds``: the first
pass after a start measures them all, and sweeps what uploads the last hub
process left. Owners whose usage changed are checked against their disk
quota's warning threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..quotas.service import QuotaService
from .service import WorkspaceService
from .storage import WorkspaceStorage


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

    async def measure(self) -> None:
        """One pass: measure the workspaces that may have changed (all of them, now and then)."""
        now = time.monotonic()
        everything = now - self._last_full_scan >= self.full_scan_seconds
        if everything:
            self._last_full_scan = now
        owners = set()
        for ws in self.workspaces.to_measure(everything, isolated=self.isolated):
            before = ws.disk_usage_bytes
            try:
                usage = await asyncio.to_thread(self.storage.measure, ws.directory)
            except FileNotFoundError:
                # keep the last measurement: the filesystem may be away for a moment
                self.log.warning("Workspace %s: directory %s is missing", ws.id, ws.directory)
                continue
            if self.quotas.record_measured(ws, before, usage) and usage != before:
                owners.add(ws.owner)
        for owner in owners:
            self.quotas.check_disk_warning(owner)
