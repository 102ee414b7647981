"""What the hub does in a workspace's directory: create, seed, list, read, write,
make folders, move, delete, measure and remove, all by descriptor beneath it (:mod:`.paths`).

- Files are opened ``O_NONBLOCK`` and ``fstat``-ed; anything but a regular file
  or a directory is refused with its type, so a FIFO cannot block a read.
- Writes go to a temporary file in the destination's (open) directory, renamed
  into place relative to it (:class:`Upload`).
- Deleting, moving and making act on the last component of a path itself (a
  link, not what it points at), in its open directory; a tree is removed one
  open directory at a time (:func:`remove_tree`), never through a link.

All of it blocks: callers run it in a thread, never on the hub's event loop.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO

from ..hubfolders import rename_noreplace
from .archive import ZipStream
from .paths import (
    DIR_FLAGS,
    FILE_FLAGS,
    MAX_DEPTH,
    NEW_FILE_FLAGS,
    RESERVED_PREFIX,
    TEMP_PREFIX,
    DirChain,
    Entry,
    FileConflict,
    NotFound,
    NotText,
    Owner,
    PathError,
    TooManyEntries,
    entry_type,
    etag,
    kind_of,
    make_dir,
    split_relpath,
    text_name,
)
from .usagetree import HELPER_AFTER, UsageTree

#: how often a folder being deleted is emptied again when something new appears in it
MAX_RESCANS = 3
#: the largest file the text view opens and saves (:meth:`WorkspaceStorage.read_text`)
TEXT_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Precondition:
    """What must be at an upload's destination for the upload to be put in place:
    HTTP's ``If-None-Match: *`` (``absent``: nothing) and ``If-Match`` (``etag``: the
    file of that :func:`~.paths.etag`, ``"*"``: any file). Checked when the upload
    starts and again when it is put in place."""

    absent: bool = False
    etag: str | None = None

    def check(self, st: os.stat_result | None, shown: str) -> None:
        """FileConflict unless ``st`` (None: nothing there) is what the condition asks for."""
        if self.absent and st is not None:
            raise FileConflict(f"{shown!r} already exists")
        if self.etag is None:
            return
        if st is None:
            raise FileConflict(f"{shown!r} was deleted since it was read")
        if self.etag != "*" and etag(st) != self.etag:
            raise FileConflict(f"{shown!r} changed since it was read")


@dataclass
class Freed:
    """Bytes a removal has freed so far (apparent sizes, as :meth:`WorkspaceStorage.usage_bytes`
    counts them). The caller keeps it, so that a removal cut short by an error still
    accounts for what it removed."""

    bytes: int = 0


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
            # (a leading dot: the root's own folders, such as deleted users' data, former.DELETED_FOLDER)
            if not part or "/" in part or part.startswith(".") or "\x00" in part:
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
        """Delete a workspace directory and everything in it (:func:`remove_tree`)."""
        self._check_under_root(directory)
        try:
            parent = os.open(os.path.dirname(directory), DIR_FLAGS)
        except FileNotFoundError:
            return
        try:
            remove_tree(parent, os.path.basename(directory), Freed(), directory)
        except FileNotFoundError:
            pass
        finally:
            os.close(parent)

    def _check_under_root(self, directory: str) -> None:
        real = os.path.realpath(directory)
        if os.path.dirname(os.path.dirname(real)) != self.root:
            raise PathError(f"{directory} is not a workspace directory under {self.root}")

    # ---------------------------------------------------------------- reading
    def list_dir(self, directory: str, relpath: str, max_entries: int) -> list[Entry]:
        """The entries of a folder, folders first, by name; :class:`TooManyEntries` past
        ``max_entries`` (each is kept until the listing is sorted: a folder of a
        million files would hold hundreds of MB of the hub's memory per request)."""
        parts = split_relpath(relpath)
        entries: list[Entry] = []
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts))
            with os.scandir(dirs.fd) as it:
                for d in it:
                    if d.name.startswith(RESERVED_PREFIX):
                        continue
                    if len(entries) >= max_entries:
                        shown = repr("/".join(parts)) if parts else "The workspace"
                        raise TooManyEntries(
                            f"{shown} holds more than {max_entries} files and folders, too many to list"
                            " (UWSHub.folder_max_entries); list its contents from a job or JupyterLab"
                        )
                    try:
                        st = d.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append(Entry.of(d.name, dirs.path(d.name), st))
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
        into; only one descriptor per level is open, and folders deeper than
        :data:`~.paths.MAX_DEPTH` are listed but not walked into.
        """
        entries: list[tuple[str, str, int]] = []

        def scan(fd: int, prefix: str) -> list[str]:
            """Add the entries of the folder open at ``fd``; its subfolders (none once full)."""
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
                        return []
                    kind = entry_type(st.st_mode)
                    entries.append((prefix + d.name, kind, st.st_size))
                    if kind == "directory":
                        subdirs.append(d.name)
            return sorted(subdirs, reverse=True)  # taken from the end: in order

        parts = split_relpath(relpath)
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts))
            top = dirs.path() + "/" if dirs.names else ""
            # the folders being walked, the top's first (its descriptor the chain's): descriptor,
            # path prefix, subfolders left
            stack = [(dirs.fd, top, scan(dirs.fd, top))]
            try:
                while stack:
                    fd, prefix, subdirs = stack[-1]
                    if not subdirs or len(dirs.names) + len(stack) > MAX_DEPTH:
                        if len(stack) > 1:
                            os.close(fd)
                        stack.pop()
                        continue
                    name = subdirs.pop()
                    try:
                        sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                    except OSError:  # gone, or swapped for something else meanwhile
                        continue
                    stack.append((sub, f"{prefix}{name}/", []))
                    stack[-1][2].extend(scan(sub, f"{prefix}{name}/"))
            finally:
                for fd, _, _ in stack[1:]:
                    os.close(fd)
        return sorted(entries)

    def files_under(self, directory: str, relpath: str, max_entries: int = 1000) -> list[dict]:
        """The regular files under ``relpath`` (a job's results): path, size and media type;
        [] if it does not exist, or is no folder in the workspace. It is where the job and
        every editor put what they like: one made a FIFO, or a link out of the workspace,
        made the job itself unreadable (its ``GET``, its UWS document: a 500) for everyone."""
        try:
            entries = self.tree(directory, relpath, max_entries)
        except (NotFound, PathError):
            return []
        return [
            {
                "path": text_name(path),
                "size": size,
                "mime_type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            }
            for path, kind, size in entries
            if kind == "file"
        ]

    def open_read(self, directory: str, relpath: str) -> tuple[BinaryIO, os.stat_result]:
        """Open a regular file for reading; returns the file and its ``fstat``."""
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
        return os.fdopen(fd, "rb"), st

    def read_text(self, directory: str, relpath: str) -> tuple[str, os.stat_result]:
        """A small text file's text, for the page's text view; NotText for a file over
        :data:`TEXT_MAX_BYTES`, not UTF-8, or with NUL bytes (a binary file)."""
        shown = "/".join(split_relpath(relpath))
        f, st = self.open_read(directory, relpath)
        with f:
            if st.st_size > TEXT_MAX_BYTES:
                raise NotText(f"{shown!r} has {st.st_size} bytes, more than the {TEXT_MAX_BYTES} of a text to edit")
            data = f.read(st.st_size)  # as much as there was when opened, if it grows meanwhile
        return text_of(data, shown), st

    def open_zip(self, directory: str, relpath: str, top: str) -> ZipStream:
        """Folder ``relpath`` as a zip file, made as it is read (:class:`~.archive.ZipStream`),
        in a folder named as the path's last component (``top`` for the workspace's own)."""
        parts = split_relpath(relpath)
        shown = "/".join(parts)
        dirs = DirChain.open_root(directory)
        try:
            dirs.walk(parts, shown)
            return ZipStream(dirs, shown, parts[-1] if parts else top)
        except BaseException:
            dirs.close()
            raise

    # ---------------------------------------------------------------- writing
    def start_upload(
        self, directory: str, relpath: str, owner: Owner, condition: Precondition = Precondition()
    ) -> Upload:
        """Begin writing ``relpath`` (missing folders are made); nothing is visible until :meth:`Upload.commit`.

        What is at ``relpath`` must meet ``condition`` (else FileConflict), now and
        when the upload is put in place.
        """
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
                condition.check(None, shown)
                return name, 0
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "a symbolic link", name)
            if stat.S_ISDIR(st.st_mode):
                raise PathError(f"A directory exists at {shown!r}")
            condition.check(st, shown)
            return name, st.st_size

        dirs = DirChain.open_root(directory)
        try:
            owner = owner.in_workspace(dirs.fd)
            name, replaced = dirs.walk(parts, shown, final=destination, make=owner)
            path = dirs.path(name)
            return Upload(dirs.release(), name, path, owner, replaced, condition)
        finally:
            dirs.close()

    def make_dirs(self, directory: str, relpath: str, owner: Owner) -> None:
        """Make the folders of ``relpath`` that are missing (for the owner); existing ones stay."""
        parts = split_relpath(relpath)
        with DirChain.open_root(directory) as dirs:
            dirs.walk(parts, "/".join(parts), make=owner.in_workspace(dirs.fd))

    def remove_under(self, directory: str, relpath: str) -> None:
        """Delete ``relpath`` of a workspace and everything in it (:func:`remove_tree`: by
        descriptor; a symlink there is removed itself, nothing it points to is touched);
        gone already is fine."""
        parts = split_relpath(relpath)
        if not parts:
            raise PathError("The workspace's own folder cannot be removed this way")
        shown = "/".join(parts)
        try:
            with DirChain.open_root(directory) as dirs:
                dirs.walk(parts[:-1], shown)
                remove_tree(dirs.fd, parts[-1], Freed(), shown)
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
            name = dirs.walk_to_parent(parts, shown, make=owner)
            make(dirs.fd, name)

    def make_folder(self, directory: str, relpath: str, owner: Owner) -> Entry:
        """Make folder ``relpath`` (and the missing folders above it); FileConflict if
        anything is there already."""
        parts = split_relpath(relpath)
        shown = "/".join(parts)
        if not parts:
            raise PathError("A folder path is required")
        with DirChain.open_root(directory) as dirs:
            owner = owner.in_workspace(dirs.fd)
            name = dirs.walk_to_parent(parts, shown, make=owner)
            try:
                fd = make_dir(dirs.fd, name, owner)
            except OSError as e:
                raise _refusal(e, shown) from None
            try:
                return Entry.of(name, dirs.path(name), os.fstat(fd))
            finally:
                os.close(fd)

    def delete(self, directory: str, relpath: str, freed: Freed, *, recursive: bool = False) -> Entry:
        """Delete ``relpath`` (a link itself, not what it points at); a folder only when
        empty, or with everything in it when ``recursive``. Returns what was there;
        ``freed`` counts the bytes removed (as they go)."""
        parts = split_relpath(relpath)
        shown = "/".join(parts)
        if not parts:
            raise PathError("The workspace's top folder cannot be deleted; delete the workspace instead")
        with DirChain.open_root(directory) as dirs:
            name = dirs.walk_to_parent(parts, shown)
            st = _lstat(dirs.fd, name, shown)
            entry = Entry.of(name, dirs.path(name), st)
            try:
                if not stat.S_ISDIR(st.st_mode):
                    _unlink(dirs.fd, name, freed)
                elif recursive:
                    remove_tree(dirs.fd, name, freed, shown)
                else:
                    os.rmdir(name, dir_fd=dirs.fd)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and not recursive:
                    raise FileConflict(f"Folder {shown!r} is not empty; delete it with ?recursive=1") from None
                raise _refusal(e, shown) from None
            return entry

    def move(self, directory: str, src: str, dst: str, freed: Freed, *, overwrite: bool = False) -> Entry:
        """Move (rename) ``src`` to ``dst`` in the same workspace: the entry itself (a link
        stays a link), into a folder that exists. A file at ``dst`` is replaced only with
        ``overwrite`` (``freed`` counts it), a folder never; returns the moved entry."""
        sparts, dparts = split_relpath(src), split_relpath(dst)
        sshown, dshown = "/".join(sparts), "/".join(dparts)
        if not sparts:
            raise PathError("The workspace's top folder cannot be moved")
        if not dparts:
            raise PathError("A new path is required")
        with DirChain.open_root(directory) as sdirs, sdirs.branch() as ddirs:
            sname = sdirs.walk_to_parent(sparts, sshown)
            dname = ddirs.walk_to_parent(dparts, dshown)
            st = _lstat(sdirs.fd, sname, sshown)
            try:
                if overwrite:
                    replaced = self._replaceable(ddirs.fd, dname, dshown, st)
                    os.rename(sname, dname, src_dir_fd=sdirs.fd, dst_dir_fd=ddirs.fd)
                    if replaced is not None:
                        freed.bytes += replaced
                else:
                    rename_noreplace(sdirs.fd, sname, ddirs.fd, dname)
            except FileExistsError:
                raise FileConflict(f"{dshown!r} already exists") from None
            except OSError as e:
                if e.errno == errno.EINVAL:
                    raise PathError(f"Cannot move {sshown!r} into itself") from None
                if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise FileConflict(f"A folder exists at {dshown!r}") from None
                raise _refusal(e, sshown) from None
            return Entry.of(dname, ddirs.path(dname), _lstat(ddirs.fd, dname, dshown))

    @staticmethod
    def _replaceable(dir_fd: int, name: str, shown: str, moving: os.stat_result) -> int | None:
        """The bytes a move with ``overwrite`` frees by replacing what is at ``name``
        (None: nothing is); FileConflict when that is a folder, or when a folder is moved."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode) or stat.S_ISDIR(moving.st_mode):
            raise FileConflict(
                f"A folder exists at {shown!r}" if stat.S_ISDIR(st.st_mode) else f"{shown!r} already exists"
            )
        return 0 if os.path.samestat(st, moving) else st.st_size

    # ---------------------------------------------------------------- usage
    def measure(self, directory: str, tree: UsageTree | None = None) -> int:
        """:meth:`usage_bytes`, sweeping away upload temporaries an earlier hub process left;
        with ``tree`` (what the last measurement of this directory found), re-reading only
        what changed since (see :mod:`.usagetree`)."""
        return (tree or UsageTree()).measure(directory, sweep_before=self.started_at)

    @staticmethod
    def usage_bytes(
        directory: str, sweep_before: float | None = None, helper_after: float | None = HELPER_AFTER
    ) -> int:
        """Bytes in the files under ``directory`` (their apparent sizes), not following symlinks.

        Directories themselves are not counted, so the number is what users
        put in the workspace, whatever the filesystem's block size (a symlink
        counts its own length): ``du -sb`` less the directories' sizes.
        Raises FileNotFoundError if ``directory`` itself is missing. With
        ``sweep_before`` (a time), upload temporaries last written before it
        are deleted instead of counted. A full read of the tree by
        :class:`~.usagetree.UsageTree` (``benchmarks/disk_usage.py`` compares
        it with ``du -sb``), with a helper process once it has taken
        ``helper_after`` seconds (None: never).
        """
        return UsageTree().measure(directory, sweep_before=sweep_before, helper_after=helper_after)


