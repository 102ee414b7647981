"""Collaborate shares: who may work in a live workspace, and the JupyterHub roles that follow.

**Collaborate** (the default): the owner shares a workspace with users or hub
groups, as ``viewer`` or ``editor``. The shares table is the truth, and three
things follow from it, kept in step on every change and re-made by a sync at
startup and every ``UWSHub.share_sync_interval`` seconds:

- uws-hub's own authorization (:mod:`uws_hub.access`): grantees read (viewers
  and editors), write files and launch or stop jobs (editors) in the
  workspace; launches only with ``UWSHub.editors_run_code``: an editor's job
  runs as the editor's own account, with the workspace's POSIX group
  (:func:`uws_hub.access.launcher_of`), and stops when the editor stops
  being an editor (``editors_lost``). Renaming,
  deleting and sharing stay with the owner.
- JupyterHub roles, one per shared workspace and level, granted to the
  grantee users and groups directly: ``uws-ws-<id>-viewer`` holds
  ``access:servers!server=<owner>/<slug>`` (what lets grantees through
  JupyterHub's OAuth into the workspace's running server, with a browser or a
  token) and ``custom:uws:read:workspaces!server=<owner>/<slug>``;
  ``uws-ws-<id>-editor`` adds the write and launch scopes, and
  ``custom:uws:write:servers`` (writing in a server the editor launched there,
  which only that server reads). JupyterHub deletes
  roles missing from ``load_roles`` at startup, so the hub re-declares them
  (:func:`role_specs`). Roles are granted to users directly rather than
  through a hub group of the workspace's own, because authenticators with
  ``manage_groups`` replace a user's groups at every login.
- With ``UWSHub.system_users``, a POSIX group per workspace, with no members:
  the hub gives it to the jobs of the owner and the editors in the workspace
  (:mod:`uws_hub.sharing.posixgroups`).

Revoking deletes the share, re-makes the roles (so the hub refuses the grantee
at once), deletes the grantee's OAuth tokens for the workspace's server,
and kills their processes that still hold the workspace's POSIX group (whatever
started them: a daemon left by a terminal of their server). A server that is already open asks the hub
again within ``UWSHub.server_auth_cache_seconds`` (see :mod:`uws_hub.serverconfig`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Container, Iterable
from dataclasses import dataclass
from typing import Any

from jupyterhub import orm as hub_orm
from jupyterhub import roles as hub_roles
from sqlalchemy import event as sa_event
from sqlalchemy import func, or_, select, union_all
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, aliased

from ..accounts.deletions import UserDeletions
from ..accounts.system import SystemAccounts
from ..errors import Conflict, NotFound, Unprocessable
from ..events.bus import EventBus
from ..events.notify import Notifier
from ..orm import Job, Share, Workspace, users_being_deleted, utcnow
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, ROLE_PREFIX, WRITE_SERVERS, WRITE_WORKSPACES
from ..states import (
    ACTIVE_JOB_STATUSES,
    UNFINISHED_COPY_STATES,
    JobTarget,
    ShareKind,
    ShareLevel,
    ShareStatus,
    WorkspaceStatus,
)
from . import posixgroups
from .kills import GroupKills

LEVELS = tuple(level.value for level in ShareLevel)
#: how often the worker that kills former editors' processes looks whether their jobs ended,
#: at first: each look that finds them still running doubles the wait, up to the most
STRAYS_POLL_SECONDS = 0.5
STRAYS_POLL_MAX_SECONDS = 10.0
#: how long past a job's stop timeout (when a stop that did not end is marked failed) the
#: worker waits for former editors' jobs that still look unfinished: then it kills anyway
STRAYS_MARGIN_SECONDS = 30.0
#: how many workspaces' roles the share sync compares with their shares at a time: between
#: two such chunks it gives the event loop back (:meth:`ShareService.sync_roles`)
ROLES_CHUNK = 200
#: how many ids one ``IN (...)`` of the share sync names at most (databases limit a
#: statement's parameters)
IDS_PER_QUERY = 500
#: who holds which JupyterHub role: (table, its column of the holder's id), users then groups
ROLE_MAPS = [(hub_orm.Base.metadata.tables[f"{entity}_role_map"], f"{entity}_id") for entity in ("user", "group")]


def role_name(workspace_id: int, level: str) -> str:
    return f"{ROLE_PREFIX}{workspace_id}-{level}"


def _workspace_of_role(name: str) -> int | None:
    """The id of the workspace whose role is named ``name`` (:func:`role_name`), or None."""
    m = re.fullmatch(rf"{re.escape(ROLE_PREFIX)}(\d+)-({'|'.join(LEVELS)})", name)
    return int(m[1]) if m else None


def _role_description(owner_name: str, slug: str, level: str) -> str:
    return f"{level.capitalize()}s of workspace {owner_name}/{slug} (managed by uws-hub)"


def role_scopes(owner_name: str, slug: str, level: str) -> list[str]:
    server = f"{owner_name}/{slug}"
    scopes = [f"access:servers!server={server}", f"{READ_WORKSPACES}!server={server}"]
    if level == ShareLevel.editor.value:
        # and writing in the live server they launch (the server's guard reads it)
        scopes += [f"{scope}!server={server}" for scope in (WRITE_WORKSPACES, LAUNCH_JOBS, WRITE_SERVERS)]
    return scopes


def wanted_roles(db: Session, ws_ids: list[int] | None = None) -> dict[str, tuple[str, list[str], set[int], set[int]]]:
    """Role name -> (description, scopes, user ids, group ids): the roles the shares of
    these workspaces (None: of every workspace) call for, in one query."""
    owner = aliased(hub_orm.User)
    query = (
        select(Share.workspace_id, Share.level, Share.user_id, Share.group_id, owner.name, Workspace.slug)
        .join(Workspace, Workspace.id == Share.workspace_id)
        .join(owner, owner.id == Workspace.owner_id)
        .where(Share.kind == ShareKind.collaborate.value)
    )
    if ws_ids is not None:
        query = query.where(Share.workspace_id.in_(ws_ids))
    wanted: dict[str, tuple[str, list[str], set[int], set[int]]] = {}
    for ws_id, level, user_id, group_id, owner_name, slug in db.execute(query):
        name = role_name(ws_id, level)
        if name not in wanted:
            wanted[name] = (
                _role_description(owner_name, slug, level),
                role_scopes(owner_name, slug, level),
                set(),
                set(),
            )
        if user_id is not None:
            wanted[name][2].add(user_id)
        if group_id is not None:
            wanted[name][3].add(group_id)
    return wanted


def _users_renamed(db: Session) -> list[hub_orm.User]:
    """The JupyterHub users whose name the session changes at its flush."""
    users = [getattr(obj, "orm_user", obj) for obj in db.dirty]
    return [user for user in users if isinstance(user, hub_orm.User) and sa_inspect(user).attrs.name.history.deleted]


def _names(db: Session, table: type[hub_orm.User] | type[hub_orm.Group], ids: set[int]) -> dict[int, str]:
    """Id -> name of these users or groups, :data:`IDS_PER_QUERY` to a query."""
    ordered = sorted(ids)
    return {
        row_id: name
        for start in range(0, len(ordered), IDS_PER_QUERY)
        for row_id, name in db.execute(
            select(table.id, table.name).where(table.id.in_(ordered[start : start + IDS_PER_QUERY]))
        )
    }


def role_specs(db: Session) -> list[dict[str, Any]]:
    """JupyterHub role definitions (``load_roles`` entries) for every shared workspace."""
    wanted = wanted_roles(db)
    user_ids = set().union(*(users for _, _, users, _ in wanted.values()))
    group_ids = set().union(*(groups for _, _, _, groups in wanted.values()))
    user_names = _names(db, hub_orm.User, user_ids)
    group_names = _names(db, hub_orm.Group, group_ids)
    return [
        {
            "name": name,
            "description": description,
            "scopes": scopes,
            "users": sorted(user_names[uid] for uid in users),
            "groups": sorted(group_names[gid] for gid in groups),
        }
        for name, (description, scopes, users, groups) in sorted(wanted.items())
    ]


@dataclass(frozen=True)
class PosixPlan:
    """Who may hold a workspace's POSIX group: ``holders``, the hub's users allowed to
    (its owner and its editors, as (id, name): a user's name finds their account), and
    ``uids``, the accounts of those that have one."""

    group: str
    holders: frozenset[tuple[int, str]]
    uids: frozenset[int]


class ShareService:
    """Collaborate shares, their roles and POSIX groups; what every share kind shares
    (lookups, revoking, events)."""

    def __init__(
        self,
        db: Session,
        accounts: SystemAccounts,
        notifier: Notifier,
        events: EventBus,
        log: logging.Logger,
        *,
        posix_group_prefix: str | None,
        editors_lost: Callable[[Workspace, set[int], str], object] = lambda ws, user_ids, actor: None,
        stopping_timeout: float = 120,
        group_kills: GroupKills | None = None,
        deletions: UserDeletions | None = None,
    ):
        self.db = db
        self.accounts = accounts
        self.notifier = notifier
        self.events = events
        self.log = log
        #: None: no POSIX groups (single-account mode)
        self.posix_group_prefix = posix_group_prefix
        #: called with a workspace, the users who were its editors and are no longer, and
        #: the actor, once that is committed: their jobs there stop (they run as them)
        self.editors_lost = editors_lost
        #: how long the strays of a workspace wait for its former editors' jobs to end
        #: (``UWSHub.job_stopping_timeout`` and a margin; :meth:`kill_strays_worker`)
        self.strays_wait_seconds = stopping_timeout + STRAYS_MARGIN_SECONDS
        #: bumped on every change of who may see what (event stream caches compare it), before
        #: the commit that makes it: the streams are offered that commit's events (a share's
        #: ``revoked``) from its after-commit hook, where the old version kept the old answer
        self.version = 0
        self._posix_lock = asyncio.Lock()
        #: the kills of workspaces' strays under way, which editors' job starts wait for
        #: (shared with the job service's starts)
        self.group_kills = group_kills or GroupKills()
        #: the users being deleted: no share is made to or by them (nor a copy sent)
        self.deletions = deletions or UserDeletions()
        #: workspace id -> the uids allowed to hold its group when it was last applied
        self._allowed: dict[int, set[int]] = {}
        #: workspaces whose groups lost allowed accounts: their processes go (:meth:`kill_strays_worker`)
        self._strays: set[int] = set()
        self._strays_wake = asyncio.Event()
        #: the share sync's listing of the workspace groups (name -> its ``grp`` entry: gid,
        #: members), made under the POSIX lock, while the sync runs: its applies and its kill
        #: read the gids there instead of a ``getgrnam`` each. A group deleted since (under
        #: the lock) is dropped from it; one made since is not in it, and is looked up.
        self._listed: dict[str, Any] | None = None

    # ---------------------------------------------------------------- deleted and renamed owners
    def attach(self, db: Session) -> None:
        """Keep the roles of a deleted or renamed user's workspaces right in the same commit
        (see :meth:`_before_flush`)."""
        sa_event.listen(db, "before_flush", self._before_flush)

    def _before_flush(self, db: Session, flush_context: Any, instances: Any) -> None:
        """A workspace's roles name its server by its owner's name and slug
        (:func:`role_scopes`), which JupyterHub's login to a server takes. A JupyterHub user
        being deleted takes their workspaces and shares with them (``ON DELETE CASCADE``),
        and their roles go too; a user renamed (JupyterHub's ``PATCH``) has theirs name the
        new name. Left for the next share sync, they opened a new user of the old name's
        server of the same slug to the first owner's collaborators meanwhile."""
        gone = users_being_deleted(db)
        renamed = {user.id: user.name for user in _users_renamed(db)}
        if not gone and not renamed:
            return
        with db.no_autoflush:
            owned = db.execute(
                select(Workspace.id, Workspace.slug, Workspace.owner_id).where(
                    Workspace.owner_id.in_(gone | set(renamed))
                )
            )
            slugs: dict[int, str] = {}
            owners: dict[int, int] = {}
            for ws_id, slug, owner_id in owned:
                slugs[ws_id], owners[ws_id] = slug, owner_id
            for role in db.scalars(select(hub_orm.Role).where(hub_orm.Role.name.startswith(ROLE_PREFIX))):
                of = _workspace_of_role(role.name)
                if of is None or of not in slugs:
                    continue
                self.version += 1
                if owners[of] in gone:
                    db.delete(role)
                else:
                    level = role.name.rsplit("-", 1)[1]
                    role.scopes = role_scopes(renamed[owners[of]], slugs[of], level)
                    role.description = _role_description(renamed[owners[of]], slugs[of], level)

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

    def invitations_waiting(self, user: hub_orm.User) -> int:
        """How many copies sent to this user wait for them to accept or decline."""
        where = (Share.user_id == user.id) & (Share.status == ShareStatus.pending.value)
        return self.db.scalar(select(func.count(Share.id)).where(where)) or 0

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
        return self.grantees([ws_id], editors_only=editors_only).get(ws_id, set())

    def grantees(self, ws_ids: Collection[int] | None, *, editors_only: bool = False) -> dict[int, set[int]]:
        """Workspace id -> ids of the users it is shared with, directly or through their
        groups (``editors_only``: as editors), for ``ws_ids`` (None: every workspace), in
        one query (the share sync asks for every shared workspace)."""
        where = [Share.kind == ShareKind.collaborate.value]
        if editors_only:
            where.append(Share.level == ShareLevel.editor.value)
        if ws_ids is not None:
            where.append(Share.workspace_id.in_(list(ws_ids)))
        members = hub_orm.user_group_map.c
        direct = select(Share.workspace_id, Share.user_id).where(*where, Share.user_id.is_not(None))
        via_groups = select(Share.workspace_id, members.user_id).join_from(
            Share, hub_orm.user_group_map, members.group_id == Share.group_id
        )
        users: dict[int, set[int]] = {}
        for ws_id, user_id in self.db.execute(union_all(direct, via_groups.where(*where))):
            users.setdefault(ws_id, set()).add(user_id)
        return users

    def share(
        self,
        ws: Workspace,
        level: str,
        actor: str,
        *,
        user: hub_orm.User | None = None,
        group: hub_orm.Group | None = None,
    ) -> tuple[Share, bool]:
        """Share ``ws`` with a user or a group at ``level``; returns (share, created).

        Sharing again with the same user or group changes the level.
        """
        if level not in LEVELS:
            raise Unprocessable(f"Unknown level {level!r}; one of {list(LEVELS)}")
        if user is not None and user.id == ws.owner_id:
            raise Unprocessable("A workspace cannot be shared with its owner")
        # (a share's roles and POSIX group member made for a user being deleted outlived them:
        # a group's members are given them as a user is, so one of them being deleted is refused too)
        self.deletions.check(ws.owner, user, *(group.users if group is not None else ()))
        if user is not None and self.posix_group_prefix is not None and level == ShareLevel.editor.value:
            self.accounts.owner(user.name)  # 409 if the editor has no system account
        self.check_ready(ws)
        if user is None and group is None:
            raise Unprocessable("Share with a user or a group")
        where = Share.user_id == user.id if user is not None else Share.group_id == group.id  # type: ignore[union-attr]
        share = self.db.scalar(
            select(Share).where(Share.workspace_id == ws.id, Share.kind == ShareKind.collaborate.value, where)
        )
        created = share is None
        editors_before = self.effective_users(ws.id, editors_only=True)
        if share is None:
            share = Share(
                workspace=ws,
                owner_id=ws.owner_id,
                kind=ShareKind.collaborate.value,
                level=level,
                status=ShareStatus.accepted.value,
                user=user,
                group=group,
                created_by=actor,
            )
            self.db.add(share)
        elif share.level == level:
            return share, False
        share.level = level
        share.updated_at = utcnow()
        self.db.flush()
        self._sync_roles(ws)
        self.record(share, "shared", actor)
        affected = {user.id} if user is not None else {u.id for u in group.users}  # type: ignore[union-attr]
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
        self.version += 1
        self.db.commit()
        self._stop_lost_editors(ws, editors_before, actor)
        return share, created

    def _stop_lost_editors(self, ws: Workspace, editors_before: set[int], actor: str) -> None:
        """Stop the jobs of who were editors of ``ws`` before a change and are not now."""
        lost = editors_before - self.effective_users(ws.id, editors_only=True) - {ws.owner_id}
        if lost:
            self.editors_lost(ws, lost, actor)

    def revoke(self, share: Share, actor: str) -> None:
        """Delete a share: a collaboration ends at once; a pending invitation is withdrawn."""
        ws = share.workspace
        if share.kind == ShareKind.copy.value and share.copy_state in UNFINISHED_COPY_STATES:
            raise Conflict("The copy is being made; delete the share when it is done")
        editors_before: set[int] = set()
        if share.kind == ShareKind.collaborate.value:
            before = self.effective_users(ws.id)
            editors_before = self.effective_users(ws.id, editors_only=True)
            self.db.delete(share)
            self.db.flush()
            self._sync_roles(ws)
            lost = before - self.effective_users(ws.id)
            self._revoke_server_tokens(ws, lost)
            self.record(share, "revoked", actor)
            for uid in lost:
                self.notifier.notify(
                    self.db.get(hub_orm.User, uid),
                    f"Workspace {ws.name!r} is no longer shared with you",
                    f"{ws.owner.name} stopped sharing the workspace {ws.name!r} with you.",
                    actor=actor,
                )
        else:
            self.db.delete(share)
            if share.status == ShareStatus.pending.value:
                self.record(share, "withdrawn", actor)
        self.version += 1
        self.db.commit()
        self._stop_lost_editors(ws, editors_before, actor)

    def check_ready(self, ws: Workspace) -> None:
        if ws.status in (WorkspaceStatus.deleting.value, WorkspaceStatus.initializing.value):
            raise Conflict(f"Workspace {ws.slug!r} is {ws.status}")

    def _sync_roles(self, ws: Workspace) -> None:
        """Make the JupyterHub roles of ``ws`` match its shares (in the session)."""
        self._sync_roles_of([ws.id])

    def _sync_roles_of(self, ws_ids: Collection[int], stray_roles: Iterable[str] = ()) -> bool:
        """Make the JupyterHub roles of these workspaces match their shares, writing only
        what differs (in the session; nothing when nothing does), and delete the roles
        named ``stray_roles`` (uws-hub's prefix, no workspace's role name). Returns whether
        it changed anything.

        What the shares say and what the roles hold are read in a few queries (each
        workspace's shares, its roles' scopes and members), then compared: re-made
        workspace by workspace on every sync, a thousand shared workspaces' roles took
        the hub's event loop for seconds. Whatever differs is repaired, whoever changed
        it: a role's scopes or description edited, a user or a hub group granted it or
        removed from it by hand (JupyterHub's API), a role deleted."""
        ids = list(ws_ids)
        wanted = wanted_roles(self.db, ids)
        names = [role_name(ws_id, level) for ws_id in ids for level in LEVELS]
        # whole rows, not their columns: JupyterHub's type of ``scopes`` has no cache
        # key, so a statement naming it would be compiled anew each time (and warn)
        roles = {
            role.name: (role.id, role.description, role.scopes)
            for role in self.db.scalars(
                select(hub_orm.Role).where(or_(hub_orm.Role.name.in_(names), hub_orm.Role.name.in_(list(stray_roles))))
            )
        }
        held: dict[int, tuple[set[int], set[int]]] = {role_id: (set(), set()) for role_id, _, _ in roles.values()}
        for i, (table, column) in enumerate(ROLE_MAPS):
            pairs = select(table.c.role_id, table.c[column]).where(table.c.role_id.in_(list(held)))
            for role_id, member_id in self.db.execute(pairs):
                held[role_id][i].add(member_id)
        changed = False
        for name, (role_id, _, _) in roles.items():
            if name not in wanted:
                self.log.info("Deleting role %s: its workspace is no longer shared", name)
                self.db.delete(self.db.get_one(hub_orm.Role, role_id))
                changed = True
        for name, spec in wanted.items():
            description, scopes, user_ids, group_ids = spec
            if name in roles:
                role_id, had_description, had_scopes = roles[name]
                if (had_description, had_scopes, held[role_id]) == (description, scopes, (user_ids, group_ids)):
                    continue
            role_dict = {"name": name, "description": description, "scopes": scopes}
            role = hub_roles.create_role(self.db, role_dict, commit=False)  # (made, or its scopes set)
            role.users = [self.db.get_one(hub_orm.User, uid) for uid in sorted(user_ids)]
            role.groups = [self.db.get_one(hub_orm.Group, gid) for gid in sorted(group_ids)]
            changed = True
        return changed

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

    def record(self, share: Share, status: str, actor: str, reason: str | None = None) -> None:
        self.events.change(
            self.db,
            "share",
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
        )

    def _posix_plan(self, ws: Workspace) -> PosixPlan | None:
        """Who may hold the workspace's POSIX group (:meth:`_posix_plans`), or None when it
        has none and needs none, or there are no POSIX groups."""
        return self._posix_plans([ws], self.grantees([ws.id], editors_only=True)).get(ws.id)

    def _posix_plans(
        self,
        workspaces: Iterable[Workspace],
        editors: dict[int, set[int]],
        grouped: Container[int] | None = None,
        planned: dict[int, PosixPlan] | None = None,
        accounts: dict[str, int | Conflict | None] | None = None,
    ) -> dict[int, PosixPlan]:
        """Workspace id -> who may hold its POSIX group (its owner's and its editors'
        accounts), for those of ``workspaces`` that have editors (in ``editors``: see
        :meth:`grantees`) or a group (``grouped``: the ids of those whose group was listed;
        None: each group looked up); nothing when there are no POSIX groups.

        One pass for many workspaces: each account is looked up once. ``planned``: plans
        made before (the share sync's), kept for a workspace whose owner and editors are
        still the same users, under the same names. ``accounts``: accounts looked up before
        (:meth:`_account_uids`)."""
        prefix = self.posix_group_prefix
        if prefix is None:
            return {}
        accounts = dict(accounts or {})
        plans: dict[int, PosixPlan] = {}
        for ws in workspaces:
            group = posixgroups.group_name(prefix, ws.id)
            editor_ids = editors.get(ws.id, set()) - {ws.owner_id}
            if not editor_ids:
                has_group = ws.id in grouped if grouped is not None else posixgroups.gid_of(group) is not None
                if not has_group:
                    continue
            roles = [("owner", ws.owner_id), *(("editor", uid) for uid in sorted(editor_ids))]
            users = [(role, uid, self.db.get(hub_orm.User, uid)) for role, uid in roles]
            if users[0][2] is None:
                continue  # its owner deleted since the grants were read: it goes with them
            # (an editor deleted since holds nothing: a share sync raised, NoResultFound)
            named = [(role, uid, user.name) for role, uid, user in users if user is not None]
            holders = frozenset((uid, name) for _, uid, name in named)
            if planned is not None and (plan := planned.get(ws.id)) is not None and plan.holders == holders:
                plans[ws.id] = plan
                continue
            uids: set[int] = set()
            for role, _, name in named:
                # the owner's name is checked as the editors' are: it may have changed since the
                # workspace was made (JupyterHub renames users), to a system account's or to none
                if name not in accounts:
                    accounts.update(self._account_uids([name]))
                account = accounts[name]
                if isinstance(account, Conflict):
                    self.log.warning("Workspace %s: %s %s may not hold its group: %s", ws.id, role, name, account)
                elif account is not None:
                    uids.add(account)
            plans[ws.id] = PosixPlan(group, holders, frozenset(uids))
        return plans

    def _account_uids(self, names: Iterable[str]) -> dict[str, int | Conflict | None]:
        """Name -> the uid of the system account that may hold workspaces' groups as that
        user, or why none may (a :class:`Conflict`), or None (no system accounts). A
        ``getpwnam`` each: the share sync makes them in a thread, all at once (with
        accounts in a directory service, each may be a round trip to it; on the event
        loop, a thousand froze the hub)."""
        found: dict[str, int | Conflict | None] = {}
        for name in names:
            try:
                found[name] = self.accounts.owner(name).uid
            except Conflict as e:
                found[name] = e
        return found

    async def apply_posix(self, ws: Workspace, plan: PosixPlan | None = None) -> None:
        """Apply the workspace's POSIX group (a group-shared tree, no members); when an
        account lost the right to hold it, its processes that still do go. ``plan``: who
        may hold it, if the caller knows (the share sync plans every workspace at once)."""
        if plan is None:
            plan = self._posix_plan(ws)
        if plan is None:
            return
        directory = ws.directory
        async with self._posix_lock:
            await asyncio.to_thread(self._apply_posix, plan.group, directory)
        before = self._allowed.get(ws.id)
        self._allowed[ws.id] = set(plan.uids)
        if before is None or before - plan.uids:
            # who lost it keeps it in every process a job of theirs left (their write
            # access): those go (the first time since the hub started, whoever lost it
            # while the hub was not looking)
            self._strays.add(ws.id)
            self._strays_wake.set()

    def _apply_posix(self, name: str, directory: str) -> None:
        listed = (self._listed or {}).get(name)
        gid = listed.gr_gid if listed is not None else posixgroups.ensure_group(name)
        if os.path.isdir(directory) and not posixgroups.is_shared(directory, gid):
            self.log.info("Sharing %s with POSIX group %s", directory, name)
            posixgroups.share_tree(directory, gid, self.log)
        if (listed is None or listed.gr_mem) and posixgroups.clear_members(name):
            self.log.info("POSIX group %s: members removed (the hub gives it to jobs only)", name)

    def _allowed_by_group(
        self, ws_ids: Iterable[int], planned: dict[int, PosixPlan] | None = None
    ) -> dict[str, set[int]]:
        """Group name -> the uids allowed to hold it, for those of ``ws_ids`` that have a
        group, from the shares as they are now (:meth:`_posix_plans`), read just before
        the kill, under the POSIX lock.

        ``planned``: the share sync's plans, made before its awaits (one per workspace,
        for its apply and its kill): one query reads the editors again, and a workspace
        whose owner or editors changed since is planned again. Used as they were, an
        editor added meanwhile would have the job they just launched there killed."""
        workspaces = [ws for ws_id in ws_ids if (ws := self.db.get(Workspace, ws_id)) is not None]
        if planned is None:
            plans = self._posix_plans(workspaces, self.grantees([ws.id for ws in workspaces], editors_only=True))
        else:
            plans = self._posix_plans(workspaces, self.grantees(None, editors_only=True), planned.keys(), planned)
        return {plan.group: set(plan.uids) for plan in plans.values()}

    def _lost_launchers_jobs(self, ws_ids: Iterable[int]) -> dict[int, list[int]]:
        """For each of ``ws_ids`` that has some, the ids of its jobs launched by who is no
        editor of it any more that are still unfinished (being stopped): their processes
        hold its group until they end. One query for all the workspaces (the share sync
        asks for every workspace group), and the editors only of those with such jobs."""
        ids = list(ws_ids)
        if not ids:
            return {}
        rows = self.db.execute(
            select(Job.workspace_id, Job.id, Job.launcher_id).where(
                Job.workspace_id.in_(ids),
                Job.launcher_id.is_not(None),
                Job.launcher_id != Job.owner_id,
                Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
            )
        ).all()
        jobs: dict[int, list[tuple[int, int | None]]] = {}
        for ws_id, job_id, launcher_id in rows:
            jobs.setdefault(ws_id, []).append((job_id, launcher_id))
        lost = {}
        for ws_id, launched in jobs.items():
            editors = self.effective_users(ws_id, editors_only=True)
            if unfinished := sorted(job_id for job_id, launcher_id in launched if launcher_id not in editors):
                lost[ws_id] = unfinished
        return lost

    async def kill_strays_worker(self) -> None:
        """Kill the processes that hold the group of a workspace whose group some account
        may no longer hold and run as no account allowed to (its owner, its editors), once the jobs of its former editors have ended (their stop,
        not this kill, ends them: as a stop, not as a failure). A process left behind by a
        server (a terminal's ``setsid … &``) outlives the server's stop and the orphan
        sweep, and kept the group, and so write access, after its account's access ended.

        A job that never ends (a stop stuck where the hub cannot see) holds the kill back
        for ``strays_wait_seconds`` at most, then its workspace's strays are killed anyway,
        with a warning naming it. While jobs run, the looks grow further apart (from
        :data:`STRAYS_POLL_SECONDS` to :data:`STRAYS_POLL_MAX_SECONDS`; a workspace that
        loses an editor again starts over)."""
        prefix = self.posix_group_prefix
        if prefix is None:
            return
        #: workspace id -> when the worker first found its strays waiting
        waiting: dict[int, float] = {}
        delay = STRAYS_POLL_SECONDS
        while True:
            if not self._strays:
                await self._strays_wake.wait()
                delay = STRAYS_POLL_SECONDS
            else:
                try:
                    await asyncio.wait_for(self._strays_wake.wait(), delay)
                    delay = STRAYS_POLL_SECONDS
                except TimeoutError:
                    delay = min(2 * delay, STRAYS_POLL_MAX_SECONDS)
            self._strays_wake.clear()
            await self._kill_strays_round(prefix, waiting)

    async def _kill_strays_round(self, prefix: str, waiting: dict[int, float]) -> None:
        """One look of :meth:`kill_strays_worker`: kill the strays of the workspaces whose
        former editors' jobs ended or waited too long; the others, and all of them if the
        kill failed, stay for the next look."""
        now = time.monotonic()
        try:
            # the jobs read under the lock, with who may hold the groups (:meth:`sync`)
            async with self._posix_lock:
                ready = set()
                lost = self._lost_launchers_jobs(self._strays)
                for ws_id in sorted(self._strays):
                    since = waiting.setdefault(ws_id, now)
                    running = lost.get(ws_id, [])
                    if running and now - since > self.strays_wait_seconds:
                        self.log.warning(
                            "Job(s) %s of former editors of workspace %s still unfinished after %g s;"
                            " killing the processes that hold its group anyway",
                            running,
                            ws_id,
                            self.strays_wait_seconds,
                        )
                        running = []
                    if not running:
                        ready.add(ws_id)
                if ready:
                    await self._recheck_and_kill(sorted(ready))
                    # under the lock: a group that loses an account once it is free is looked at again
                    self._strays -= ready
            for ws_id in ready:
                waiting.pop(ws_id, None)
        except Exception:
            self.db.rollback()
            self.log.exception("Killing the processes of former editors holding workspace groups failed")

    async def _recheck_and_kill(self, ws_ids: list[int], planned: dict[int, PosixPlan] | None = None) -> None:
        """Kill the strays of these workspaces' groups, allowing who may hold them now
        (:meth:`_allowed_by_group`; under the POSIX lock). From the re-check to the end
        of the scan, the starts of editors' jobs there wait (:class:`GroupKills`): an
        editor added meanwhile is not in the re-check, and their new job's processes
        would be killed."""
        with self.group_kills.under_way(ws_ids):
            await asyncio.to_thread(self._kill_strays, self._allowed_by_group(ws_ids, planned))

    def _kill_strays(self, allowed: dict[str, set[int]]) -> None:
        """Kill the processes holding these workspace groups (names) that run as none of
        the uids allowed to hold them (:func:`posixgroups.kill_strays`; in a thread, under
        the POSIX lock, so that no group is deleted and its gid given to another meanwhile)."""
        holders = {}
        listing = self._listed or {}
        for name, uids in allowed.items():
            gid = listed.gr_gid if (listed := listing.get(name)) is not None else posixgroups.gid_of(name)
            if gid is not None:
                holders[gid] = uids
        killed = posixgroups.kill_strays(holders)
        if killed:
            self.log.warning(
                "Killed %s process(es) holding groups %s of accounts no longer editors", killed, sorted(allowed)
            )

    def stop_jobs_of_former_editors(self) -> None:
        """Stop the unfinished jobs launched by users who are no longer editors of their
        workspace, however that came about (left a hub group that was an editor, say)."""
        rows = self.db.execute(
            select(Job.workspace_id, Job.launcher_id)
            .where(
                Job.launcher_id.is_not(None),
                Job.launcher_id != Job.owner_id,
                Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                Job.target != JobTarget.stopped.value,
            )
            .distinct()
        ).all()
        launchers: dict[int, set[int]] = {}
        for ws_id, user_id in rows:
            if user_id is not None:
                launchers.setdefault(ws_id, set()).add(user_id)
        for ws_id, user_ids in launchers.items():
            lost = user_ids - self.effective_users(ws_id, editors_only=True)
            if lost:
                self.editors_lost(self.db.get_one(Workspace, ws_id), lost, "hub")

    async def sync(self) -> None:
        """Re-make every shared workspace's roles and POSIX group, drop those of unshared ones,
        and stop the jobs of launchers who are no longer editors."""
        self.stop_jobs_of_former_editors()
        shared = await self.sync_roles()
        self.version += 1
        if self.posix_group_prefix is None:
            return
        try:
            await self._sync_posix(shared)
        finally:
            self._listed = None

    async def _sync_posix(self, shared: set[int]) -> None:
        """The share sync's POSIX groups' part: apply the group of every workspace that is
        shared (``shared``) or has one, delete those of no workspace, kill the strays."""
        prefix = self.posix_group_prefix or ""
        names, gone = await self._groups_and_those_of_no_workspace()
        for name in gone:
            await self._delete_group(name, "its workspace is gone")
        # the shared workspaces' groups, and those of workspaces no longer shared (whose
        # members a hub before this one may have left: the owner); who may hold each is
        # planned once, for its apply and (checked again under the lock) its kill
        grouped = {int(name[len(prefix) :]) for name in names if name not in gone}
        # read a few hundred in a query (one by one, those the session no longer held were
        # a query each: a thousand a sync)
        ids = sorted(shared | grouped)
        chunks = [ids[start : start + IDS_PER_QUERY] for start in range(0, len(ids), IDS_PER_QUERY)]
        # their owners' and editors' accounts looked up first, in a thread (read before
        # its await, the workspaces could be expired by a rollback, and deleted, meanwhile)
        editors = self.grantees(None, editors_only=True)
        users = {
            user
            for chunk in chunks
            for user in self.db.scalars(select(Workspace.owner_id).where(Workspace.id.in_(chunk)))
        }
        users.update(*(editors.get(ws_id, ()) for ws_id in ids))
        accounts = await asyncio.to_thread(self._account_uids, _names(self.db, hub_orm.User, users).values())
        workspaces = [
            workspace
            for chunk in chunks
            for workspace in self.db.scalars(select(Workspace).where(Workspace.id.in_(chunk)).order_by(Workspace.id))
        ]
        plans = self._posix_plans(workspaces, editors, grouped, accounts=accounts)
        for ws_id, plan in plans.items():
            if (workspace := self.db.get(Workspace, ws_id)) is not None:  # (unless deleted meanwhile)
                await self.apply_posix(workspace, plan)
        # one scan of the processes for every group: whoever lost a group in a way the
        # hub did not see (a hub stopped before its kill), but not while former editors'
        # jobs are being stopped (the worker's kill follows their end). Those jobs are
        # read under the lock, with who may hold the groups: read before it, an editor
        # revoked while the sync waited for it had their job, being stopped, SIGKILLed
        async with self._posix_lock:
            lost = self._lost_launchers_jobs(plans)
            await self._recheck_and_kill([ws_id for ws_id in plans if ws_id not in lost], plans)

    async def sync_roles(self) -> set[int]:
        """Make the roles of every shared workspace match its shares, delete uws-hub's
        other roles (of workspaces no longer shared, or gone); returns the shared
        workspaces' ids.

        :data:`ROLES_CHUNK` workspaces at a time (:meth:`_sync_roles_of`: read, compared,
        their differences written and committed with no await between, so that a share
        changed meanwhile is never undone from a view read before), giving the event loop
        back between chunks: the hub serves its API meanwhile."""
        shared = set(self.db.scalars(select(Share.workspace_id).where(Share.kind == ShareKind.collaborate.value)))
        ids, strays = set(shared), []
        for name in self.db.scalars(select(hub_orm.Role.name).where(hub_orm.Role.name.startswith(ROLE_PREFIX))):
            ws_id = _workspace_of_role(name)
            if ws_id is None:
                strays.append(name)
            else:
                ids.add(ws_id)
        ordered = sorted(ids)
        for start in range(0, max(len(ordered), 1), ROLES_CHUNK):
            if start:
                await asyncio.sleep(0)
            if self._sync_roles_of(ordered[start : start + ROLES_CHUNK], strays if start == 0 else ()):
                self.version += 1
                self.db.commit()
        return shared

    async def _groups_and_those_of_no_workspace(self) -> tuple[list[str], list[str]]:
        """This hub's POSIX groups (names), and those whose workspace is gone. The groups
        are listed before the workspaces are read: a group is made after its workspace's
        row is committed, so the workspace of every group listed is read too. Read the
        other way round (the workspaces before the sync's other work), a workspace shared
        while the sync ran looked gone, and its new group was deleted under its editor."""
        prefix = self.posix_group_prefix or ""
        async with self._posix_lock:  # (kept as :attr:`_listed`: deletes drop from it, under the lock)
            listed = await asyncio.to_thread(posixgroups.groups_with_prefix, prefix)
            self._listed = listed
        names = list(listed)
        existing = {ws_id for (ws_id,) in self.db.execute(select(Workspace.id))}
        return names, [name for name in names if int(name[len(prefix) :]) not in existing]

    async def _delete_group(self, name: str, why: str) -> None:
        """Delete a workspace's POSIX group, and first every process that holds it, its
        owner's too (not root's nor the hub's): its gid may be another workspace's next.

        The gid is read under the POSIX lock, with the kill and the delete: read before
        it, a delete that waited for the lock behind another delete of the group and a
        new workspace's group (which took the freed gid) killed that new group's
        jobs' processes (a job starting in the new workspace was SIGKILLed)."""
        async with self._posix_lock:
            killed = await asyncio.to_thread(self._kill_holders_and_delete, name)
            if self._listed is not None:
                self._listed.pop(name, None)
        if killed is None:
            return
        self.log.info("Deleted POSIX group %s: %s", name, why)
        if killed:
            self.log.warning("Killed %s process(es) holding group %s", killed, name)

    @staticmethod
    def _kill_holders_and_delete(name: str) -> int | None:
        """In a thread, under the POSIX lock: kill whoever holds group ``name``, delete it;
        how many were killed, None if there was no such group."""
        gid = posixgroups.gid_of(name)
        if gid is None:
            return None
        killed = posixgroups.kill_strays({gid: set()})
        posixgroups.delete_group(name)
        return killed

    async def forget_workspace(self, workspace_id: int) -> None:
        """A workspace was deleted: drop its roles (its shares went with it) and POSIX group."""
        for level in LEVELS:
            role = hub_orm.Role.find(self.db, role_name(workspace_id, level))
            if role is not None:
                self.db.delete(role)
        self.version += 1
        self.db.commit()
        self._allowed.pop(workspace_id, None)
        if self.posix_group_prefix is not None:
            await self._delete_group(posixgroups.group_name(self.posix_group_prefix, workspace_id), "deleted")
