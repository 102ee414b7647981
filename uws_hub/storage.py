"""Where workspaces live on disk, and the one place request paths are made safe.

A user's job can change its workspace between any two system calls of the
hub's (swap a directory for a symlink to outside, put a FIFO where a file
was), so every file operation inside a workspace goes by descriptor, never by
a path string the kernel would resolve again:

- The workspace directory is opened, then each component of a request path
  relative to the directory above it, with ``O_NOFOLLOW`` (:class:`DirChain`).
- A symlink met on the way is read and its target walked the same way:
  relative to the directory holding it, ``..`` going back up the directories
  already open, refused when absolute or climbing above the workspace, at most
  :data:`MAX_SYMLINKS` of them. That is ``openat2``'s ``RESOLVE_BENEATH`` done
  in user space (Python has no ``openat2``): links that stay inside keep
  working, as users expect of the links their tools make, and nothing outside
  is ever opened, whatever is swapped in between two steps.
- Files are opened ``O_NONBLOCK`` and ``fstat``-ed; anything but a regular file
  or a directory is refused with its type, so a FIFO cannot block a read.
- Writes go to a temporary file in the destination's (open) directory, renamed
  into place relative to it (:class:`Upload`).

All of it blocks: callers run it in a thread, never on the hub's event loop.

Where jobs run as real system users, directories and files the hub creates
are handed to the workspace owner (``fchown``), so that the owner's server
can use them and other users cannot.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")

#: as many symlinks as Linux follows in one path (``MAXSYMLINKS``)
MAX_SYMLINKS = 40
#: the longest file name Linux filesystems take (``NAME_MAX``), in bytes
NAME_MAX_BYTES = 255
#: names the hub keeps for itself in workspaces (uploads under way, SLURM job
#: output that may hold a server's secrets): requests can neither list, read
#: nor write them, and copy-shares leave them out
RESERVED_PREFIX = ".uws-"
#: temporary files of uploads under way: never listed, copied or counted as content
TEMP_PREFIX = RESERVED_PREFIX + "upload-"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class PathError(ValueError):
    """A request path that is malformed, leaves its workspace or names the wrong kind of file (a 400)."""


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

    def in_workspace(self, root_fd: int) -> Owner:
        """This owner, group-shared if the workspace open at ``root_fd`` is (setgid)."""
        if self.uid is not None and os.fstat(root_fd).st_mode & stat.S_ISGID:
            return replace(self, shared=True)
        return self

    def chown_fd(self, fd: int) -> None:
        """Hand an open file or directory the hub made to the owner."""
        if self.uid is not None:
            os.fchown(fd, self.uid, -1 if self.shared or self.gid is None else self.gid)
        if self.shared:
            mode = os.fstat(fd).st_mode
            os.fchmod(fd, stat.S_IMODE(mode) | (0o2070 if stat.S_ISDIR(mode) else 0o060))

    def chown_link(self, name: str, dir_fd: int) -> None:
        """Hand a symlink the hub made (``name`` in the directory open at ``dir_fd``) to the owner."""
        if self.uid is not None:
            gid = -1 if self.shared or self.gid is None else self.gid
            os.chown(name, self.uid, gid, dir_fd=dir_fd, follow_symlinks=False)


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


def _kind(mode: int) -> str:
    """What a file that is neither regular nor a directory is, for messages."""
    for test, kind in [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ]:
        if test(mode):
            return kind
    return "not a regular file"


def _name_too_long(name: str, size: int) -> PathError:
    return PathError(f"Name longer than {NAME_MAX_BYTES} bytes ({size} bytes): {name[:20]!r}...")


def split_relpath(relpath: str) -> list[str]:
    """The components of a workspace-relative path, or PathError.

    ``""``, ``"."`` and ``"/"``-free paths with ``.`` or empty components are
    accepted; absolute paths, ``..``, NUL bytes, names no filesystem takes
    (over 255 bytes) and text that is no file name (lone surrogates) are not.
    """
    if "\x00" in relpath:
        raise PathError("Path must not contain NUL bytes")
    if relpath.startswith("/") or relpath.startswith("\\"):
        raise PathError(f"Path must be relative to the workspace, not absolute: {relpath!r}")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathError(f"Path must stay inside the workspace ('..' is not allowed): {relpath!r}")
    for part in parts:
        try:
            size = len(os.fsencode(part))
        except UnicodeEncodeError:
            raise PathError(f"Path is not valid text for a file name: {relpath!r}") from None
        if size > NAME_MAX_BYTES:
            raise _name_too_long(part, size)
    return parts


class DirChain:
    """The directories from a workspace's root down to where a walk has got, each open.

    ``fds[0]`` is the root; ``names`` are the components below it, as resolved
    (symlinks followed), so ``..`` goes back up the way the walk came down and
    can never climb above the root. :meth:`branch` starts a second walk from
    here that borrows these descriptors (closing only its own).
    """

    def __init__(self, fds: list[int], names: list[str] | None = None, borrowed: int = 0):
        self.fds = fds
        self.names = names or []
        self._borrowed = borrowed

    @classmethod
    def open_root(cls, directory: str) -> DirChain:
        """A workspace's directory (hub-made under the workspaces root), open."""
        try:
            return cls([os.open(directory, DIR_FLAGS)])
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("The workspace's directory is missing") from None

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def path(self, name: str | None = None) -> str:
        """The workspace-relative path of where the walk is (or of ``name`` in it)."""
        return "/".join(self.names + ([name] if name else []))

    def branch(self) -> DirChain:
        return DirChain(list(self.fds), list(self.names), borrowed=len(self.fds))

    def enter(self, fd: int, name: str) -> None:
        self.fds.append(fd)
        self.names.append(name)

    def up(self, shown: str) -> None:
        if len(self.fds) == 1:
            raise PathError(f"Path resolves outside the workspace: {shown!r}")
        fd = self.fds.pop()
        self.names.pop()
        if len(self.fds) >= self._borrowed:
            os.close(fd)
        else:  # a borrowed one: what is entered from here on is this walk's own
            self._borrowed = len(self.fds)

    def close(self) -> None:
        while len(self.fds) > self._borrowed:
            os.close(self.fds.pop())
        self.fds = []

    def release(self) -> int:
        """Keep only the descriptor of where the walk is (the caller closes it); close the others."""
        fd = self.fds.pop()
        self.close()
        return fd

    def __enter__(self) -> DirChain:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def walk(
        self,
        parts: list[str],
        shown: str,
        final: Callable[[int, str | None], T] | None = None,
        make: Owner | None = None,
        hops: int = 0,
    ) -> T | None:
        """Walk down ``parts`` from here, following symlinks beneath the root.

        With no ``final``, every component must be a directory, and is entered.
        Otherwise the last one is handed to ``final(dir_fd, name)`` in the open
        directory holding it (``name`` None when the path ends at the root
        itself), which raises ``OSError(ELOOP)`` when ``name`` is a symlink, to
        have it followed. ``make`` creates missing directories, for that owner.
        ``shown`` is the path named in errors.
        """
        todo = list(reversed(parts))  # a stack: the next component last
        while True:
            if not todo:
                if final is None:
                    return None
                if not self.names:
                    return final(self.fd, None)
                # the path ended at a directory (through '..' in a link): hand it over by name
                todo.append(self.names[-1])
                self.up(shown)
            name = todo.pop()
            if name in ("", "."):
                continue
            if name.startswith(RESERVED_PREFIX):
                raise PathError(f"Names starting with {RESERVED_PREFIX!r} are the hub's own: {shown!r}")
            if name == "..":
                self.up(shown)
                continue
            try:
                if todo or final is None:
                    self.enter(self._open_dir(name, make), name)
                    continue
                return final(self.fd, name)
            except OSError as e:
                # a symlink: ELOOP, or ENOTDIR where a directory was asked for
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refusal(e, name) from None
                failure = e
            try:
                target = os.readlink(name, dir_fd=self.fd)
            except OSError as e:
                if e.errno != errno.EINVAL or failure.errno == errno.ENOTDIR:
                    raise self._refusal(failure if e.errno == errno.EINVAL else e, name) from None
                target = None  # a link a moment ago, not now: look again (a hop, so this ends)
            hops += 1
            if hops > MAX_SYMLINKS:
                raise PathError(f"Too many levels of symbolic links (a loop?) in {shown!r}")
            if target is None:
                todo.append(name)
                continue
            if target.startswith("/"):
                raise PathError(f"Path resolves outside the workspace: {shown!r}")
            todo.extend(reversed(target.split("/")))

    def _open_dir(self, name: str, make: Owner | None) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if make is None:
                raise
        try:
            os.mkdir(name, 0o755, dir_fd=self.fd)
        except FileExistsError:  # made meanwhile: open whatever it is, as above
            return os.open(name, DIR_FLAGS, dir_fd=self.fd)
        fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        try:
            make.chown_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refusal(self, e: OSError, name: str) -> Exception:
        where = self.path(name)
        if e.errno == errno.ENOENT:
            return NotFound(f"No such directory: {where!r}")
        if e.errno == errno.ENOTDIR:
            return PathError(f"Not a directory: {where!r}")
        if e.errno == errno.ENAMETOOLONG:
            return _name_too_long(name, len(os.fsencode(name)))
        if e.errno in (errno.EACCES, errno.EPERM):
            return PathError(f"Permission denied: {where!r}")
        return e


