"""Copy shares the owner sends a copy to a user: a pending invitation, which the
recipient accepts or declines. Accepting (checked against the recipient's
disk quota) queues a background copy into a new workspace of theirs: copied
to a temporary name beside it (``.uws-copy-<share id>-…``), renamed into
place, and only then given a workspace row. A copy that fails or is
interrupted (the hub stopped) leaves no half workspace and is tried again,
up to ``UWSHub.copy_max_attempts`` times.

The invitation and its answer are requests (:class:`CopyService`); the copy
itself is the reconciler's (:class:`CopySteps`, key ``("copy", share id)``):
an accepted copy's target is ``done`` (:class:`~uws_hub.states.CopyState`),
and a copy the hub was making when it stopped is cleaned up and made again
after its restart (one that was already moved into place is adopted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack

from jupyterhub import orm as hub_orm
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounts.system import SystemAccounts
from ..errors import Conflict, Unprocessable
from ..events.notify import Notifier
from ..orm import Share, Workspace, utcnow
from ..quotas.limits import Reservation, fmt_bytes
from ..quotas.service import QuotaExceeded, QuotaService
from ..reconciler import Key
from ..states import (
    UNFINISHED_COPY_STATES,
    CopyState,
    ShareKind,
    ShareStatus,
    check_copy_transition,
    check_share_transition,
)
from ..tasks import TaskPool
from ..workqueue import WorkQueue
from ..workspaces.copying import CopyTooLarge, copy_tree
from ..workspaces.service import WorkspaceService, slugify
from ..workspaces.storage import WorkspaceStorage
from .collaborate import ShareService

COPY_TEMP_PREFIX = ".uws-copy-"


class CopyService:
    """Copy invitations: send one, accept it (the copy is queued), decline it."""

    def __init__(
        self,
        db: Session,
        shares: ShareService,
        accounts: SystemAccounts,
        quotas: QuotaService,
        notifier: Notifier,
        *,
        wake: Callable[[int], None],
    ):
        self.db = db
        self.shares = shares
        self.accounts = accounts
        self.quotas = quotas
        self.notifier = notifier
        #: puts an accepted copy on the reconciler's queue
        self.wake = wake

    def invite_copy(self, ws: Workspace, user: hub_orm.User, name: str | None, actor: str) -> Share:
        if user.id == ws.owner_id:
            raise Unprocessable("Send copies to other users; duplicate your own workspaces by creating a new one")
        self.shares.check_ready(ws)
        # (the copy is made in the recipient's folder, from the owner's: not while one is being deleted)
        self.shares.deletions.check(ws.owner, user)
        pending = self.db.scalar(
            select(Share).where(
                Share.workspace_id == ws.id,
                Share.kind == ShareKind.copy.value,
                Share.user_id == user.id,
                Share.status == ShareStatus.pending.value,
            )
        )
        if pending is not None:
            raise Conflict(f"{user.name} already has a pending copy of {ws.name!r} (share {pending.id})")
        share = Share(
            workspace=ws,
            owner_id=ws.owner_id,
            kind=ShareKind.copy.value,
            status=ShareStatus.pending.value,
            user=user,
            created_by=actor,
            copy_name=(name or ws.name).strip(),
        )
        self.db.add(share)
        self.db.flush()
        self.shares.record(share, "invited", actor)
        self.notifier.notify(
            user,
            f"{ws.owner.name} sent you a copy of workspace {ws.name!r}",
            f"{ws.owner.name} sent you a copy of the workspace {ws.name!r}"
            f" ({fmt_bytes(ws.disk_usage_bytes)}). Accept it to get a workspace of your own with the same"
            " files, or decline it.",
            actor=actor,
            link="shared",
            data={"share_id": share.id, "workspace_id": ws.id},
        )
        self.db.commit()
        return share

    def accept(self, share: Share, user: hub_orm.User) -> Share:
        """Accept a copy invitation: checked against the disk quota, then copied in the background."""
        if share.kind != ShareKind.copy.value or share.user_id != user.id:
            raise Conflict("Only copy invitations are accepted; collaborations are live already")
        if share.status == ShareStatus.accepted.value:
            return share
        if share.status != ShareStatus.pending.value:
            raise Conflict(f"This invitation was {share.status}")
        ws = share.workspace
        self.shares.check_ready(ws)
        self.accounts.owner(user.name)
        self.quotas.check_disk(user, ws.disk_usage_bytes)
        share.status = check_share_transition(share.status, ShareStatus.accepted).value
        share.responded_at = utcnow()
        share.copy_state = check_copy_transition(None, CopyState.queued).value
        self.shares.record(share, "accepted", user.name)
        self.db.commit()
        self.wake(share.id)
        return share

    def decline(self, share: Share, user: hub_orm.User) -> Share:
        if share.kind != ShareKind.copy.value or share.user_id != user.id:
            raise Conflict("Only copy invitations can be declined; the owner ends a collaboration")
        if share.status == ShareStatus.declined.value:
            return share
        if share.status != ShareStatus.pending.value:
            raise Conflict(f"This invitation was {share.status}")
        share.status = check_share_transition(share.status, ShareStatus.declined).value
        share.responded_at = utcnow()
        self.shares.record(share, "declined", user.name)
        ws = share.workspace
        self.notifier.notify(
            ws.owner,
            f"{user.name} declined the copy of {ws.name!r}",
            f"{user.name} declined the copy of the workspace {ws.name!r} you sent.",
            actor=user.name,
            link=f"workspaces/{ws.id}",
            data={"share_id": share.id, "workspace_id": ws.id},
        )
        self.db.commit()
        return share


class CopySteps:
    """The reconciler's steps for accepted copies: make each, one at a time."""

    kind = "copy"

    def __init__(
        self,
        db: Session,
        storage: WorkspaceStorage,
        workspaces: WorkspaceService,
        shares: ShareService,
        accounts: SystemAccounts,
        quotas: QuotaService,
        notifier: Notifier,
        queue: WorkQueue[Key],
        pool: TaskPool,
        log: logging.Logger,
        *,
        max_attempts: int,
        retry_seconds: float,
    ):
        self.db = db
        self.storage = storage
        self.workspaces = workspaces
        self.shares = shares
        self.accounts = accounts
        self.quotas = quotas
        self.notifier = notifier
        self.queue = queue
        self.pool = pool
        self.log = log
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        #: copies under way in this process, by share id
        self._copies: dict[int, asyncio.Task] = {}
        #: when a copy that failed may be tried again (monotonic), by share id
        self._retry_at: dict[int, float] = {}
        #: copies are made one at a time (each is disk-bound)
        self._one_at_a_time = asyncio.Lock()

    def wake(self, share_id: int) -> None:
        self.queue.put((self.kind, share_id))

    def unfinished(self) -> list[int]:
        return list(
            self.db.scalars(
                select(Share.id).where(
                    Share.kind == ShareKind.copy.value,
                    Share.copy_state.in_([state.value for state in UNFINISHED_COPY_STATES]),
                )
            )
        )

    async def after_scan(self) -> None:
        pass

    async def reconcile(self, share_id: int) -> None:
        task = self._copies.get(share_id)
        if task is not None and not task.done():
            return
        self._copies.pop(share_id, None)
        share = self.db.get(Share, share_id)
        if share is None or share.copy_state not in UNFINISHED_COPY_STATES:
            self._retry_at.pop(share_id, None)
            return
        if share.copy_state != CopyState.queued.value:
            # copying or placing, yet no copy under way in this process: the hub stopped mid-copy
            self._recover(share)
            self.db.commit()
            self.wake(share_id)
            return
        wait = self._retry_at.get(share_id, 0) - time.monotonic()
        if wait > 0:
            self.queue.put_after((self.kind, share_id), wait)
            return
        task = self._copies[share_id] = self.pool.spawn(self._copy(share_id))
        task.add_done_callback(lambda t: self.wake(share_id))

    def _set_state(self, share: Share, state: CopyState) -> None:
        share.copy_state = check_copy_transition(share.copy_state, state).value

    def _temp_dirs(self, share: Share) -> list[str]:
        parent = os.path.join(self.storage.root, share.recipient.name)
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            return []
        prefix = f"{COPY_TEMP_PREFIX}{share.id}-"
        return [os.path.join(parent, n) for n in names if n.startswith(prefix)]

    def _free_name(self, user: hub_orm.User, name: str) -> tuple[str, str]:
        """A workspace name of ``user``'s whose slug and directory are free."""
        for i in range(1, 1000):
            candidate = name if i == 1 else f"{name} (copy{'' if i == 2 else ' ' + str(i - 1)})"
            slug = slugify(candidate)
            if Workspace.find_by_slug(self.db, user.id, slug) is None and not os.path.exists(
                self.storage.directory_for(user.name, slug)
            ):
                return candidate, slug
        raise Conflict(f"No free name for a copy of {name!r}")

    async def _copy(self, share_id: int) -> None:
        async with self._one_at_a_time:
            await self._make_copy(share_id)

    async def _make_copy(self, share_id: int) -> None:
        share = self.db.get(Share, share_id)
        if share is None or share.copy_state != CopyState.queued.value:
            return
        recipient, source = share.recipient, share.workspace
        self._set_state(share, CopyState.copying)
        share.copy_attempts += 1
        self.db.commit()
        tmp = reservation = None
        making = ExitStack()
        try:
            # into the recipient's folder, out of the owner's (which their deletion sets aside):
            # not while either is being deleted, nor their delete meanwhile
            copying = f"A copy of {source.owner.name}'s workspace {source.name!r} is being made"
            making.enter_context(self.workspaces.deletions.making(source.owner, copying))
            making.enter_context(self.workspaces.deletions.making(recipient))
            owner = self.accounts.owner(recipient.name)
            # the room for the copy, as big as the source was last measured; the copy
            # stops if it outgrows the room there is, and what it grew by is reserved after
            reservation = self.quotas.reserve_disk(recipient, source.disk_usage_bytes)
            room = self.quotas.disk_room(recipient)
            parent = os.path.join(self.storage.root, recipient.name)
            os.makedirs(parent, mode=0o755, exist_ok=True)
            tmp = os.path.join(parent, f"{COPY_TEMP_PREFIX}{share.id}-{secrets.token_hex(4)}")
            self.log.info("Copying workspace %s to %s for %s (share %s)", source.id, tmp, recipient.name, share.id)
            result = await asyncio.to_thread(
                copy_tree, source.directory, tmp, owner, None if room is None else reservation.held_bytes + room
            )
            self.quotas.grow_disk(reservation, result.bytes)
            name, slug = self._free_name(recipient, share.copy_name or source.name)
            final = self.storage.directory_for(recipient.name, slug)
            self._set_state(share, CopyState.placing)
            share.copy_slug, share.copy_name = slug, name
            self.db.commit()
            os.rename(tmp, final)
            tmp = None
            self._place(share, final, result.bytes, reservation)
            if result.skipped:
                self.log.warning("Copy %s: left out %s symlinks or special files", share.id, result.skipped)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.db.rollback()
            if tmp is not None:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
            share = self.db.get(Share, share_id)
            if share is None:
                return
            if isinstance(e, CopyTooLarge):
                reason = (
                    f"Disk quota: the copy holds more than the {fmt_bytes(e.limit)} left of"
                    f" {recipient.name}'s disk quota"
                )
                permanent = True
            else:
                reason = getattr(e, "message", None) or str(e) or type(e).__name__
                permanent = isinstance(e, (Conflict, QuotaExceeded)) or share.copy_attempts >= self.max_attempts
            self.log.warning("Copy %s (attempt %s) failed: %s", share.id, share.copy_attempts, reason)
            share.copy_error = reason
            self._set_state(share, CopyState.failed if permanent else CopyState.queued)
            if permanent:
                self.shares.record(share, "copy-failed", "hub", reason)
                for user in (share.recipient, share.workspace.owner):
                    self.notifier.notify(
                        user,
                        f"The copy of {share.workspace.name!r} failed",
                        f"Copying the workspace {share.workspace.name!r} for {share.recipient.name} failed: {reason}",
                        link="shared" if user is share.recipient else f"workspaces/{share.workspace_id}",
                        data={"share_id": share.id},
                    )
            else:
                self._retry_at[share_id] = time.monotonic() + self.retry_seconds
            self.db.commit()
        finally:
            making.close()
            if reservation is not None:
                self.quotas.release_disk(reservation)  # unless the copy became the new workspace's usage

    def _place(self, share: Share, directory: str, usage_bytes: int, reservation: Reservation) -> None:
        """The copied directory is in place: give it its workspace row, whose usage the
        copy's reservation turns into."""
        source = share.workspace
        os.chmod(directory, self.storage.dir_mode)
        assert share.copy_name is not None and share.copy_slug is not None  # set before the copy is placed
        ws = self.workspaces.adopt(
            share.recipient,
            share.copy_name,
            share.copy_slug,
            directory,
            description=f"Copy of {source.owner.name}/{source.slug}"
            + (f": {source.description}" if source.description else ""),
            actor=share.recipient.name,
        )
        share.copy_workspace_id = ws.id
        self._set_state(share, CopyState.done)
        share.copy_bytes = usage_bytes
        share.copy_error = None
        self.shares.record(share, "copied", "hub")
        self.notifier.notify(
            share.recipient,
            f"Your copy of {source.name!r} is ready",
            f"Your copy of {source.owner.name}'s workspace {source.name!r} is ready:"
            f" workspace {ws.name!r} ({fmt_bytes(usage_bytes)}).",
            link=f"workspaces/{ws.id}",
            data={"share_id": share.id, "workspace_id": ws.id},
        )
        self.notifier.notify(
            source.owner,
            f"{share.recipient.name} accepted the copy of {source.name!r}",
            f"{share.recipient.name} accepted the copy of the workspace {source.name!r}; it is now their"
            f" workspace {ws.name!r}.",
            actor=share.recipient.name,
            link=f"workspaces/{source.id}",
            data={"share_id": share.id},
        )
        self.quotas.commit_disk(reservation, ws, usage_bytes)

    def _recover(self, share: Share) -> None:
        """A copy the hub was making when it stopped: adopt it if it was moved into place,
        else remove what it left and queue it again (in the session)."""
        leftovers = self._temp_dirs(share)
        slug = share.copy_slug
        final = self.storage.directory_for(share.recipient.name, slug) if slug else None
        if (
            share.copy_state == CopyState.placing.value
            and slug
            and final
            and os.path.isdir(final)
            and not leftovers
            and Workspace.find_by_slug(self.db, share.recipient.id, slug) is None
        ):
            self.log.info("Copy %s was moved into place before the hub stopped; adopting it", share.id)
            # its reservation ended with the hub that made it (the quota had room for it)
            self._place(share, final, self.storage.usage_bytes(final), Reservation(share.recipient))
            return
        for path in leftovers:
            self.log.info("Removing %s, left by an interrupted copy", path)
            shutil.rmtree(path, ignore_errors=True)
        self.log.info("Copy %s was interrupted; trying again", share.id)
        self._set_state(share, CopyState.queued)
