"""Where workspaces live on disk, and the one place request paths are checked.

Every filesystem path that comes from a request goes through
:meth:`WorkspaceStorage.resolve` before any I/O: it refuses absolute paths,
``..`` components and NUL bytes, then resolves symlinks and refuses anything
that lands outside the workspace directory. Files are opened with
``O_NOFOLLOW`` as well, so a symlink swapped in after the check is not
followed either.

Where jobs run as real system users, directories and files the hub creates
are handed to the workspace owner (``chown``), so that the owner's server
can use them and other users cannot.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO


class PathError(ValueError):
    """A request path that is malformed or leaves its workspace (a 400)."""


class NotFound(LookupError):
    """A request path that does not exist in the workspace (a 404)."""


@dataclass(frozen=True)
class Owner:
    """The system account that owns a workspace's files (None: the hub's own)."""

    uid: int | None = None
    gid: int | None = None
    #: the workspace is group-shared (:mod:`uws_hub.posixgroups`): what the hub
    #: creates keeps the group its setgid directory gives it, and is group-writable
    shared: bool = False

    def chown(self, path: str) -> None:
        if self.uid is not None:
            gid = -1 if self.shared or self.gid is None else self.gid
            os.chown(path, self.uid, gid, follow_symlinks=False)
        if self.shared:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                extra = 0o2070 if stat.S_ISDIR(st.st_mode) else 0o060
                os.chmod(path, stat.S_IMODE(st.st_mode) | extra)


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    type: str
    size: int
    modified: datetime

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "modified": self.modified.isoformat().replace("+00:00", "Z"),
        }


def _entry_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def split_relpath(relpath: str) -> list[str]:
    """The components of a workspace-relative path, or PathError.

    ``""``, ``"."`` and ``"/"``-free paths with ``.`` or empty components are
    accepted; absolute paths, ``..`` and NUL bytes are not.
    """
    if "\x00" in relpath:
        raise PathError("Path must not contain NUL bytes")
    if relpath.startswith("/") or relpath.startswith("\\"):
        raise PathError(f"Path must be relative to the workspace, not absolute: {relpath!r}")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathError(f"Path must stay inside the workspace ('..' is not allowed): {relpath!r}")
    return parts


class WorkspaceStorage:
    """Workspace directories under one root, and path-safe file access in them."""

    TEMP_PREFIX = ".uws-upload-"

    def __init__(self, root: str, *, dir_mode: int = 0o700):
        self.root = os.path.realpath(os.path.abspath(root))
        self.dir_mode = dir_mode

    # ---------------------------------------------------------------- directories
    def directory_for(self, owner_name: str, slug: str) -> str:
        """The directory of workspace ``slug`` of ``owner_name`` (not created)."""
        for part in (owner_name, slug):
            if not part or "/" in part or part in (".", "..") or "\x00" in part:
                raise PathError(f"Invalid name for a directory: {part!r}")
        return os.path.join(self.root, owner_name, slug)

    def create(self, directory: str, owner: Owner) -> None:
        """Create a workspace directory (and the owner's folder above it)."""
        self._check_under_root(directory)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        parent = os.path.dirname(directory)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
        os.mkdir(directory, self.dir_mode)
        os.chmod(directory, self.dir_mode)
        owner.chown(directory)

    def remove(self, directory: str) -> None:
        """Delete a workspace directory and everything in it (blocking)."""
        self._check_under_root(directory)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass

    @staticmethod
    def group_shared(directory: str) -> bool:
        """Whether a workspace directory is shared with a POSIX group (setgid)."""
        try:
            return bool(os.lstat(directory).st_mode & stat.S_ISGID)
        except FileNotFoundError:
            return False

    def _check_under_root(self, directory: str) -> None:
        real = os.path.realpath(directory)
        if os.path.dirname(os.path.dirname(real)) != self.root:
            raise PathError(f"{directory} is not a workspace directory under {self.root}")

    # ---------------------------------------------------------------- paths
    def resolve(self, directory: str, relpath: str) -> str:
        """The absolute path of ``relpath`` in ``directory``, symlinks resolved.

        Raises PathError if it is malformed or resolves outside the workspace.
        The path need not exist.
        """
        parts = split_relpath(relpath)
        base = os.path.realpath(directory)
        real = os.path.realpath(os.path.join(base, *parts))
        if real != base and not real.startswith(base + os.sep):
            raise PathError(f"Path resolves outside the workspace: {relpath!r}")
        return real

    @staticmethod
    def relative(directory: str, path: str) -> str:
        rel = os.path.relpath(path, os.path.realpath(directory))
        return "" if rel == "." else rel

    # ---------------------------------------------------------------- reading
    def list_dir(self, directory: str, relpath: str) -> list[Entry]:
        path = self.resolve(directory, relpath)
        try:
            it = os.scandir(path)
        except FileNotFoundError:
            raise NotFound(f"No such directory: {relpath!r}") from None
        except NotADirectoryError:
            raise PathError(f"Not a directory: {relpath!r}") from None
        entries = []
        with it:
            for d in it:
                if d.name.startswith(self.TEMP_PREFIX):
                    continue
                st = d.stat(follow_symlinks=False)
                entries.append(
                    Entry(
                        name=d.name,
                        path=self.relative(directory, os.path.join(path, d.name)),
                        type=_entry_type(st.st_mode),
                        size=st.st_size,
                        modified=datetime.fromtimestamp(st.st_mtime, timezone.utc),
                    )
                )
        entries.sort(key=lambda e: (e.type != "directory", e.name))
        return entries

    def open_read(self, directory: str, relpath: str) -> tuple[BinaryIO, int]:
        """Open a regular file for reading; returns (file, size)."""
        path = self.resolve(directory, relpath)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"No such file: {relpath!r}") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PathError(f"Path resolves outside the workspace: {relpath!r}") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise PathError(f"{relpath!r} is {kind}; list directories with ?path=")
        return os.fdopen(fd, "rb"), st.st_size

    # ---------------------------------------------------------------- writing
    def start_upload(self, directory: str, relpath: str, owner: Owner) -> Upload:
        """Begin writing ``relpath``; nothing is visible until :meth:`Upload.commit`."""
        path = self.resolve(directory, relpath)
        if path == os.path.realpath(directory):
            raise PathError("A file path is required")
        if os.path.isdir(path):
            raise PathError(f"A directory exists at {relpath!r}")
        self._make_parents(directory, os.path.dirname(path), owner)
        upload = Upload(path, owner, self.TEMP_PREFIX)
        try:
            upload.replaced_bytes = os.lstat(path).st_size
        except FileNotFoundError:
            pass
        return upload

    def write_file(self, directory: str, relpath: str, data: bytes, owner: Owner) -> None:
        """Write a whole file at once (seed files), atomically."""
        upload = self.start_upload(directory, relpath, owner)
        try:
            upload.write(data)
            upload.commit()
        except BaseException:
            upload.abort()
            raise

    def _make_parents(self, directory: str, parent: str, owner: Owner) -> None:
        base = os.path.realpath(directory)
        missing = []
        p = parent
        while p != base and not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                raise PathError(f"A file exists where a directory is needed: {self.relative(directory, d)!r}") from None
            owner.chown(d)

    # ---------------------------------------------------------------- usage
    @staticmethod
    def usage_bytes(directory: str, workers: int = 2) -> int:
        """Bytes in the files under ``directory`` (their apparent sizes), not following symlinks.

        Directories themselves are not counted, so the number is what users
        put in the workspace, whatever the filesystem's block size (a symlink
        counts its own length). Raises FileNotFoundError if ``directory``
        itself is missing.

        Streams the tree with ``os.scandir`` (directories are told apart by
        the entry type, without a ``stat``; files get one ``lstat``), with
        ``workers`` threads taking directories off a shared stack: ``lstat``
        releases the GIL, so two threads overlap the system calls with the
        Python work (``benchmarks/disk_usage.py`` compares it with ``du -sb``).
        """
        if not os.path.isdir(directory):
            raise FileNotFoundError(directory)
        pending = [directory]
        cond = threading.Condition()
        busy = 0
        totals: list[int] = []

        def scan(d: str, subdirs: list[str]) -> int:
            total = 0
            try:
                it = os.scandir(d)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return 0
            with it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
            return total

        def work() -> None:
            nonlocal busy
            total = 0
            while True:
                with cond:
                    while not pending and busy:
                        cond.wait()
                    if not pending:  # nothing left, and nobody can add more
                        cond.notify_all()
                        break
                    d = pending.pop()
                    busy += 1
                subdirs: list[str] = []
                try:
                    total += scan(d, subdirs)
                finally:
                    with cond:
                        pending.extend(subdirs)
                        busy -= 1
                        cond.notify_all()
            totals.append(total)

        helpers = [threading.Thread(target=work, daemon=True) for _ in range(max(0, workers - 1))]
        for thread in helpers:
            thread.start()
        work()
        for thread in helpers:
            thread.join()
        return sum(totals)


class Upload:
    """A file being written to a temporary name beside its destination.

    :meth:`commit` renames it into place (atomic on one filesystem), so a
    failed or interrupted upload never leaves a half-written file, and never
    replaces a good one.
    """

    def __init__(self, path: str, owner: Owner, prefix: str):
        self.path = path
        self.owner = owner
        self.size = 0
        #: size of the file this upload replaces (for incremental usage)
        self.replaced_bytes = 0
        self.tmp_path = os.path.join(os.path.dirname(path), prefix + secrets.token_hex(8))
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        self._file.close()
        self.owner.chown(self.tmp_path)
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self._file.close()
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass
