"""The reconciler's steps for workspaces: deleting those whose target is ``deleted``.

A delete request only sets the target (:meth:`WorkspaceService.delete`); a
step here starts the deletion as a helper task (forget the workspace's
stopped server, remove its directory by descriptor and its jobs' logs, drop its
row, then what sharing kept for it), and the periodic scan finds every workspace still
``deleting``, so a deletion the hub was making when it stopped is finished
after its restart. The workspace answers ``deleting`` until it is gone.
A deletion that fails leaves the workspace in ``error`` with the reason and
target ``ready``: its owner may ask again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from ..jobs.servers import ServerControl
from ..orm import Workspace
from ..reconciler import Key
from ..states import WorkspaceStatus, WorkspaceTarget
from ..tasks import TaskPool
from ..workqueue import WorkQueue
from .service import WorkspaceService


class WorkspaceSteps:
    kind = "workspace"

    def __init__(
        self,
        workspaces: WorkspaceService,
        servers: ServerControl,
        queue: WorkQueue[Key],
        pool: TaskPool,
        log: logging.Logger,
        *,
        forget: Callable[[int], Awaitable[None]],
        forget_logs: Callable[[int], Awaitable[None]],
    ):
        self.workspaces = workspaces
        self.db = workspaces.db
        self.servers = servers
        self.queue = queue
        self.pool = pool
        self.log = log
        #: called with a deleted workspace's id: what sharing kept for it goes
        self.forget = forget
        #: called with a workspace's id before its row goes: its jobs' logs go
        self.forget_logs = forget_logs
        self._deleting: dict[int, asyncio.Task] = {}

    def unfinished(self) -> list[int]:
        return list(
            self.db.scalars(
                select(Workspace.id).where(
                    Workspace.target == WorkspaceTarget.deleted.value,
                    Workspace.status == WorkspaceStatus.deleting.value,
                )
            )
        )

    async def after_scan(self) -> None:
        pass

    async def reconcile(self, workspace_id: int) -> None:
        task = self._deleting.get(workspace_id)
        if task is not None and not task.done():
            return
        self._deleting.pop(workspace_id, None)
        ws = Workspace.find(self.db, workspace_id)
        if ws is None or ws.target != WorkspaceTarget.deleted.value or ws.status != WorkspaceStatus.deleting.value:
            return
        task = self._deleting[workspace_id] = self.pool.spawn(self._delete(workspace_id))
        task.add_done_callback(lambda t: self.queue.put((self.kind, workspace_id)))

    async def _delete(self, workspace_id: int) -> None:
        ws = Workspace.find(self.db, workspace_id)
        if ws is None:
            return
        owner, slug = ws.owner, ws.slug
        try:
            await self.servers.delete(owner, slug)
            await asyncio.to_thread(self.workspaces.storage.remove, ws.directory)
            await self.forget_logs(workspace_id)
        except Exception as e:
            self.db.rollback()
            self.log.exception("Failed to delete workspace %s", workspace_id)
            ws.target = WorkspaceTarget.ready.value
            self.workspaces.set_status(ws, WorkspaceStatus.error, f"Deleting failed: {e}")
            self.db.commit()
            return
        self.workspaces.record(ws, "deleted", ws.status, None, "hub")
        # its jobs go with it (ON DELETE CASCADE); their run time stays in its owner's core-hours
        self.workspaces.quotas.keep_ended_usage(ws.owner_id)
        self.db.delete(ws)
        self.db.commit()
        self.log.info("Deleted workspace %s/%s (id %s)", owner.name, slug, workspace_id)
        try:
            await self.forget(workspace_id)
        except Exception:
            self.db.rollback()
            self.log.exception("Cleaning up after workspace %s failed", workspace_id)
