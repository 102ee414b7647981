"""Walking beneath a workspace by descriptor: the one place request paths are made safe.

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

Where jobs run as real system users, directories and files the hub creates
are handed to the workspace owner (:class:`Owner`, ``fchown``), so that the
owner's server can use them and other users cannot. All of it blocks.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar, overload

from ..hubfolders import DIR_FLAGS, MAX_SYMLINKS

T = TypeVar("T")

#: the longest file name Linux filesystems take (``NAME_MAX``), in bytes
NAME_MAX_BYTES = 255
#: the most folders deep the hub goes below a workspace's top. A walk holds one
#: descriptor open per folder it is in (that is what keeps it inside), so without a
#: bound one request path of thousands of folders, or a tree that deep made by a
#: job, would take all the hub's descriptors (every request and every other user's
#: would fail meanwhile). A request path deeper is a 400; a deeper folder is left
#: out of zips, copies and results listings; a deletion moves it up instead of
#: going down (:func:`~uws_hub.workspaces.storage.remove_tree`).
MAX_DEPTH = 256
#: names the hub keeps for itself in workspaces (uploads under way, SLURM job
#: output that may hold a server's secrets): requests can neither list, read
#: nor write them, and copy-shares leave them out
RESERVED_PREFIX = ".uws-"
#: temporary files of uploads under way: never listed, copied or counted as content
TEMP_PREFIX = RESERVED_PREFIX + "upload-"

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: what opening an entry gives when it was replaced (by a link, a FIFO, ...) or removed since it was listed
CHANGED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO)


class PathError(ValueError):
    """A request path that is malformed, leaves its workspace or names the wrong kind of file (a 400)."""


class NotFound(LookupError):
    """A request path that does not exist in the workspace (a 404)."""


class FileConflict(Exception):
    """What is in the workspace refuses the request: the destination exists, a folder is
    not empty (a 409; a 412 for an upload sent with ``If-None-Match: *``)."""


class NotText(ValueError):
    """A file the text view cannot open: too large, not UTF-8, or with NUL bytes (a 422)."""


class TooManyEntries(ValueError):
    """A folder holding more entries than a listing reads (a 422)."""


def reserved_refusal(shown: str) -> PathError:
    return PathError(f"Names starting with {RESERVED_PREFIX!r} are the hub's own: {shown!r}")


@dataclass(frozen=True)
class Owner:
    """The system account that owns a workspace's files (None: the hub's own)."""

    uid: int | None = None
    gid: int | None = None
    #: the workspace is group-shared (:mod:`uws_hub.sharing.posixgroups`): what the hub
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

    @classmethod
    def of(cls, name: str, path: str, st: os.stat_result) -> Entry:
        """The entry of a file of ``st`` (from ``lstat``: a link is a link)."""
        return cls(
            name=name,
            path=path,
            type=entry_type(st.st_mode),
            size=st.st_size,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def to_dict(self) -> dict:
        return {
            "name": text_name(self.name),
            "path": text_name(self.path),
            "type": self.type,
            "size": self.size,
            "modified": self.modified.isoformat().replace("+00:00", "Z"),
        }


def text_name(name: str) -> str:
    """A name read from the disk as text that JSON, a URL or a zip (UTF-8) can hold: bytes
    that are no UTF-8 (lone surrogates, as ``os.listdir`` gives them) become U+FFFD.

    Jobs and editors name files as they like; a lone surrogate in a listing made the
    file view's link to it fail (the whole folder stayed unlisted), and a job's
    results' URLs a 500. No request can name such a file (:func:`split_relpath`)."""
    return os.fsencode(name).decode("utf-8", "replace")


def etag(st: os.stat_result) -> str:
    """An HTTP entity tag of the file of ``st``: it changes when the file is replaced
    (an upload is a new inode), written (size, modification time in ns) or touched."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def entry_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def kind_of(mode: int) -> str:
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


def too_deep(shown: str) -> PathError:
    return PathError(f"Path goes more than {MAX_DEPTH} folders deep: {shown[:80]!r}...")


def split_relpath(relpath: str) -> list[str]:
    """The components of a workspace-relative path, or PathError.

    ``""``, ``"."`` and ``"/"``-free paths with ``.`` or empty components are
    accepted; absolute paths, ``..``, NUL bytes, names no filesystem takes
    (over 255 bytes), paths deeper than :data:`MAX_DEPTH` folders and text that
    is no file name (lone surrogates) are not.
    """
    if "\x00" in relpath:
        raise PathError("Path must not contain NUL bytes")
    if relpath.startswith("/") or relpath.startswith("\\"):
        raise PathError(f"Path must be relative to the workspace, not absolute: {relpath!r}")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathError(f"Path must stay inside the workspace ('..' is not allowed): {relpath!r}")
    if len(parts) > MAX_DEPTH + 1:  # before anything is made on the way (a link on it is checked by the walk)
        raise too_deep(relpath)
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

    @property
    def too_deep(self) -> bool:
        """Whether the walk is :data:`MAX_DEPTH` folders deep: it goes no deeper."""
        return len(self.names) >= MAX_DEPTH

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

    @overload
    def walk(
        self,
        parts: list[str],
        shown: str,
        final: Callable[[int, str | None], T],
        make: Owner | None = None,
        hops: int = 0,
    ) -> T: ...

    @overload
    def walk(
        self, parts: list[str], shown: str, final: None = None, make: Owner | None = None, hops: int = 0
    ) -> None: ...

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
                raise reserved_refusal(shown)
            if name == "..":
                self.up(shown)
                continue
            try:
                if todo or final is None:
                    if self.too_deep:
                        raise too_deep(shown)
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

    def walk_to_parent(self, parts: list[str], shown: str, make: Owner | None = None) -> str:
        """Walk to the directory holding the last of ``parts`` (following links beneath
        the root on the way) and return that last name, not followed: what deleting,
        moving or making acts on is the entry itself (a link, not what it points at)."""
        if parts[-1].startswith(RESERVED_PREFIX):
            raise reserved_refusal(shown)
        self.walk(parts[:-1], shown, make=make)
        return parts[-1]

    def _open_dir(self, name: str, make: Owner | None) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if make is None:
                raise
        try:
            return make_dir(self.fd, name, make)
        except FileExistsError:  # made meanwhile: open whatever it is, as above
            return os.open(name, DIR_FLAGS, dir_fd=self.fd)

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


def make_dir(dir_fd: int, name: str, owner: Owner) -> int:
    """Make directory ``name`` in the directory open at ``dir_fd`` (FileExistsError if
    anything is there), handed to ``owner``; returns it, open."""
    os.mkdir(name, 0o755, dir_fd=dir_fd)
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        owner.chown_fd(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def listed_mode(dir_fd: int, name: str) -> int | None:
    """The ``st_mode`` (of ``lstat``) of ``name``, listed by a walk of the directory open at
    ``dir_fd``; None for what a walk passes over: the hub's own ``.uws-`` names, and
    what went away since it was listed."""
    if name.startswith(RESERVED_PREFIX):
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


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