def link_stays_inside(dirs: DirChain, target: str) -> bool:
    """Whether a symlink in the directory where ``dirs`` is, pointing at
    ``target``, resolves inside ``dirs``' root: links in its way are followed,
    a missing last component is fine (a link to a file not made yet), a missing
    directory on the way is not (it cannot be resolved)."""

    def inside(dir_fd: int, name: str | None) -> bool:
        if name is not None:
            try:
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "a symbolic link", name)
            except FileNotFoundError:
                pass
        return True

    if target.startswith("/"):
        return False
    with dirs.branch() as probe:
        try:
            return probe.walk(target.split("/"), target, final=inside, hops=1)
        except (PathError, NotFound, OSError):
            return False


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
                            type=_entry_type(st.st_mode),
                            size=st.st_size,
                            modified=datetime.fromtimestamp(st.st_mtime, timezone.utc),
                        )
                    )
        entries.sort(key=lambda e: (e.type != "directory", e.name))
        return entries

    def walk(self, directory: str, max_entries: int, *, hidden: bool = True) -> list[tuple[str, str]]:
        """Every entry under a workspace, as ``(relative path, type)`` (types as :meth:`list_dir`'s),
        at most ``max_entries`` of them; symlinks are listed, never followed.

        Each directory is opened relative to its parent's descriptor with
        ``O_NOFOLLOW``, so a directory swapped for a symlink is not walked
        into; only one descriptor per level is open. ``hidden=False`` leaves
        out names starting with '.' (and what is in such folders).
        """
        entries: list[tuple[str, str]] = []

        def scan(fd: int, prefix: str) -> None:
            subdirs = []
            with os.scandir(fd) as it:
                for d in it:
                    if d.name.startswith(RESERVED_PREFIX) or (not hidden and d.name.startswith(".")):
                        continue
                    try:
                        kind = _entry_type(d.stat(follow_symlinks=False).st_mode)
                    except FileNotFoundError:
                        continue
                    if len(entries) >= max_entries:
                        return
                    entries.append((prefix + d.name, kind))
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

        with DirChain.open_root(directory) as dirs:
            scan(dirs.fd, "")
        return sorted(entries)

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
                raise PathError(f"Not a regular file: {shown!r} is {_kind(mode)}") from None

        with DirChain.open_root(directory) as dirs:
            fd = dirs.walk(parts, shown, final=open_file)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise PathError(f"{shown!r} is a directory; list directories with ?path=")
            raise PathError(f"Not a regular file: {shown!r} is {_kind(st.st_mode)}")
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
    def link_target(target: str, allowed_roots: list[str]) -> str:
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

    def create_symlink(self, directory: str, relpath: str, target: str, owner: Owner, allowed_roots: list[str]) -> None:
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
    def measure(self, directory: str) -> int:
        """:meth:`usage_bytes`, sweeping away upload temporaries an earlier hub process left."""
        return self.usage_bytes(directory, sweep_before=self.started_at)

    @staticmethod
    def usage_bytes(directory: str, workers: int = 2, sweep_before: float | None = None) -> int:
        """Bytes in the files under ``directory`` (their apparent sizes), not following symlinks.

        Directories themselves are not counted, so the number is what users
        put in the workspace, whatever the filesystem's block size (a symlink
        counts its own length). Raises FileNotFoundError if ``directory``
        itself is missing. With ``sweep_before`` (a time), upload temporaries
        last written before it are deleted instead of counted.

        Streams the tree with ``os.scandir`` (directories are told apart by
        the entry type, without a ``stat``; files get one ``lstat``), with
        ``workers`` threads taking directories off a shared stack: ``lstat``
        releases the GIL, so two threads overlap the system calls with the
        Python work (``benchmarks/disk_usage.py`` compares it with ``du -sb``).
        Directories are opened relative to their parent's descriptor with
        ``O_NOFOLLOW`` (a parent stays open until its last subdirectory is), so
        a directory swapped for a symlink is not followed out of the tree.
        """
        try:
            root = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(directory) from None
        # (parent, name) of directories to scan; a parent is [fd, subdirectories not yet opened]
        pending: list[tuple[list[int], str]] = [([root, 1], ".")]
        cond = threading.Condition()
        busy = 0
        totals: list[int] = []

        def scan(fd: int, subdirs: list[str]) -> int:
            total = 0
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.name)
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if (
                            sweep_before is not None and entry.name.startswith(TEMP_PREFIX)
                            and stat.S_ISREG(st.st_mode) and st.st_mtime < sweep_before
                        ):
                            os.unlink(entry.name, dir_fd=fd)
                            continue
                    except FileNotFoundError:
                        continue
                    total += st.st_size
            return total

        def open_next(parent: list[int], name: str) -> int | None:
            try:
                return os.open(name, DIR_FLAGS, dir_fd=parent[0])
            except OSError as e:
                # gone, no longer a directory, or a symlink now: not part of the tree
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                    return None
                raise
            finally:
                with cond:
                    parent[1] -= 1
                    if not parent[1]:
                        os.close(parent[0])

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
                    parent, name = pending.pop()
                    busy += 1
                subdirs: list[str] = []
                fd = None
                try:
                    fd = open_next(parent, name)
                    if fd is not None:
                        total += scan(fd, subdirs)
                finally:
                    with cond:
                        if subdirs:
                            entry = [fd, len(subdirs)]
                            pending.extend((entry, d) for d in subdirs)
                        elif fd is not None:
                            os.close(fd)
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
                view = view[os.write(self._fd, view):]
            self.size += len(chunk)

    def commit(self) -> None:
        with self._lock:
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
            os.close(self._dir_fd)
            self._dir_fd = None