def _lstat(dir_fd: int, name: str, shown: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound(f"No such file or folder: {shown!r}") from None


def _refusal(e: OSError, shown: str) -> Exception:
    """What a failed change of ``shown`` tells the client (what is not the client's doing stays an OSError)."""
    if isinstance(e, FileExistsError):
        return FileConflict(f"{shown!r} already exists")
    if isinstance(e, FileNotFoundError):
        return NotFound(f"No such file or folder: {shown!r}")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PathError(f"Permission denied: {shown!r}")
    if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
        return FileConflict(f"{shown!r} is in use or changed meanwhile; try again")
    return e


def _unlink(dir_fd: int, name: str, freed: Freed) -> None:
    """Remove ``name`` (no directory), counting its bytes unless it is an upload's temporary file."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(name, dir_fd=dir_fd)
    if not name.startswith(TEMP_PREFIX):
        freed.bytes += st.st_size


def _empty(fd: int, freed: Freed) -> list[str]:
    """Remove all but the directories in the directory open at ``fd``; returns those."""
    subdirs = []
    with os.scandir(fd) as it:
        for entry in it:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                else:
                    _unlink(fd, entry.name, freed)
            except FileNotFoundError:
                continue
            except IsADirectoryError:  # a directory now
                subdirs.append(entry.name)
    return subdirs


def _move_up(fd: int, name: str, top: tuple[int, int, str, list[str]]) -> None:
    """Move ``name`` (in the directory open at ``fd``) into the directory :func:`remove_tree`
    removes (``top``, its first frame), under a new name, to be removed from there."""
    moved = f".deleting-{secrets.token_hex(8)}"
    try:
        os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top[0])
    except FileNotFoundError:
        return
    top[3].append(moved)


def remove_tree(parent_fd: int, name: str, freed: Freed, shown: str) -> None:
    """Remove ``name`` in the directory open at ``parent_fd`` and, if it is a directory,
    everything in it, one open directory at a time.

    Each directory is opened relative to its parent's descriptor with
    ``O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK``, emptied by name in it, and removed
    from its parent: a directory swapped for a link meanwhile is unlinked as a link
    (nothing it points at is touched), a FIFO never blocks, and nothing outside
    the tree is reached, whatever a job renames. (``shutil.rmtree`` opens
    subdirectories without ``O_NONBLOCK``: one swapped for a FIFO blocks it.)
    Something made in a directory while it is emptied is removed too, up to
    :data:`MAX_RESCANS` times; then the removal stops with a FileConflict.
    A directory of another file system than ``name``'s (a mount in the tree: a data
    set an admin bound into a workspace) is not entered: the removal stops with a
    FileConflict that names it (it removed what was mounted there, as root).
    At most :data:`~.paths.MAX_DEPTH` directories below ``name`` are open at
    once: a directory deeper is moved up into ``name`` (renamed relative to
    both descriptors, so it stays in the tree) and removed from there, so a
    tree of any depth is removed with few descriptors.
    """
    try:
        top = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        _unlink(parent_fd, name, freed)  # not a directory (any more)
        return
    # a directory being emptied: its descriptor, its parent's, its name there, subdirectories left
    frames: list[tuple[int, int, str, list[str]]] = []
    rescans = 0
    try:
        frames.append((top, parent_fd, name, []))
        device = os.fstat(top).st_dev
        frames[-1][3].extend(_empty(top, freed))
        while frames:
            fd, pfd, dname, subdirs = frames[-1]
            if subdirs:
                sub = subdirs.pop()
                if len(frames) > MAX_DEPTH:
                    _move_up(fd, sub, frames[0])
                    continue
                try:
                    sfd = os.open(sub, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno == errno.ENOENT:
                        continue
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    _unlink(fd, sub, freed)  # swapped for a link or a file meanwhile
                    continue
                if os.fstat(sfd).st_dev != device:
                    os.close(sfd)
                    raise FileConflict(
                        f"{shown!r} holds a mount of another file system ({sub!r}): unmount it and try again"
                    )
                frames.append((sfd, fd, sub, []))
                frames[-1][3].extend(_empty(sfd, freed))
                continue
            try:
                os.rmdir(dname, dir_fd=pfd)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    rescans += 1
                    if rescans > MAX_RESCANS:
                        raise FileConflict(
                            f"Files keep appearing in {shown!r}; stop what writes there and try again"
                        ) from None
                    subdirs.extend(_empty(fd, freed))
                    continue
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):  # gone, or replaced by a link: done here
                    raise
            os.close(fd)
            frames.pop()
    finally:
        for fd, *_ in frames:
            os.close(fd)


def text_of(data: bytes, shown: str) -> str:
    """``data`` as text (NotText unless it is UTF-8 without NUL bytes)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotText(f"{shown!r} is not UTF-8 text (byte {e.start} is not UTF-8)") from None
    if "\x00" in text:
        raise NotText(f"{shown!r} is not text (it holds NUL bytes)")
    return text


