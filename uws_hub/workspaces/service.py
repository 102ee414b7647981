"""Workspaces: create, seed, rename, measure and delete them.

The rules live here (unique slug per owner, no delete while a job runs,
status changes through the transition table); the handlers only parse and
render, and :mod:`uws_hub.workspaces.paths` does the path-safe file work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jupyterhub import orm as hub_orm
from sqlalchemy import and_, exists, false, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..accounts.deletions import UserDeletions
from ..errors import Conflict, Unprocessable
from ..events.bus import EventBus
from ..filethreads import in_file_thread
from ..orm import Job, Share, Workspace, utcnow, write_at_once
from ..states import ShareKind, ShareLevel, WorkspaceStatus, WorkspaceTarget, check_workspace_transition
from .paths import Entry, Owner, PathError, split_relpath
from .paths import NotFound as StorageNotFound
from .storage import Freed, WorkspaceStorage

if TYPE_CHECKING:
    from ..accounts.system import SystemAccounts
    from ..quotas.limits import Reservation
    from ..quotas.service import QuotaService

_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """A workspace slug from its name: lowercase ascii letters, digits and '-'.

    The slug names the workspace's directory and its job's server
    (``/user/<owner>/<slug>/``), so it is kept short and URL- and path-safe.
    Accents are dropped ("Émile" -> "emile"); a name with no latin letters or
    digits at all (say, in Japanese) gets ``ws-`` and a hash of the name.
    """
    if not name.strip():
        raise Unprocessable("A workspace name must not be blank")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_JUNK.sub("-", ascii_name.lower()).strip("-")[:63].strip("-")
    return slug or "ws-" + hashlib.sha256(name.strip().encode("utf-8")).hexdigest()[:8]


@dataclass
class SeedFile:
    """A file to put in a new workspace (from the create request)."""

    path: str
    content: str
    encoding: str = "utf-8"

    def data(self) -> bytes:
        if self.encoding == "base64":
            try:
                return base64.b64decode(self.content, validate=True)
            except (binascii.Error, ValueError):
                raise Unprocessable(f"Seed file {self.path!r} is not valid base64") from None
        return self.content.encode("utf-8")


class WorkspaceService:
    def __init__(
        self,
        db: Session,
        storage: WorkspaceStorage,
        accounts: SystemAccounts,
        events: EventBus,
        log: logging.Logger,
        *,
        quotas: QuotaService,
        max_seed_bytes: int,
        wake: Callable[[int], None],
        deletions: UserDeletions | None = None,
    ):
        self.db = db
        self.storage = storage
        self.accounts = accounts
        self.quotas = quotas
        self.events = events
        self.log = log
        self.max_seed_bytes = max_seed_bytes
        #: puts a workspace on the reconciler's queue (its deletion is reconciled)
        self.wake = wake
        #: the users being deleted, for whom nothing is made (the job service's launches too)
        self.deletions = deletions or UserDeletions()

    # ---------------------------------------------------------------- status
    def set_status(
        self,
        ws: Workspace,
        status: WorkspaceStatus,
        reason: str | None = None,
        actor: str = "hub",
        *,
        columns: dict[str, Any] | None = None,
        at_once: bool = False,
    ) -> None:
        """The only way a workspace's status changes: checked against the table, stored
        as an event (none if it had that status; its reason is set either way).

        ``at_once``: the row written with an UPDATE of its own, with ``columns`` (more of
        the row), and the event inserted at once, not through the ORM's flush (a launch's:
        :meth:`launched_in`)."""
        previous = ws.status
        values: dict[str, Any] = {**(columns or {}), "status_reason": reason}
        if previous != status.value:
            values["status"] = check_workspace_transition(previous, status).value
        self._write(ws, values, at_once)
        if previous != ws.status:
            self.record(ws, ws.status, previous, reason, actor, at_once=at_once)

    def launched_in(self, ws: Workspace, at: datetime, actor: str) -> None:
        """A job launched in ``ws`` at ``at``: the workspace was last used then (what the lists'
        "last used" order reads, stored: a page sorts by an index, not by each one's latest
        job), and is ``active`` if it was ``idle`` (:meth:`set_status`).

        With an UPDATE of its own and its event inserted at once
        (:meth:`uws_hub.events.bus.EventBus.insert`), not through the ORM's flush: a
        launch request's cost, and a burst of them is answered one after the other.
        """
        columns: dict[str, Any] = {"last_used_at": at, "updated_at": at}
        if ws.status == WorkspaceStatus.idle.value:
            self.set_status(ws, WorkspaceStatus.active, actor=actor, columns=columns, at_once=True)
        else:
            self._write(ws, columns, at_once=True)

    def _write(self, ws: Workspace, values: dict[str, Any], at_once: bool) -> None:
        """Set these columns of ``ws``: in the session (the next flush stores them), or
        ``at_once`` with an UPDATE of their own, the session's row then as stored."""
        if not at_once:
            for key, value in values.items():
                setattr(ws, key, value)
            return
        write_at_once(self.db, ws, values)

    def record(
        self,
        ws: Workspace,
        status: str,
        previous: str | None,
        reason: str | None,
        actor: str,
        *,
        at_once: bool = False,
    ) -> None:
        """Store a workspace event (its creation, a change, ``deleted``) in the session."""
        self.events.change(
            self.db,
            "workspace",
            owner_id=ws.owner_id,
            workspace_id=ws.id,
            actor=actor,
            status=status,
            previous=previous,
            reason=reason,
            data={"name": ws.name, "slug": ws.slug},
            at_once=at_once,
        )

    # ---------------------------------------------------------------- queries
    def count(self, where) -> int:
        return self.db.scalar(select(func.count(Workspace.id)).where(where)) or 0

    def page(self, where, offset: int, limit: int, order: list | None = None) -> list[Workspace]:
        """A page of the workspaces ``where`` selects, in ``order`` (by default oldest first;
        see :mod:`uws_hub.workspaces.listing`)."""
        query = select(Workspace).where(where).order_by(*(order or [Workspace.id]))
        return list(self.db.scalars(query.offset(offset).limit(limit)))

    # ---------------------------------------------------------------- create
    async def create(
        self, owner: hub_orm.User, name: str, description: str, files: list[SeedFile], slug: str | None = None
    ) -> Workspace:
        """Create a workspace and its directory with the seed files (file work in a thread).

        ``slug``: its slug if not the name's (see :meth:`free_slug`).
        """
        slug = slug or slugify(name)
        seeds = [(f.path, f.data()) for f in files]
        for path, _ in seeds:
            try:
                split_relpath(path)
            except PathError as e:
                raise Unprocessable(f"Seed file refused: {e}") from None
        seed_bytes = sum(len(d) for _, d in seeds)
        if seed_bytes > self.max_seed_bytes:
            raise Unprocessable(
                f"Seed files total more than {self.max_seed_bytes} bytes"
                " (UWSHub.max_seed_bytes); upload large files after creating the workspace."
            )
        # seed files count against the owner's disk quota: refused before anything is made
        reservation = self.quotas.reserve_disk(owner, seed_bytes)
        try:
            # (its row is committed before its folder is made: the owner's delete waits for neither)
            with self.deletions.making(owner):
                return await self._create(owner, name, description, slug, seeds, reservation)
        finally:
            self.quotas.release_disk(reservation)  # unless the seeds became the workspace's usage

    async def free_slug(self, owner: hub_orm.User, name: str) -> str:
        """The slug of ``name``, else that slug with ``-2``, ``-3``... : the first that no
        workspace of ``owner``'s and no directory left on disk has (for clients whose
        workspaces may share a name)."""
        base = slugify(name)
        for i in range(1, 1000):
            slug = base if i == 1 else f"{base[:58].rstrip('-')}-{i}"
            if Workspace.find_by_slug(self.db, owner.id, slug) is None and not await in_file_thread(
                os.path.lexists, self.storage.directory_for(owner.name, slug)
            ):
                return slug
        raise Conflict(f"You have too many workspaces named {name!r}")

    async def _create(
        self,
        owner: hub_orm.User,
        name: str,
        description: str,
        slug: str,
        seeds: list[tuple[str, bytes]],
        reservation: Reservation,
    ) -> Workspace:
        file_owner = self.accounts.owner(owner.name)
        if Workspace.find_by_slug(self.db, owner.id, slug):
            raise Conflict(f"You already have a workspace named {slug!r}")
        directory = self.storage.directory_for(owner.name, slug)
        if await in_file_thread(os.path.lexists, directory):
            raise Conflict(
                f"A directory for workspace {slug!r} is left on disk from an earlier workspace;"
                " choose another name or ask an administrator to remove it."
            )
        ws = Workspace(
            owner=owner,
            slug=slug,
            name=name.strip(),
            description=description,
            status=WorkspaceStatus.initializing.value,
            directory=directory,
        )
        self.db.add(ws)
        try:
            self.db.flush()
        except IntegrityError:
            self.db.rollback()
            raise Conflict(f"You already have a workspace named {slug!r}") from None
        self.record(ws, ws.status, None, None, owner.name)
        self.db.commit()
        try:
            usage = await in_file_thread(self._make_directory, directory, file_owner, seeds)
        except PathError as e:
            await self._discard(ws)
            raise Unprocessable(f"Seed file refused: {e}") from None
        except OSError as e:
            self.log.exception("Could not create workspace directory %s", directory)
            self.set_status(ws, WorkspaceStatus.error, f"Could not create the directory: {e.strerror}")
            self.db.commit()
            return ws
        ws.usage_measured_at = utcnow()
        self.set_status(ws, WorkspaceStatus.idle, actor=owner.name)
        self.quotas.commit_disk(reservation, ws, usage)
        self.log.info("Created workspace %s/%s (id %s)", owner.name, slug, ws.id)
        return ws

    def _make_directory(self, directory: str, owner: Owner, seeds: list[tuple[str, bytes]]) -> int:
        """Make a workspace's directory with its seed files (blocking); returns its usage in bytes."""
        self.storage.create(directory, owner)
        for path, data in seeds:
            self.storage.write_file(directory, path, data, owner)
        return self.storage.usage_bytes(directory)

    async def _discard(self, ws: Workspace) -> None:
        await in_file_thread(self.storage.remove, ws.directory)
        self.record(ws, "deleted", ws.status, "Seed files could not be written", "hub")
        self.db.delete(ws)
        self.db.commit()

    # ---------------------------------------------------------------- update
    def update(self, ws: Workspace, name: str | None, description: str | None) -> Workspace:
        """Change the display name or description (the slug never changes)."""
        self.check_writable(ws)
        if name is not None:
            if not name.strip():
                raise Unprocessable("The name must not be empty")
            ws.name = name.strip()
        if description is not None:
            ws.description = description
        self.db.commit()
        return ws

    # ---------------------------------------------------------------- delete
    def delete(self, ws: Workspace, actor: str) -> Workspace:
        """Ask for the workspace to be deleted (target ``deleted``, status ``deleting``);
        refused while a job of either kind is unfinished. Returns at once: the reconciler
        deletes it (:mod:`uws_hub.workspaces.reconcile`), after a hub restart too."""
        active = Job.oldest_unfinished_in(self.db, ws.id)
        if active is not None:
            raise Conflict(
                f"Workspace {ws.slug!r} has a {active.status} job (id {active.id});"
                " stop it before deleting the workspace."
            )
        if ws.target == WorkspaceTarget.deleted.value:
            return ws
        ws.target = WorkspaceTarget.deleted.value
        self.set_status(ws, WorkspaceStatus.deleting, actor=actor)
        self.db.commit()
        self.wake(ws.id)
        return ws

    def check_writable(self, ws: Workspace) -> None:
        """Refuse (409) a write into a workspace that is being deleted, or whose owner is
        (their folders are being set aside: :mod:`uws_hub.accounts.deletions`)."""
        self.deletions.check(ws.owner)
        if ws.target == WorkspaceTarget.deleted.value:
            raise Conflict("The workspace is being deleted")

    def adopt(
        self,
        owner: hub_orm.User,
        name: str,
        slug: str,
        directory: str,
        *,
        description: str,
        actor: str,
    ) -> Workspace:
        """A workspace for a directory that is already complete in place (a copy); the caller
        commits, with its usage (:meth:`QuotaService.commit_disk`)."""
        self.deletions.check(owner)
        if Workspace.find_by_slug(self.db, owner.id, slug):
            raise Conflict(f"{owner.name} already has a workspace named {slug!r}")
        ws = Workspace(
            owner=owner,
            slug=slug,
            name=name,
            description=description,
            status=WorkspaceStatus.initializing.value,
            directory=directory,
            usage_measured_at=utcnow(),
        )
        self.db.add(ws)
        self.db.flush()
        self.record(ws, ws.status, None, None, actor)
        self.set_status(ws, WorkspaceStatus.idle, actor=actor)
        self.log.info("Workspace %s/%s (id %s) made from a copy", owner.name, slug, ws.id)
        return ws

    async def write_file(self, ws: Workspace, relpath: str, data: bytes) -> None:
        """Write a whole file into ``ws`` (atomically, missing folders made), against its
        owner's disk quota (422 over it); the file work runs in a thread."""
        self.check_writable(ws)
        try:
            upload = await in_file_thread(self.storage.start_upload, ws.directory, relpath, self.file_owner(ws))
        except (PathError, StorageNotFound) as e:
            raise Unprocessable(f"File refused: {e}") from None
        reservation = None
        try:
            reservation = self.quotas.reserve_disk(ws.owner, len(data), upload.replaced_bytes)
            await in_file_thread(upload.write, data)
            await in_file_thread(upload.commit)
            self.quotas.commit_disk(reservation, ws, upload.size)
        except (PathError, StorageNotFound) as e:
            raise Unprocessable(f"File refused: {e}") from None
        finally:
            await in_file_thread(upload.abort)  # nothing left to do once committed
            if reservation is not None:
                self.quotas.release_disk(reservation)

    async def add_links(self, ws: Workspace, links: list[tuple[str, str | None]], allowed_roots: list[str]) -> None:
        """Make symlinks ``(relative path, target)`` in ``ws`` to targets under ``allowed_roots``
        only (datasets kept outside workspaces); any other target is refused (422)."""
        self.check_writable(ws)
        owner = self.file_owner(ws)

        def make() -> None:
            for relpath, target in links:
                self.storage.create_symlink(ws.directory, relpath, target, owner, allowed_roots)

        try:
            await in_file_thread(make)
        except (PathError, StorageNotFound) as e:
            raise Unprocessable(f"Symlink refused: {e}") from None

    # ---------------------------------------------------------------- files
    async def make_folder(self, ws: Workspace, relpath: str) -> Entry:
        """A new folder in ``ws`` (folders take no room on the quota: none is reserved)."""
        self.check_writable(ws)
        return await in_file_thread(self.storage.make_folder, ws.directory, relpath, self.file_owner(ws))

    async def delete_path(self, ws: Workspace, relpath: str, *, recursive: bool) -> tuple[Entry, int]:
        """Delete a file or folder of ``ws``; returns what it was and the bytes freed, which
        leave the owner's usage at once (also those of a delete cut short by an error).
        Allowed over the quota: it is how to get back under it."""
        self.check_writable(ws)
        freed = Freed()
        try:
            entry = await in_file_thread(self.storage.delete, ws.directory, relpath, freed, recursive=recursive)
        finally:
            self.quotas.record_freed(ws, freed.bytes)
        return entry, freed.bytes

    async def move_path(self, ws: Workspace, src: str, dst: str, *, overwrite: bool) -> Entry:
        """Move a file or folder within ``ws``; a file it replaces (``overwrite``) frees its bytes."""
        self.check_writable(ws)
        freed = Freed()
        try:
            return await in_file_thread(self.storage.move, ws.directory, src, dst, freed, overwrite=overwrite)
        finally:
            self.quotas.record_freed(ws, freed.bytes)

    def file_owner(self, ws: Workspace) -> Owner:
        """Who files the hub writes into ``ws`` belong to (storage adds whether it is group-shared)."""
        return self.accounts.owner(ws.owner.name)

    # ---------------------------------------------------------------- usage
    def to_measure(self, everything: bool, *, isolated: bool, among: Collection[int] | None = None) -> list[Workspace]:
        """The workspaces whose disk usage may have changed behind the hub's back.

        Uploads and copies update the usage themselves; otherwise only jobs
        write to a workspace: those that ran since its last measurement, and,
        on disk, its editors' own processes (a POSIX group). Without
        ``isolated`` (single-account mode) any job may write anywhere, so a
        job run since the last measurement anywhere makes every workspace suspect.
        ``among``: only these (those whose jobs just ended), if they are still there.
        """
        ready = Workspace.status.in_(
            [WorkspaceStatus.idle.value, WorkspaceStatus.active.value, WorkspaceStatus.error.value]
        )
        query = select(Workspace).where(ready).order_by(Workspace.id)
        if among is not None:
            query = query.where(Workspace.id.in_(among))
        if not everything:
            ran_since = and_(
                Job.running_at.is_not(None),
                or_(Job.finished_at.is_(None), Job.finished_at > Workspace.usage_measured_at),
            )
            if isolated:
                ran_since = and_(Job.workspace_id == Workspace.id, ran_since)
            shared_on_disk = select(Share.workspace_id).where(
                Share.kind == ShareKind.collaborate.value, Share.level == ShareLevel.editor.value
            )
            query = query.where(
                or_(
                    Workspace.usage_measured_at.is_(None),
                    exists().where(ran_since),
                    Workspace.id.in_(shared_on_disk) if isolated else false(),
                )
            )
        return list(self.db.scalars(query))
