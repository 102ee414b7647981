"""What the hub does in a workspace's directory: create, seed, list, read, write,
measure and remove, all by descriptor beneath it (:mod:`.paths`).

- Files are opened ``O_NONBLOCK`` and ``fstat``-ed; anything but a regular file
  or a directory is refused with its type, so a FIFO cannot block a read.
- Writes go to a temporary file in the destination's (open) directory, renamed
  into place relative to it (:class:`Upload`).

All of it blocks: callers run it in a thread, never on the hub's event loop.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import secrets
import shutil
import stat
import threading
import time
from datetime import UTC, datetime
from typing import BinaryIO

from .paths import (
    DIR_FLAGS,
    FILE_FLAGS,
    NEW_FILE_FLAGS,
    RESERVED_PREFIX,
    TEMP_PREFIX,
    DirChain,
    Entry,
    NotFound,
    Owner,
    PathError,
    entry_type,
    kind_of,
    split_relpath,
)
from .usagetree import UsageTree


class WorkspaceStorage:
    """Workspace directories under one root, and path-safe file access in them."""

    def __init__(self, root: str, *, dir_mode: int = 0o700):
        self.root = os.path.realpath(os.path.abspath(root))
        self.dir_mode = dir_mode
        #: upload temporaries older than this belong to an earlier hub process (killed mid-upload)
        self.started_at = time.time()

    # ---------------------------------------------------------------- directories
    def directory_for(self, owner_name: str, slug: str) -> str:
        """The directory of workspace ``slug`` of ``owner_name`` (not created)."""
        for part in (owner_name, slug):
            if not part or "/" in part or part in (".", "..") or "\x00" in part:
                raise PathError(f"Invalid name for a directory: {part!r}")
        return os.path.join(self.root, owner_name, slug)

    def create(self, directory: str, owner: Owner) -> None:
        """Create a workspace directory (and the owner's folder above it, hub-owned)."""
        self._check_under_root(directory)
        os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
        os.mkdir(directory, self.dir_mode)
        with DirChain.open_root(directory) as dirs:
            os.fchmod(dirs.fd, self.dir_mode)
            owner.chown_fd(dirs.fd)

    def remove(self, directory: str) -> None:
        """Delete a workspace directory and everything in it (``rmtree`` goes by descriptor)."""
        self._check_under_root(directory)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass

    def _check_under_root(self, directory: str) -> None:
        real = os.path.realpath(directory)
        if os.path.dirname(os.path.dirname(real)) != self.root:
            raise PathError(f"{directory} is not a workspace directory under {self.root}")

    # ---------------------------------------------------------------- reading
    def list_dir(self, directory: str, relpath: str) -> list[Entry]:
        parts = split_relpath(relpath)
        entries = []
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts))
            with os.scandir(dirs.fd) as it:
                for d in it:
                    if d.name.startswith(RESERVED_PREFIX):
                        continue
                    try:
                        st = d.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append(
                        Entry(
                            name=d.name,
                            path=dirs.path(d.name),
                            type=entry_type(st.st_mode),
                            size=st.st_size,
                            modified=datetime.fromtimestamp(st.st_mtime, UTC),
                        )
                    )
        entries.sort(key=lambda e: (e.type != "directory", e.name))
        return entries

    def walk(self, directory: str, max_entries: int, *, hidden: bool = True) -> list[tuple[str, str]]:
        """Every entry under a workspace, as ``(relative path, type)`` (types as :meth:`list_dir`'s),
        at most ``max_entries`` of them; symlinks are listed, never followed (see :meth:`tree`).
        ``hidden=False`` leaves out names starting with '.' (and what is in such folders)."""
        return [(path, kind) for path, kind, _ in self.tree(directory, "", max_entries, hidden=hidden)]

    def tree(
        self, directory: str, relpath: str, max_entries: int, *, hidden: bool = True
    ) -> list[tuple[str, str, int]]:
        """Every entry under ``relpath`` of a workspace, as ``(path in the workspace, type,
        size)``, at most ``max_entries`` of them, sorted; symlinks are listed, never followed.

        Each directory is opened relative to its parent's descriptor with
        ``O_NOFOLLOW``, so a directory swapped for a symlink is not walked
        into; only one descriptor per level is open.
        """
        entries: list[tuple[str, str, int]] = []

        def scan(fd: int, prefix: str) -> None:
            subdirs = []
            with os.scandir(fd) as it:
                for d in it:
                    if d.name.startswith(RESERVED_PREFIX) or (not hidden and d.name.startswith(".")):
                        continue
                    try:
                        st = d.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if len(entries) >= max_entries:
                        return
                    kind = entry_type(st.st_mode)
                    entries.append((prefix + d.name, kind, st.st_size))
                    if kind == "directory":
                        subdirs.append(d.name)
            for name in sorted(subdirs):
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:  # gone, or swapped for something else meanwhile
                    continue
                try:
                    scan(sub, f"{prefix}{name}/")
                finally:
                    os.close(sub)

        parts = split_relpath(relpath)
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts))
            scan(dirs.fd, dirs.path() + "/" if dirs.names else "")
        return sorted(entries)

    def files_under(self, directory: str, relpath: str, max_entries: int = 1000) -> list[dict]:
        """The regular files under ``relpath`` (a job's results): path, size and media type;
        [] if it does not exist."""
        try:
            entries = self.tree(directory, relpath, max_entries)
        except NotFound:
            return []
        return [
            {"path": path, "size": size, "mime_type": mimetypes.guess_type(path)[0] or "application/octet-stream"}
            for path, kind, size in entries
            if kind == "file"
        ]

    def open_read(self, directory: str, relpath: str) -> tuple[BinaryIO, int]:
        """Open a regular file for reading; returns (file, size)."""
        parts = split_relpath(relpath)
        shown = "/".join(parts)

        def open_file(dir_fd: int, name: str | None) -> int:
            if name is None:
                raise PathError(f"{shown!r} is a directory; list directories with ?path=")
            try:
                return os.open(name, FILE_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                raise NotFound(f"No such file: {shown!r}") from None
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: a socket (which cannot be opened)
                    raise
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                raise PathError(f"Not a regular file: {shown!r} is {kind_of(mode)}") from None

        with DirChain.open_root(directory) as dirs:
            fd = dirs.walk(parts, shown, final=open_file)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise PathError(f"{shown!r} is a directory; list directories with ?path=")
            raise PathError(f"Not a regular file: {shown!r} is {kind_of(st.st_mode)}")
        return os.fdopen(fd, "rb"), st.st_size

    # ---------------------------------------------------------------- writing
    def start_upload(self, directory: str, relpath: str, owner: Owner) -> Upload:
        """Begin writing ``relpath`` (missing folders are made); nothing is visible until :meth:`Upload.commit`."""
        parts = split_relpath(relpath)
        shown = "/".join(parts)
        if not parts:
            raise PathError("A file path is required")

        def destination(dir_fd: int, name: str | None) -> tuple[str, int]:
            if name is None:
                raise PathError(f"A directory exists at {shown!r}")
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return name, 0
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "a symbolic link", name)
            if stat.S_ISDIR(st.st_mode):
                raise PathError(f"A directory exists at {shown!r}")
            return name, st.st_size

        dirs = DirChain.open_root(directory)
        try:
            owner = owner.in_workspace(dirs.fd)
            name, replaced = dirs.walk(parts, shown, final=destination, make=owner)
            path = dirs.path(name)
            return Upload(dirs.release(), name, path, owner, replaced)
        finally:
            dirs.close()

    def make_dirs(self, directory: str, relpath: str, owner: Owner) -> None:
        """Make the folders of ``relpath`` that are missing (for the owner); existing ones stay."""
        parts = split_relpath(relpath)
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts), make=owner.in_workspace(dirs.fd))

    def remove_under(self, directory: str, relpath: str) -> None:
        """Delete ``relpath`` of a workspace and everything in it (by descriptor; a symlink
        there is refused, nothing it points to is touched); gone already is fine."""
        parts = split_relpath(relpath)
        if not parts:
            raise PathError("The workspace's own folder cannot be removed this way")
        try:
            with DirChain.open_root(directory) as dirs:
                dirs.walk(parts[:-1], "/".join(parts))
                shutil.rmtree(parts[-1], dir_fd=dirs.fd)
        except (NotFound, FileNotFoundError):
            pass

    def write_file(self, directory: str, relpath: str, data: bytes, owner: Owner) -> None:
        """Write a whole file at once (seed files), atomically."""
        upload = self.start_upload(directory, relpath, owner)
        try:
            upload.write(data)
            upload.commit()
        except BaseException:
            upload.abort()
            raise

    @staticmethod
    def link_target(target: str | None, allowed_roots: list[str]) -> str:
        """The real path of ``target`` if it exists under one of ``allowed_roots``, else PathError.

        Symlinks a workspace may hold that point out of it (datasets) are
        checked here: absolute, resolved (links on the way followed), and
        inside an allowed root. With no roots, no target is allowed.
        """
        if not isinstance(target, str) or not os.path.isabs(target) or "\x00" in target:
            raise PathError(f"A symlink target must be an absolute path: {target!r}")
        real = os.path.realpath(target)
        for root in allowed_roots:
            top = os.path.realpath(root)
            if real == top or real.startswith(top.rstrip("/") + "/"):
                if not os.path.exists(real):
                    raise NotFound(f"Symlink path not found: {target}")
                return real
        raise PathError(f"Symlinks may only point into the dataset roots, not to {target!r}")

    def create_symlink(
        self, directory: str, relpath: str, target: str | None, owner: Owner, allowed_roots: list[str]
    ) -> None:
        """Make ``relpath`` (missing folders made) a symlink to ``target``, which must be under
        one of ``allowed_roots`` (:meth:`link_target`). The same link existing already is fine;
        anything else there is refused."""
        real = self.link_target(target, allowed_roots)
        parts = split_relpath(relpath)
        shown = "/".join(parts)
        if not parts:
            raise PathError("A symlink path is required")
        if parts[-1].startswith(RESERVED_PREFIX):
            raise PathError(f"Names starting with {RESERVED_PREFIX!r} are the hub's own: {shown!r}")

        def make(dir_fd: int, name: str | None) -> None:
            if name is None:
                raise PathError(f"A directory exists at {shown!r}")
            try:
                os.symlink(real, name, dir_fd=dir_fd)
            except FileExistsError:
                try:
                    existing = os.readlink(name, dir_fd=dir_fd)
                except OSError:
                    existing = None
                if existing != real:
                    raise PathError(f"Something else exists at {shown!r}") from None
                return
            owner.chown_link(name, dir_fd)

        with DirChain.open_root(directory) as dirs:
            owner = owner.in_workspace(dirs.fd)
            dirs.walk(parts[:-1], shown, make=owner)
            make(dirs.fd, parts[-1])

    # ---------------------------------------------------------------- usage
    def measure(self, directory: str, tree: UsageTree | None = None) -> int:
        """:meth:`usage_bytes`, sweeping away upload temporaries an earlier hub process left;
        with ``tree`` (what the last measurement of this directory found), re-reading only
        what changed since (see :mod:`.usagetree`)."""
        return (tree or UsageTree()).measure(directory, sweep_before=self.started_at)

    @staticmethod
    def usage_bytes(directory: str, workers: int = 2, sweep_before: float | None = None) -> int:
        """Bytes in the files under ``directory`` (their apparent sizes), not following symlinks.

        Directories themselves are not counted, so the number is what users
        put in the workspace, whatever the filesystem's block size (a symlink
        counts its own length): ``du -sb`` less the directories' sizes.
        Raises FileNotFoundError if ``directory`` itself is missing. With
        ``sweep_before`` (a time), upload temporaries last written before it
        are deleted instead of counted. A full read of the tree by
        :class:`~.usagetree.UsageTree` (``benchmarks/disk_usage.py`` compares
        it with ``du -sb``).
        """
        return UsageTree().measure(directory, sweep_before=sweep_before, workers=workers)