class Upload:
    """A file being written to a temporary name beside its destination.

    The destination's directory stays open; the temporary file is made in it
    and :meth:`commit` renames it into place relative to it (atomic), so a
    failed or interrupted upload never leaves a half-written file, never
    replaces a good one, and never lands anywhere else, whatever is renamed
    meanwhile. The methods are safe to call from different threads (a client
    that goes away aborts an upload while a write may be under way).
    """

    def __init__(
        self,
        dir_fd: int,
        name: str,
        path: str,
        owner: Owner,
        replaced_bytes: int,
        condition: Precondition = Precondition(),
    ):
        self._dir_fd: int | None = dir_fd
        self._name = name
        #: what must be at the destination when the upload is put in place (else FileConflict)
        self.condition = condition
        #: the new file's :func:`~.paths.etag`, once committed
        self.etag: str | None = None
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
                written = os.fstat(self._fd)  # a rename changes neither inode, size nor mtime
                os.close(self._fd)
                self._fd = None
                self._put_in_place()
            except FileExistsError:
                self._discard()
                raise FileConflict(f"{self.path!r} already exists") from None
            except FileConflict:
                self._discard()
                raise
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
            self.etag = etag(written)

    def _put_in_place(self) -> None:
        """Rename the temporary file to the destination, if the condition holds: with
        ``absent`` the check and the rename are one step (:func:`rename_noreplace`);
        with an ``etag`` the check comes just before the rename (what a job writes in
        between is replaced: only the workspace's own users can cause that)."""
        assert self._dir_fd is not None
        if self.condition.absent:
            rename_noreplace(self._dir_fd, self._tmp, self._dir_fd, self._name)
            return
        if self.condition.etag is not None:
            try:
                st = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            self.condition.check(st, self.path)
        os.replace(self._tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

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
