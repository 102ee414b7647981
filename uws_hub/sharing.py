"""Sharing workspaces: live collaboration, and copies sent to someone.

**Collaborate** (the default): the owner shares a workspace with users or hub
groups, as ``viewer`` or ``editor``. The shares table is the truth, and three
things follow from it, kept in step on every change and re-made by a sync at
startup and every ``UWSHub.share_sync_interval`` seconds:

- uws-hub's own authorization (:mod:`uws_hub.access`): grantees read (viewers
  and editors), write files and launch or stop jobs (editors) in the
  workspace. Renaming, deleting and sharing stay with the owner.
- JupyterHub roles, one per shared workspace and level, granted to the
  grantee users and groups directly: ``uws-ws-<id>-viewer`` holds
  ``access:servers!server=<owner>/<slug>`` (what lets grantees through
  JupyterHub's OAuth into the workspace's running server, with a browser or a
  token) and ``custom:uws:read:workspaces!server=<owner>/<slug>``;
  ``uws-ws-<id>-editor`` adds the write and launch scopes. JupyterHub deletes
  roles missing from ``load_roles`` at startup, so the hub re-declares them
  (:func:`role_specs`). Roles are granted to users directly rather than
  through a hub group of the workspace's own, because authenticators with
  ``manage_groups`` replace a user's groups at every login.
- With ``UWSHub.system_users``, a POSIX group per workspace whose members are
  the editors (:mod:`uws_hub.posixgroups`).

Revoking deletes the share, re-makes the roles (so the hub refuses the grantee
at once), deletes the grantee's OAuth tokens for the workspace's server, and
empties the POSIX group of them. A server that is already open asks the hub
again within ``UWSHub.server_auth_cache_seconds`` (see :mod:`uws_hub.serverconfig`).

**Copy**: the owner sends a copy to a user: a pending invitation, which the
recipient accepts or declines. Accepting (checked against the recipient's
disk quota) queues a background copy into a new workspace of theirs: copied
to a temporary name beside it (``.uws-copy-<share id>-…``), renamed into
place, and only then given a workspace row. A copy that fails or is
interrupted (the hub stopped) leaves no half workspace and is tried again,
up to ``UWSHub.copy_max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from typing import Any, Iterable

from jupyterhub import orm as hub_orm
from jupyterhub import roles as hub_roles
from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from . import posixgroups
from .authenticators.identity import display_name_of, email_of
from .copying import CopyTooLarge, copy_tree
from .errors import Conflict, NotFound, Unprocessable
from .events import EventBus
from .notify import Notifier
from .orm import Event, Share, Workspace, utcnow
from .quotas import QuotaExceeded, QuotaService, Reservation, fmt_bytes
from .scopes import LAUNCH_JOBS, READ_WORKSPACES, WRITE_WORKSPACES
from .states import WorkspaceStatus
from .storage import WorkspaceStorage
from .workspaces import Accounts, WorkspaceService, slugify

LEVELS = ("viewer", "editor")
COLLABORATE, COPY = "collaborate", "copy"
PENDING, ACCEPTED, DECLINED = "pending", "accepted", "declined"
ROLE_PREFIX = "uws-ws-"
COPY_TEMP_PREFIX = ".uws-copy-"
#: copy states of an accepted copy share
QUEUED, COPYING, PLACING, DONE, FAILED = "queued", "copying", "placing", "done", "failed"


def role_name(workspace_id: int, level: str) -> str:
    return f"{ROLE_PREFIX}{workspace_id}-{level}"


def role_scopes(owner_name: str, slug: str, level: str) -> list[str]:
    server = f"{owner_name}/{slug}"
    scopes = [f"access:servers!server={server}", f"{READ_WORKSPACES}!server={server}"]
    if level == "editor":
        scopes += [f"{WRITE_WORKSPACES}!server={server}", f"{LAUNCH_JOBS}!server={server}"]
    return scopes


def _role_spec(ws: Workspace, level: str, grants: list[Share]) -> dict[str, Any]:
    return {
        "name": role_name(ws.id, level),
        "description": f"{level.capitalize()}s of workspace {ws.owner.name}/{ws.slug} (managed by uws-hub)",
        "scopes": role_scopes(ws.owner.name, ws.slug, level),
        "users": sorted(s.user.name for s in grants if s.user is not None),
        "groups": sorted(s.group.name for s in grants if s.group is not None),
    }


def _grants_by_workspace(db: Session, workspace_ids: Iterable[int] | None = None) -> dict[int, list[Share]]:
    query = select(Share).where(Share.kind == COLLABORATE)
    if workspace_ids is not None:
        query = query.where(Share.workspace_id.in_(list(workspace_ids)))
    grants: dict[int, list[Share]] = {}
    for share in db.scalars(query.order_by(Share.id)):
        grants.setdefault(share.workspace_id, []).append(share)
    return grants


def role_specs(db: Session) -> list[dict[str, Any]]:
    """JupyterHub role definitions (``load_roles`` entries) for every shared workspace."""
    specs = []
    for ws_id, grants in _grants_by_workspace(db).items():
        ws = grants[0].workspace
        for level in LEVELS:
            at_level = [s for s in grants if s.level == level]
            if at_level:
                specs.append(_role_spec(ws, level, at_level))
    return specs


class ShareService:
    def __init__(
        self,
        db: Session,
        storage: WorkspaceStorage,
        workspaces: WorkspaceService,
        accounts: Accounts,
        quotas: QuotaService,
        notifier: Notifier,
        events: EventBus,
        log: logging.Logger,
        *,
        posix_group_prefix: str | None,
        copy_max_attempts: int,
        copy_retry_seconds: float,
        sync_interval: float,
        search_mode: str = "all",
        show_email: bool = False,
    ):
        self.db = db
        self.storage = storage
        self.workspaces = workspaces
        self.accounts = accounts
        self.quotas = quotas
        self.notifier = notifier
        self.events = events
        self.log = log
        #: None: no POSIX groups (single-account mode)
        self.posix_group_prefix = posix_group_prefix
        self.copy_max_attempts = copy_max_attempts
        self.copy_retry_seconds = copy_retry_seconds
        self.sync_interval = sync_interval
        self.search_mode = search_mode
        self.show_email = show_email
        #: bumped on every change of who may see what (event stream caches compare it)
        self.version = 0
        self._posix_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        workspaces.deleted_hooks.append(self._forget_workspace)

    # ---------------------------------------------------------------- queries
    def lookup_session(self) -> Session:
        """A short-lived session for read-only lookups where the hub's session cannot
        query (use it as a context manager)."""
        return Session(bind=self.db.get_bind())

    def for_workspace(self, ws: Workspace) -> list[Share]:
        return list(self.db.scalars(select(Share).where(Share.workspace_id == ws.id).order_by(Share.id)))

    def received(self, user: hub_orm.User, statuses: Iterable[str]) -> list[Share]:
        """Shares this user received: copy invitations to them, and collaborations
        with them or their groups."""
        group_ids = [g.id for g in user.groups]
        query = select(Share).where(
            Share.status.in_(list(statuses)), or_(Share.user_id == user.id, Share.group_id.in_(group_ids))
        )
        return list(self.db.scalars(query.order_by(Share.id.desc())))

    def find_received(self, share_id: int, user: hub_orm.User) -> Share:
        share = self.db.get(Share, share_id)
        if share is None or not (share.user_id == user.id or (share.group_id and share.group in user.groups)):
            raise NotFound(f"No such share: {share_id}")
        return share

    def find_for_workspace(self, ws: Workspace, share_id: int) -> Share:
        share = self.db.get(Share, share_id)
        if share is None or share.workspace_id != ws.id:
            raise NotFound(f"No such share: {share_id}")
        return share

    def effective_users(self, ws_id: int, *, editors_only: bool = False) -> set[int]:
        """Ids of the users a workspace is shared with, directly or through their groups."""
        users: set[int] = set()
        for share in self.db.scalars(select(Share).where(Share.workspace_id == ws_id, Share.kind == COLLABORATE)):
            if editors_only and share.level != "editor":
                continue
            if share.user is not None:
                users.add(share.user.id)
            elif share.group is not None:
                users.update(u.id for u in share.group.users)
        return users

    # ---------------------------------------------------------------- collaborate
    def share(
        self, ws: Workspace, level: str, actor: str, *, user: hub_orm.User | None = None,
        group: hub_orm.Group | None = None,
    ) -> tuple[Share, bool]:
        """Share ``ws`` with a user or a group at ``level``; returns (share, created).

        Sharing again with the same user or group changes the level.
        """
        if level not in LEVELS:
            raise Unprocessable(f"Unknown level {level!r}; one of {list(LEVELS)}")
        if user is not None and user.id == ws.owner_id:
            raise Unprocessable("A workspace cannot be shared with its owner")
        if user is not None and self.posix_group_prefix is not None and level == "editor":
            self.accounts.owner(user.name)  # 409 if the editor has no system account
        self._check_ready(ws)
        where = Share.user_id == user.id if user is not None else Share.group_id == group.id
        share = self.db.scalar(select(Share).where(Share.workspace_id == ws.id, Share.kind == COLLABORATE, where))
        created = share is None
        if share is None:
            share = Share(
                workspace=ws, owner_id=ws.owner_id, kind=COLLABORATE, level=level, status=ACCEPTED,
                user=user, group=group, created_by=actor,
            )
            self.db.add(share)
        elif share.level == level:
            return share, False
        share.level = level
        share.updated_at = utcnow()
        self.db.flush()
        self._sync_roles(ws)
        self._record(share, "shared", actor)
        affected = {user.id} if user is not None else {u.id for u in group.users}
        for uid in sorted(affected - {ws.owner_id}):
            recipient = self.db.get(hub_orm.User, uid)
            self.notifier.notify(
                recipient,
                f"{ws.owner.name} shared workspace {ws.name!r} with you",
                f"{ws.owner.name} shared the workspace {ws.name!r} with you"
                f"{' (group ' + group.name + ')' if group is not None else ''} as {level}.",
                actor=actor,
                link=f"workspaces/{ws.id}",
                data={"workspace_id": ws.id, "share_id": share.id},
            )
        self.db.commit()
        self.version += 1
        return share, created

    def revoke(self, share: Share, actor: str) -> None:
        """Delete a share: a collaboration ends at once; a pending invitation is withdrawn."""
        ws = share.workspace
        if share.kind == COPY and share.copy_state in (QUEUED, COPYING, PLACING):
            raise Conflict("The copy is being made; delete the share when it is done")
        if share.kind == COLLABORATE:
            before = self.effective_users(ws.id)
            self.db.delete(share)
            self.db.flush()
            self._sync_roles(ws)
            lost = before - self.effective_users(ws.id)
            self._revoke_server_tokens(ws, lost)
            self._record(share, "revoked", actor)
            for uid in lost:
                self.notifier.notify(
                    self.db.get(hub_orm.User, uid),
                    f"Workspace {ws.name!r} is no longer shared with you",
                    f"{ws.owner.name} stopped sharing the workspace {ws.name!r} with you.",
                    actor=actor,
                )
        else:
            self.db.delete(share)
            if share.status == PENDING:
                self._record(share, "withdrawn", actor)
        self.db.commit()
        self.version += 1

    def _check_ready(self, ws: Workspace) -> None:
        if ws.status in (WorkspaceStatus.deleting.value, WorkspaceStatus.initializing.value):
            raise Conflict(f"Workspace {ws.slug!r} is {ws.status}")

    def _sync_roles(self, ws: Workspace) -> None:
        """Make the JupyterHub roles of ``ws`` match its shares (in the session)."""
        grants = _grants_by_workspace(self.db, [ws.id]).get(ws.id, [])
        for level in LEVELS:
            at_level = [s for s in grants if s.level == level]
            name = role_name(ws.id, level)
            if not at_level:
                role = hub_orm.Role.find(self.db, name)
                if role is not None:
                    self.db.delete(role)
                continue
            spec = _role_spec(ws, level, at_level)
            role = hub_roles.create_role(
                self.db, {k: spec[k] for k in ("name", "description", "scopes")}, commit=False
            )
            role.users = [s.user for s in at_level if s.user is not None]
            role.groups = [s.group for s in at_level if s.group is not None]

    def _revoke_server_tokens(self, ws: Workspace, user_ids: set[int]) -> None:
        """Delete these users' OAuth tokens for the workspace's server (its OAuth client)."""
        if not user_ids:
            return
        spawner = self.db.scalar(
            select(hub_orm.Spawner).where(hub_orm.Spawner.user_id == ws.owner_id, hub_orm.Spawner.name == ws.slug)
        )
        if spawner is None or not spawner.oauth_client_id:
            return
        tokens = self.db.scalars(
            select(hub_orm.APIToken).where(
                hub_orm.APIToken.user_id.in_(user_ids), hub_orm.APIToken.client_id == spawner.oauth_client_id
            )
        )
        for token in tokens:
            self.db.delete(token)

    def _record(self, share: Share, status: str, actor: str, reason: str | None = None) -> None:
        self.events.record(
            self.db,
            Event(
                kind="share",
                owner_id=share.owner_id,
                workspace_id=share.workspace_id,
                actor=actor,
                status=status,
                reason=reason,
                data={
                    "share_id": share.id,
                    "share_kind": share.kind,
                    "level": share.level,
                    "user": share.user.name if share.user is not None else None,
                    "group": share.group.name if share.group is not None else None,
                },
            ),
        )

    # ---------------------------------------------------------------- POSIX groups
    def _posix_plan(self, ws: Workspace) -> tuple[str, list[str]] | None:
        """(group name, members) for the workspace, or None when there are no POSIX groups."""
        if self.posix_group_prefix is None:
            return None
        editors = self.effective_users(ws.id, editors_only=True) - {ws.owner_id}
        if not editors and posixgroups.gid_of(posixgroups.group_name(self.posix_group_prefix, ws.id)) is None:
            return None
        members = [ws.owner.name]
        for uid in sorted(editors):
            name = self.db.get(hub_orm.User, uid).name
            try:
                self.accounts.owner(name)
            except Conflict:
                self.log.warning("Workspace %s: editor %s has no system account; not in its group", ws.id, name)
                continue
            members.append(name)
        return posixgroups.group_name(self.posix_group_prefix, ws.id), members

    async def apply_posix(self, ws: Workspace) -> None:
        """Apply the workspace's POSIX group (editors' accounts, group-shared tree)."""
        plan = self._posix_plan(ws)
        if plan is None:
            return
        name, members = plan
        directory = ws.directory
        async with self._posix_lock:
            await asyncio.to_thread(self._apply_posix, name, members, directory)

    def _apply_posix(self, name: str, members: list[str], directory: str) -> None:
        gid = posixgroups.ensure_group(name)
        if os.path.isdir(directory) and not posixgroups.is_shared(directory, gid):
            self.log.info("Sharing %s with POSIX group %s", directory, name)
            posixgroups.share_tree(directory, gid, self.log)
        if posixgroups.set_members(name, members):
            self.log.info("POSIX group %s: members %s", name, members)

    # ---------------------------------------------------------------- copies
    def invite_copy(self, ws: Workspace, user: hub_orm.User, name: str | None, actor: str) -> Share:
        if user.id == ws.owner_id:
            raise Unprocessable("Send copies to other users; duplicate your own workspaces by creating a new one")
        self._check_ready(ws)
        pending = self.db.scalar(
            select(Share).where(Share.workspace_id == ws.id, Share.kind == COPY, Share.user_id == user.id,
                                Share.status == PENDING)
        )
        if pending is not None:
            raise Conflict(f"{user.name} already has a pending copy of {ws.name!r} (share {pending.id})")
        share = Share(
            workspace=ws, owner_id=ws.owner_id, kind=COPY, status=PENDING, user=user, created_by=actor,
            copy_name=(name or ws.name).strip(),
        )
        self.db.add(share)
        self.db.flush()
        self._record(share, "invited", actor)
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
        if share.kind != COPY or share.user_id != user.id:
            raise Conflict("Only copy invitations are accepted; collaborations are live already")
        if share.status == ACCEPTED:
            return share
        if share.status != PENDING:
            raise Conflict(f"This invitation was {share.status}")
        ws = share.workspace
        self._check_ready(ws)
        self.accounts.owner(user.name)
        self.quotas.check_disk(user, ws.disk_usage_bytes)
        share.status = ACCEPTED
        share.responded_at = utcnow()
        share.copy_state = QUEUED
        self._record(share, "accepted", user.name)
        self.db.commit()
        self._wake.set()
        return share

    def decline(self, share: Share, user: hub_orm.User) -> Share:
        if share.kind != COPY or share.user_id != user.id:
            raise Conflict("Only copy invitations can be declined; the owner ends a collaboration")
        if share.status == DECLINED:
            return share
        if share.status != PENDING:
            raise Conflict(f"This invitation was {share.status}")
        share.status = DECLINED
        share.responded_at = utcnow()
        self._record(share, "declined", user.name)
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

    def _temp_dirs(self, share: Share) -> list[str]:
        parent = os.path.join(self.storage.root, share.user.name)
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

    async def process_copies(self) -> None:
        """Make every queued copy, one at a time."""
        queued = list(self.db.scalars(select(Share.id).where(Share.kind == COPY, Share.copy_state == QUEUED)))
        for share_id in queued:
            await self._copy(share_id)

    async def _copy(self, share_id: int) -> None:
        share = self.db.get(Share, share_id)
        if share is None or share.copy_state != QUEUED:
            return
        recipient, source = share.user, share.workspace
        share.copy_state = COPYING
        share.copy_attempts += 1
        self.db.commit()
        tmp = reservation = None
        try:
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
            share.copy_state, share.copy_slug, share.copy_name = PLACING, slug, name
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
                permanent = isinstance(e, (Conflict, QuotaExceeded)) or share.copy_attempts >= self.copy_max_attempts
            self.log.warning("Copy %s (attempt %s) failed: %s", share.id, share.copy_attempts, reason)
            share.copy_error = reason
            share.copy_state = FAILED if permanent else QUEUED
            if permanent:
                self._record(share, "copy-failed", "hub", reason)
                for user in (share.user, share.workspace.owner):
                    self.notifier.notify(
                        user,
                        f"The copy of {share.workspace.name!r} failed",
                        f"Copying the workspace {share.workspace.name!r} for {share.user.name} failed: {reason}",
                        link="shared" if user is share.user else f"workspaces/{share.workspace_id}",
                        data={"share_id": share.id},
                    )
            self.db.commit()
        finally:
            if reservation is not None:
                self.quotas.release_disk(reservation)  # unless the copy became the new workspace's usage

    def _place(self, share: Share, directory: str, usage_bytes: int, reservation: Reservation) -> None:
        """The copied directory is in place: give it its workspace row, whose usage the
        copy's reservation turns into."""
        source = share.workspace
        os.chmod(directory, self.storage.dir_mode)
        ws = self.workspaces.adopt(
            share.user, share.copy_name, share.copy_slug, directory,
            description=f"Copy of {source.owner.name}/{source.slug}" + (
                f": {source.description}" if source.description else ""),
            actor=share.user.name,
        )
        share.copy_workspace_id = ws.id
        share.copy_state = DONE
        share.copy_bytes = usage_bytes
        share.copy_error = None
        self._record(share, "copied", "hub")
        self.notifier.notify(
            share.user,
            f"Your copy of {source.name!r} is ready",
            f"Your copy of {source.owner.name}'s workspace {source.name!r} is ready:"
            f" workspace {ws.name!r} ({fmt_bytes(usage_bytes)}).",
            link=f"workspaces/{ws.id}",
            data={"share_id": share.id, "workspace_id": ws.id},
        )
        self.notifier.notify(
            source.owner,
            f"{share.user.name} accepted the copy of {source.name!r}",
            f"{share.user.name} accepted the copy of the workspace {source.name!r}; it is now their"
            f" workspace {ws.name!r}.",
            actor=share.user.name,
            link=f"workspaces/{source.id}",
            data={"share_id": share.id},
        )
        self.quotas.commit_disk(reservation, ws, usage_bytes)

    def recover(self) -> None:
        """At startup: re-queue copies the hub was making when it stopped, finish placed ones."""
        for share in self.db.scalars(select(Share).where(Share.copy_state.in_([COPYING, PLACING]))):
            leftovers = self._temp_dirs(share)
            final = self.storage.directory_for(share.user.name, share.copy_slug) if share.copy_slug else None
            if (
                share.copy_state == PLACING and final and os.path.isdir(final) and not leftovers
                and Workspace.find_by_slug(self.db, share.user_id, share.copy_slug) is None
            ):
                self.log.info("Copy %s was moved into place before the hub stopped; adopting it", share.id)
                # its reservation ended with the hub that made it (the quota had room for it)
                self._place(share, final, self.storage.usage_bytes(final), Reservation(share.user))
                continue
            for path in leftovers:
                self.log.info("Removing %s, left by an interrupted copy", path)
                shutil.rmtree(path, ignore_errors=True)
            self.log.info("Copy %s was interrupted; trying again", share.id)
            share.copy_state = QUEUED
        self.db.commit()

    # ---------------------------------------------------------------- background
    def start(self) -> None:
        self.recover()
        self._tasks = [asyncio.ensure_future(self._copy_loop()), asyncio.ensure_future(self._sync_loop())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _copy_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.process_copies()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.db.rollback()
                self.log.exception("Copy loop failed; continuing")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.copy_retry_seconds)
            except asyncio.TimeoutError:
                pass

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.db.rollback()
                self.log.exception("Share sync failed; continuing")
            if not self.sync_interval:
                return
            await asyncio.sleep(self.sync_interval)

    async def sync(self) -> None:
        """Re-make every shared workspace's roles and POSIX group, drop those of unshared ones."""
        grants = _grants_by_workspace(self.db)
        wanted = set()
        for ws_id, shares in grants.items():
            ws = shares[0].workspace
            self._sync_roles(ws)
            wanted.update(role_name(ws_id, level) for level in LEVELS if any(s.level == level for s in shares))
        for role in self.db.scalars(select(hub_orm.Role).where(hub_orm.Role.name.startswith(ROLE_PREFIX))):
            if role.name not in wanted:
                self.log.info("Deleting role %s: its workspace is no longer shared", role.name)
                self.db.delete(role)
        self.db.commit()
        self.version += 1
        if self.posix_group_prefix is None:
            return
        for ws_id in grants:
            await self.apply_posix(grants[ws_id][0].workspace)
        existing = {ws_id for (ws_id,) in self.db.execute(select(Workspace.id))}
        for name in await asyncio.to_thread(posixgroups.groups_with_prefix, self.posix_group_prefix):
            if int(name[len(self.posix_group_prefix):]) not in existing:
                self.log.info("Deleting POSIX group %s: its workspace is gone", name)
                await asyncio.to_thread(posixgroups.delete_group, name)

    async def _forget_workspace(self, workspace_id: int) -> None:
        """A workspace was deleted: drop its roles (its shares went with it) and POSIX group."""
        for level in LEVELS:
            role = hub_orm.Role.find(self.db, role_name(workspace_id, level))
            if role is not None:
                self.db.delete(role)
        self.db.commit()
        self.version += 1
        if self.posix_group_prefix is not None:
            name = posixgroups.group_name(self.posix_group_prefix, workspace_id)
            await asyncio.to_thread(posixgroups.delete_group, name)

    # ---------------------------------------------------------------- recipients
    def search(self, caller: hub_orm.User, query: str, limit: int = 20) -> dict[str, Any]:
        """Users and groups matching ``query`` (name or display name) that ``caller`` may find.

        ``search_mode`` "all": every user and group of the hub; "groups": only
        the caller's groups and their members. E-mail addresses only when
        ``show_email``. The caller is not listed.
        """
        pattern = f"%{query.lower()}%"
        users_q = select(hub_orm.User).where(
            hub_orm.User.id != caller.id,
            or_(func.lower(hub_orm.User.name).like(pattern), func.lower(cast(hub_orm.User.user_info, Text)).like(pattern)),
        )
        groups_q = select(hub_orm.Group).where(func.lower(hub_orm.Group.name).like(pattern))
        if self.search_mode == "groups":
            my_groups = [g.id for g in caller.groups]
            users_q = users_q.where(
                hub_orm.User.id.in_(
                    select(hub_orm.user_group_map.c.user_id).where(hub_orm.user_group_map.c.group_id.in_(my_groups))
                )
            )
            groups_q = groups_q.where(hub_orm.Group.id.in_(my_groups))
        needle = query.lower()
        users = []
        for user in self.db.scalars(users_q.order_by(hub_orm.User.name)):
            display = display_name_of(user.user_info, user.name)
            # the JSON text also holds the e-mail address: match names only
            if needle not in user.name.lower() and needle not in display.lower():
                continue
            model = {"name": user.name, "display_name": display}
            if self.show_email:
                model["email"] = email_of(user.user_info)
            users.append(model)
            if len(users) >= limit:
                break
        groups = [{"name": g.name} for g in self.db.scalars(groups_q.order_by(hub_orm.Group.name).limit(limit))]
        return {"users": users, "groups": groups}

    # ---------------------------------------------------------------- models
    def model(self, share: Share) -> dict[str, Any]:
        ws = share.workspace
        return {
            "id": share.id,
            "kind": share.kind,
            "level": share.level,
            "status": share.status,
            "workspace_id": share.workspace_id,
            "workspace": {"id": ws.id, "owner": ws.owner.name, "slug": ws.slug, "name": ws.name},
            "owner": ws.owner.name,
            "user": share.user.name if share.user is not None else None,
            "group": share.group.name if share.group is not None else None,
            "created_by": share.created_by,
            "created_at": _iso(share.created_at),
            "responded_at": _iso(share.responded_at),
            "copy": None if share.kind != COPY else {
                "name": share.copy_name,
                "state": share.copy_state,
                "attempts": share.copy_attempts,
                "error": share.copy_error,
                "bytes": share.copy_bytes,
                "workspace_id": share.copy_workspace_id,
            },
        }


def _iso(dt) -> str | None:
    return None if dt is None else dt.isoformat() + "Z"

