"""What a deleted user leaves on disk: set aside where only root reads it, or removed.

A hub user's workspaces and jobs go with them (``ON DELETE CASCADE``), their
folders and their jobs' log files did not: they stayed in place, owned by the
user's uid. ``useradd`` gives the highest free uid to the next account made,
often the one just freed, whose owner then held the former user's research
data; and a new hub user of the same name had workspaces made beside theirs.

At the deletion, in the commit's own flush (:meth:`FormerUsers._before_flush`),
the user's workspace folders, their jobs' log files (and their SLURM servers'
output files, :attr:`Leftovers.server_outputs`) and the HOME of their
jobs of the hub's own account are listed and the list recorded in a file of
the hub's (``<workspaces root>/.deleted/<entry>.pending``, whole and synced:
:meth:`FormerUsers._record`); after the commit,
in a thread, each is moved (renamed, never followed through a link) to
``<workspaces root>/.deleted/<entry>/`` (``<entry>``: ``<user id>-<name>-<UTC
time>``), which only root (the hub's account) may enter, and the record goes.
With ``UWSHub.deleted_users_data = "remove"`` they are then removed from there (in the
background: the delete answers once they are out of the way). A hub
that stopped between the commit and the move finds the record at its next
start and finishes (:meth:`FormerUsers.finish_pending`); a delete rolled back
leaves the user, and the record is dropped.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from jupyterhub import orm as hub_orm
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..filethreads import in_file_thread
from ..hubfolders import open_folder_of
from ..orm import Job, Workspace, rows_of_users_being_deleted
from ..tasks import TaskPool
from .paths import DIR_FLAGS
from .storage import Freed, WorkspaceStorage, remove_tree

#: the folder of the workspaces root where deleted users' data is set aside
DELETED_FOLDER = ".deleted"
#: the session's ``info`` key of the leftovers its flush found
_FOUND = "uws_former_users"
_PENDING = ".pending"
#: the end of the name of a record being written (``.<entry>.pending.writing``)
_WRITING = ".writing"
#: the most a copy of a log to another file system reads at once (:func:`_copy_data`)
COPY_CHUNK_BYTES = 1024 * 1024
#: the most of a user's name their entry's name shows, in bytes (:func:`_in_entry`)
NAME_BYTES_IN_ENTRY = 64


@dataclass
class Leftovers:
    """What one deleted user left on disk."""

    user_id: int
    name: str
    #: who the user was (:func:`uws_hub.jobs.service.account_holder`): a user of this id
    #: and creation time still there means their deletion was rolled back
    holder: str
    #: ``<user id>-<name>-<UTC time>``: the name of their folder in :data:`DELETED_FOLDER`
    #: (of the name, its first :data:`NAME_BYTES_IN_ENTRY` bytes, :func:`_in_entry`)
    entry: str
    #: (what, path): their workspaces' folders ("workspaces"), their jobs' HOME ("home")
    folders: list[tuple[str, str]] = field(default_factory=list)
    #: their jobs' log files
    logs: list[str] = field(default_factory=list)
    #: the output files their servers' resource had them write (a SLURM server's, in their
    #: account's folder): the hub kept its tail in its own log file (:attr:`logs`); the file
    #: itself, of their uid, stayed the next account's of that uid, servers' secrets in it
    server_outputs: list[str] = field(default_factory=list)
    #: the log files of batch jobs they launched in others' workspaces (an editor's): set
    #: aside if their account's (SLURM's, in its folder), not the hub's. The job stays, with
    #: its workspace; its log, of their uid, was the next account's of that uid; its owner
    #: reads it no more (it must be the launcher's account's, who is the owner once gone)
    launched_logs: list[str] = field(default_factory=list)


class FormerUsers:
    """Sets aside (or removes) what deleted users leave on disk (see the module's docstring)."""

    def __init__(
        self,
        storage: WorkspaceStorage,
        log_paths: Callable[[int, str | None, bool], str | None],
        holder_of: Callable[[hub_orm.User], str],
        tasks: TaskPool,
        log: logging.Logger,
        *,
        remove: bool = False,
        server_outputs: Callable[[Job, str], str | None] | None = None,
    ):
        self.storage = storage
        #: :meth:`uws_hub.jobs.service.JobService.kept_log_path`
        self.log_paths = log_paths
        #: :meth:`uws_hub.jobs.service.JobService.server_output_path`
        self.server_outputs = server_outputs
        #: :func:`uws_hub.jobs.service.account_holder`
        self.holder_of = holder_of
        self.tasks = tasks
        self.log = log
        self.remove = remove
        self.aside_root = os.path.join(storage.root, DELETED_FOLDER)
        self._moving: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- the deletion's commit
    def attach(self, db: Session) -> None:
        sa_event.listen(db, "before_flush", self._before_flush)
        sa_event.listen(db, "after_commit", self._after_commit)
        sa_event.listen(db, "after_rollback", self._after_rollback)

    def _before_flush(self, db: Session, flush_context: Any, instances: Any) -> None:
        """List what the users being deleted leave on disk, before their rows (which say
        where) go, and record it (a small file) before the commit: a hub stopped before the
        move finishes it at its next start."""
        users = rows_of_users_being_deleted(db)
        if not users:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        with db.no_autoflush:
            for user in users:
                leftovers = Leftovers(
                    user.id, user.name, self.holder_of(user), f"{user.id}-{_in_entry(user.name)}-{stamp}"
                )
                directories = db.scalars(select(Workspace.directory).where(Workspace.owner_id == user.id))
                leftovers.folders = [("workspaces", d) for d in directories]
                # the HOME of their jobs of the hub's account, if any: in their folder of the
                # root, which no name with a leading dot has (``..``'s was beside the root)
                if os.sep not in user.name and not user.name.startswith("."):
                    leftovers.folders.append(("home", os.path.join(self.storage.root, user.name, ".home")))
                for job_id, log_path, interactive in db.execute(
                    select(Job.id, Job.log_path, Job.interactive).where(Job.owner_id == user.id)
                ):
                    path = self.log_paths(job_id, log_path, interactive)
                    if path is not None:
                        leftovers.logs.append(path)
                if self.server_outputs is not None:
                    for job, workspace in db.execute(
                        select(Job, Workspace.directory)
                        .join(Workspace, Job.workspace_id == Workspace.id)
                        .where(Job.owner_id == user.id, Job.interactive.is_(True), Job.resource_id.is_not(None))
                    ):
                        path = self.server_outputs(job, workspace)
                        if path is not None:
                            leftovers.server_outputs.append(path)
                leftovers.launched_logs = list(
                    db.scalars(
                        select(Job.log_path).where(
                            Job.launcher_id == user.id,
                            Job.owner_id != user.id,
                            Job.interactive.is_(False),
                            Job.log_path.is_not(None),
                        )
                    )
                )
                self._record(leftovers)
                db.info.setdefault(_FOUND, []).append(leftovers)

    def _after_commit(self, db: Session) -> None:
        for leftovers in db.info.pop(_FOUND, []):
            task = self.tasks.spawn(self._put_away_soon(leftovers), f"former-user-{leftovers.user_id}")
            self._moving.add(task)
            task.add_done_callback(self._moving.discard)

    def _after_rollback(self, db: Session) -> None:
        for leftovers in db.info.pop(_FOUND, []):
            try:
                os.unlink(self._pending_path(leftovers.entry))
            except FileNotFoundError:
                pass

    async def _put_away_soon(self, leftovers: Leftovers) -> None:
        try:
            purge = await in_file_thread(self.put_away, leftovers)
        except Exception:
            self.log.exception(
                "Could not set aside what %s (id %s) left; the hub tries again at its next start",
                leftovers.name,
                leftovers.user_id,
            )
            return
        if self.remove:
            # (out of the user's delete, which answers once the data is out of the way)
            self.tasks.spawn(self._purge_soon(leftovers, purge), f"former-user-purge-{leftovers.user_id}")

    async def _purge_soon(self, leftovers: Leftovers, paths: list[str]) -> None:
        try:
            await in_file_thread(self.purge, leftovers, paths)
        except Exception:
            self.log.exception("Could not remove what %s left: %s", leftovers.name, ", ".join(paths))

    async def settled(self) -> None:
        """Wait for the set-asides under way (a user's delete answers once theirs is done)."""
        if self._moving:
            await asyncio.gather(*self._moving, return_exceptions=True)

    # ---------------------------------------------------------------- on disk (blocking)
    def _pending_path(self, entry: str) -> str:
        return os.path.join(self.aside_root, entry + _PENDING)

    def _aside_root(self) -> int:
        """The folder of set-aside data, root's only (0700): opened, as a descriptor."""
        try:
            os.mkdir(self.aside_root, 0o700)
        except FileExistsError:
            pass
        fd = os.open(self.aside_root, DIR_FLAGS)
        _root_only(fd)
        return fd

    def _record(self, leftovers: Leftovers) -> None:
        """Record ``leftovers`` before the deletion's commit, whole and on disk: written to a
        temporary file of the folder, synced, then linked to its name (an existing record
        is never replaced), and the folder synced. A record written as before (opened at
        its name, written, not synced) could be empty or cut after a crash right after the
        commit: the next start failed to read it, at every start, and nothing was set aside."""
        fd = self._aside_root()
        name = leftovers.entry + _PENDING
        temporary = f".{name}{_WRITING}"
        try:
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
            try:
                with os.fdopen(out, "w", encoding="utf-8") as f:
                    json.dump(asdict(leftovers), f)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(temporary, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            finally:
                _unlink_at(fd, temporary)
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_away(self, leftovers: Leftovers) -> list[str]:
        """Move each of ``leftovers`` that is still there aside, then drop its record; what
        :meth:`purge` removes (with ``UWSHub.deleted_users_data = "remove"``)."""
        aside = os.path.join(self.aside_root, leftovers.entry)
        moved = []
        for what, folder in leftovers.folders:
            if os.path.lexists(folder):
                moved.append(self._move_folder(folder, os.path.join(aside, what)))
        logs = [p for p in leftovers.logs + leftovers.server_outputs if os.path.lexists(p)]
        logs += [p for p in leftovers.launched_logs if _not_the_hubs(p)]
        for path in logs:
            log_moved = self._move_log(path, os.path.join(aside, "job-logs"))
            if log_moved is not None:
                moved.append(log_moved)
        if moved:
            self.log.warning(
                "Set aside what the deleted user %s (id %s) left, where only root reads it%s: %s",
                leftovers.name,
                leftovers.user_id,
                ", to be removed" if self.remove else "",
                ", ".join(f"{a} -> {b}" for a, b in moved),
            )
        _unlink(self._pending_path(leftovers.entry))
        # (a folder closed where it is, on a file system of its own, is removed there)
        return [aside] + [b for a, b in moved if a == b]

    def purge(self, leftovers: Leftovers, paths: list[str]) -> None:
        """Remove what :meth:`put_away` set aside of ``leftovers`` (never through a link)."""
        fd = self._aside_root()
        try:
            for path in paths:
                if os.path.dirname(path) == self.aside_root:
                    try:
                        remove_tree(fd, os.path.basename(path), Freed(), path)
                    except FileNotFoundError:
                        pass
                else:
                    self.storage.remove(path)
        finally:
            os.close(fd)
        self.log.info("Removed what the deleted user %s (id %s) left", leftovers.name, leftovers.user_id)

    def _folder_in(self, aside: str) -> str:
        """``aside`` (a folder of :attr:`aside_root`) made, root's own, 0700."""
        os.close(self._aside_root())
        os.makedirs(aside, 0o700, exist_ok=True)
        for path in (os.path.dirname(aside), aside):
            _close_to_all_but_root(path)
        return aside

    def _move_folder(self, folder: str, into: str) -> tuple[str, str]:
        """Rename ``folder`` into ``into``, then make its top root's own, 0700 (what is in
        it stays as it was: nobody but root reaches it). On another file system (a
        workspace that is a mount of its own), it is closed where it is instead."""
        target = _free_name(self._folder_in(into), os.path.basename(folder))
        try:
            os.rename(folder, target)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EBUSY):
                raise
            target = folder
        _close_to_all_but_root(target)
        if target == folder:
            self.log.error("%s is on a file system of its own: closed to all but root where it is", folder)
        return folder, target

    def _move_log(self, path: str, into: str) -> tuple[str, str] | None:
        """Rename the log file ``path`` (a link is moved as a link, never followed) into
        ``into``; copied there and removed if it is on another file system. Renamed in
        its folder opened as it is (never through a link): a SLURM job's log folder is its
        account's, and a link put there for it had the rename take a file of wherever
        it pointed. None if its folder is a link now, or gone: nothing is moved. (A link
        of root's in a folder only root may write in is the admins', a ``job_log_dir``
        that is one: followed, and its target walked the same way, a folder at a time
        (:func:`~uws_hub.hubfolders.open_folder`): a link of root's that points into an
        account's folder, which the account swaps for a link of theirs, no longer has the
        rename take the file of the log's name wherever that pointed.)"""
        name = os.path.basename(path)
        src = open_folder_of(path)
        if src is None:
            self.log.warning("The folder of %s is a link or gone: not set aside", path)
            return None
        try:
            target = _free_name(self._folder_in(into), name)
            dst = os.open(os.path.dirname(target), DIR_FLAGS)
            try:
                moved = self._move_log_at(src, name, dst, os.path.basename(target))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return (path, target) if moved else None

    @staticmethod
    def _move_log_at(src: int, name: str, dst: int, target_name: str) -> bool:
        """:meth:`_move_log` in folders open at ``src`` and ``dst``; whether it moved."""
        try:
            os.rename(name, target_name, src_dir_fd=src, dst_dir_fd=dst)
        except FileNotFoundError:
            return False  # (gone since it was listed)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _copy_across(src, name, dst, target_name)
            _unlink_at(src, name)
            return True
        # a link (moved as a link: what it points at is left as it is), a socket, a FIFO, a
        # folder: no output of a job's, never opened (a socket's open fails); a hard link's
        # other names keep their owner: the file is left as it is
        st = os.stat(target_name, dir_fd=dst, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            fd = os.open(target_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dst)
            try:
                os.fchown(fd, os.geteuid(), os.getegid())
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        return True

    # ---------------------------------------------------------------- at start-up
    def finish_pending(self, db: Session) -> None:
        """Finish the set-asides a stopped hub left recorded (blocking: at start-up, before
        the hub listens); drop those whose user is still there (the delete rolled back)."""
        try:
            found = os.listdir(self.aside_root)
        except FileNotFoundError:
            return
        for name in found:
            if name.endswith(_PENDING + _WRITING):  # (a record a stopped hub was writing: no commit followed)
                _unlink(os.path.join(self.aside_root, name))
        names = sorted(n for n in found if n.endswith(_PENDING))
        for name in names:
            # one that fails is logged and kept for the next start: the hub starts all the
            # same (it failed the start, at every start, till an admin removed the record)
            try:
                self._finish(db, os.path.join(self.aside_root, name))
            except Exception:
                self.log.exception(
                    "Could not set aside what a deleted user left (%s); the hub tries again at its next start",
                    os.path.join(self.aside_root, name),
                )

    def _finish(self, db: Session, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        record["folders"] = [tuple(pair) for pair in record["folders"]]
        leftovers = Leftovers(**record)
        user = db.get(hub_orm.User, leftovers.user_id)
        if user is not None and self.holder_of(user) == leftovers.holder:
            _unlink(path)
            return
        purge = self.put_away(leftovers)
        if self.remove:
            self.purge(leftovers, purge)


def _in_entry(name: str) -> str:
    """A user's name as their entry of :data:`DELETED_FOLDER` shows it: no ``/``, and at
    most :data:`NAME_BYTES_IN_ENTRY` bytes of it, whole characters (a file's name holds
    255 bytes; a name of 230 letters, or of 100 Chinese characters, made the record's
    name too long, and the user's deletion failed). The id before it tells users apart."""
    short = name.replace(os.sep, "_").encode()[:NAME_BYTES_IN_ENTRY]
    return short.decode(errors="ignore")


def _root_only(fd: int) -> None:
    """The folder open at ``fd``: root's (the hub's account's) own, 0700."""
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, 0o700)


def _close_to_all_but_root(folder: str) -> None:
    """:func:`_root_only` the folder ``folder`` (not followed if it is a link)."""
    fd = os.open(folder, DIR_FLAGS)
    try:
        _root_only(fd)
    finally:
        os.close(fd)


def _free_name(folder: str, name: str) -> str:
    for n in range(1, 1000):
        path = os.path.join(folder, name if n == 1 else f"{name}-{n}")
        if not os.path.lexists(path):
            return path
    raise FileExistsError(f"No name left in {folder} for {name}")


def _not_the_hubs(path: str) -> bool:
    """Whether there is something at ``path`` (a link not followed) of another uid than the hub's."""
    try:
        return os.lstat(path).st_uid != os.geteuid()
    except FileNotFoundError:
        return False


def _copy_across(src_fd: int, name: str, dst_fd: int, target: str) -> None:
    """Copy the regular file ``name`` (in the folder open at ``src_fd``) to ``target`` (new,
    0600, in the folder open at ``dst_fd``), never through a link: anything else there (a
    link, a socket, a FIFO) is no output of a job's, and is not copied (nor opened: a
    socket's open fails, every time)."""
    if not stat.S_ISREG(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode):
        return
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO):  # (replaced since: a link, a socket)
            raise
        return
    try:
        if stat.S_ISREG(os.fstat(src).st_mode):
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dst_fd)
            with os.fdopen(dst, "wb") as fout:
                _copy_data(src, fout.fileno())
    finally:
        os.close(src)


def _copy_data(src: int, dst: int) -> None:
    """Copy the file open at ``src`` to the new file open at ``dst``, its holes left holes:
    only the parts of it that hold data (``SEEK_DATA``, ``SEEK_HOLE``) are read and
    written, and the copy is made as long. A job makes its log as long as it likes at
    no cost (it may truncate it to terabytes of a hole): copied whole, such a log filled
    the disk of the workspaces (where the set-aside is) with zeros, for everyone, when
    its user was deleted. Where the file system cannot tell (``EINVAL``), it is one
    part of data."""
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
            end = os.lseek(src, start, os.SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:  # (no data past offset: a hole to the end)
                break
            if e.errno != errno.EINVAL:
                raise
            start, end = offset, size
        while start < end:
            data = os.pread(src, min(COPY_CHUNK_BYTES, end - start), start)
            if not data:
                break
            os.pwrite(dst, data, start)
            start += len(data)
        offset = max(end, offset + 1)
    os.ftruncate(dst, size)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, IsADirectoryError):
        pass


def _unlink_at(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except (FileNotFoundError, IsADirectoryError):
        pass