class Upload:
    """A file being written to a temporary name beside its destination.

    The destination's directory stays open; the temporary file is made in it
    and :meth:`commit` renames it into place relative to it (atomic), so a
    failed or interrupted upload never leaves a half-written file, never
    replaces a good one, and never lands anywhere else, whatever is renamed
    meanwhile. The methods are safe to call from different threads (a client
    that goes away aborts an upload while a write may be under way).
    """

    def __init__(self, dir_fd: int, name: str, path: str, owner: Owner, replaced_bytes: int):
        self._dir_fd: int | None = dir_fd
        self._name = name
        #: where the file goes, relative to the workspace (symlinks resolved)
        self.path = path
        self.owner = owner
        self.size = 0
        #: size of the file this upload replaces (for incremental usage)
        self.replaced_bytes = replaced_bytes
        self._tmp = TEMP_PREFIX + secrets.token_hex(8)
        self._lock = threading.Lock()
        try:
            self._fd: int | None = os.open(self._tmp, NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
        except BaseException as e:
            os.close(dir_fd)
            if isinstance(e, FileNotFoundError):
                raise self._folder_deleted() from None
            raise

    def write(self, chunk: bytes) -> None:
        with self._lock:
            if self._fd is None:  # aborted meanwhile (the client went away)
                return
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
            self.size += len(chunk)

    def commit(self) -> None:
        with self._lock:
            assert self._fd is not None and self._dir_fd is not None, "the upload was aborted"
            try:
                self.owner.chown_fd(self._fd)
                os.close(self._fd)
                self._fd = None
                os.replace(self._tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            except IsADirectoryError:
                self._discard()
                raise PathError(f"A directory exists at {self.path!r}") from None
            except FileNotFoundError:  # with the temporary file in it
                self._discard()
                raise self._folder_deleted() from None
            except BaseException:
                self._discard()
                raise
            os.close(self._dir_fd)
            self._dir_fd = None

    def _folder_deleted(self) -> NotFound:
        return NotFound(f"The folder of {self.path!r} was deleted during the upload")

    def abort(self) -> None:
        with self._lock:
            if self._dir_fd is not None:
                self._discard()

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._tmp, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
            self._dir_fd = None
