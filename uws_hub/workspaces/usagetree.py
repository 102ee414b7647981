"""A workspace's disk usage, measured again by re-reading only what changed.

The usage loop measures the workspaces that jobs may have written to every
few minutes. Reading every file's size each time costs as much as ``du``;
:class:`UsageTree` remembers, for each directory, its identity and times
(inode, ``st_mtime_ns``, ``st_ctime_ns``) and the bytes of the files in it,
and on the next measurement re-reads (``scandir`` and one ``lstat`` per
entry) only the directories whose times changed: creating, deleting or
renaming a file, or saving one the way editors and Jupyter do (a new file
renamed over the old), changes its directory's times. What does not is
writing into an existing file; so the files written recently (within
:data:`HOT_SECONDS` of a measurement) are looked at again on every
measurement, and a file untouched for longer and then changed in place is
seen at the next full measurement (``UWSHub.workspace_usage_full_scan_seconds``,
which starts every tree afresh). A directory whose times are too recent to
trust (they may change again within the filesystem's timestamp granularity
without looking different) is read again next time.

The number is the apparent size of the files and symlinks under the
directory (``du -sb`` less the directories' own sizes), symlinks not
followed. Directories are opened relative to their parent's descriptor with
``O_NOFOLLOW``, so a directory swapped for a symlink is not followed out of
the tree.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .paths import DIR_FLAGS, MAX_DEPTH, TEMP_PREFIX

#: files changed within this many seconds of a measurement are looked at again on the next
HOT_SECONDS = 3600.0
#: a directory changed within this many seconds of a measurement is read again on the next
RACY_SECONDS = 2.0
#: how many subdirectories of one directory are read at once (each open meanwhile)
BATCH = 64
#: what opening a subdirectory gives when it went away or is something else now
_CHANGED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES)


@dataclass(slots=True)
class _Dir:
    #: (inode, mtime, ctime) when it was read; None: read it again next time
    key: tuple[int, int, int] | None
    #: bytes in its files that were not hot when read
    cold_bytes: int = 0
    #: its hot files: name -> size (looked at again on every measurement)
    hot: dict[str, int] = field(default_factory=dict)
    subdirs: dict[str, _Dir] = field(default_factory=dict)


@dataclass(slots=True)
class _Frame:
    """A directory the walk of :meth:`UsageTree.measure` is in."""

    #: its descriptor (-1: closed to save descriptors, opened again from below as '..')
    fd: int
    #: (device, inode): what it must be when opened again
    identity: tuple[int, int]
    #: its record of the last measurement, and the one being made
    previous: _Dir | None
    record: _Dir
    #: its subdirectories not read yet
    todo: list[str]
    #: its subdirectories read, with subdirectories of their own: (name, previous, record, their subdirectories)
    visited: list[tuple[str, _Dir | None, _Dir, list[str]]] = field(default_factory=list)


class TreeMoved(OSError):
    """A directory the walk had left (and closed) is not where it was when the walk
    came back: the tree was moved meanwhile, and its measurement is not to be trusted."""


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _reopen_parent(fd: int, identity: tuple[int, int]) -> int:
    """The directory above the one open at ``fd``, which must be ``identity``."""
    parent = os.open("..", DIR_FLAGS, dir_fd=fd)
    if _identity(parent) != identity:
        os.close(parent)
        raise TreeMoved(errno.ESTALE, "a directory was moved while its tree was measured")
    return parent


class UsageTree:
    """What one measurement of a directory tree found, to measure it again quickly."""

    def __init__(self) -> None:
        self._root: _Dir | None = None
        #: directories read (listed) and reused by the last measurement
        self.read_dirs = 0
        self.reused_dirs = 0

    def measure(self, directory: str, sweep_before: float | None = None, workers: int = 2) -> int:
        """Bytes in the files under ``directory`` now. With ``sweep_before`` (a time),
        upload temporaries last written before it are deleted instead of counted.

        The tree is walked depth first, and the subdirectories of each directory
        are read :data:`BATCH` at a time by ``workers`` threads (``lstat`` releases
        the GIL, so they overlap the system calls with the Python work). A tree of
        any shape is measured with few descriptors: the batch being read, and
        the directories the walk is in, of which only the deepest
        :data:`~.paths.MAX_DEPTH` stay open (one above them is opened again from
        below, as ``..``, when the walk comes back to it; TreeMoved if it is not
        the same directory any more). Raises FileNotFoundError if ``directory``
        itself is missing.
        """
        try:
            fd = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(directory) from None
        self.read_dirs = self.reused_dirs = 0
        now_ns = time.time_ns()
        hot_after = now_ns - int(HOT_SECONDS * 1e9)
        racy_after = now_ns - int(RACY_SECONDS * 1e9)

        def visit(fd: int, previous: _Dir | None) -> tuple[_Dir, list[str]]:
            st = os.fstat(fd)
            key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            if previous is not None and previous.key == key:
                record, names = self._reuse(fd, previous, hot_after)
            else:
                record, names = self._read(fd, hot_after, sweep_before)
            # a change within the timestamp's granularity of this one would not show: no trust.
            # (The ctime in the key catches an mtime set back with utime, which sets the ctime.)
            record.key = None if st.st_mtime_ns >= racy_after else key
            return record, names

        stack: list[_Frame] = []
        try:
            root, names = visit(fd, self._root)
            total = root.cold_bytes + sum(root.hot.values())
            stack.append(_Frame(fd, _identity(fd), self._root, root, names))
            with ThreadPoolExecutor(max(1, workers)) as pool:
                while stack:
                    frame = stack[-1]
                    if frame.todo:
                        total += self._read_batch(frame, pool, visit)
                    elif frame.visited:
                        name, previous, record, names = frame.visited.pop()
                        try:
                            sub = os.open(name, DIR_FLAGS, dir_fd=frame.fd)
                        except OSError as e:
                            if e.errno in _CHANGED:  # its files are counted, what is below it not
                                continue
                            raise
                        stack.append(_Frame(sub, _identity(sub), previous, record, names))
                        evicted = stack[-MAX_DEPTH - 1] if len(stack) > MAX_DEPTH + 1 else None
                        if evicted is not None and evicted.fd != -1:  # the top's and the deepest stay open
                            os.close(evicted.fd)
                            evicted.fd = -1
                    else:
                        stack.pop()
                        if stack and stack[-1].fd == -1:
                            stack[-1].fd = _reopen_parent(frame.fd, stack[-1].identity)
                        os.close(frame.fd)
        finally:
            for frame in stack:
                if frame.fd != -1:
                    os.close(frame.fd)
        self._root = root
        return total

    def _read_batch(self, frame: _Frame, pool: ThreadPoolExecutor, visit) -> int:
        """Read up to :data:`BATCH` of the subdirectories left in ``frame`` (in the pool); the bytes
        in their files. Those with subdirectories of their own are left in ``frame.visited``."""
        opened: list[tuple[str, int]] = []
        try:
            while frame.todo and len(opened) < BATCH:
                name = frame.todo.pop()
                try:
                    opened.append((name, os.open(name, DIR_FLAGS, dir_fd=frame.fd)))
                except OSError as e:
                    # gone, no longer a directory, or a symlink now: not part of the tree
                    if e.errno not in _CHANGED:
                        raise
            before = frame.previous.subdirs if frame.previous is not None else {}
            jobs = [(sub, before.get(name)) for name, sub in opened]
            results = list(pool.map(lambda job: visit(*job), jobs) if len(jobs) > 1 else (visit(*j) for j in jobs))
        finally:
            for _, sub in opened:
                os.close(sub)
        total = 0
        for (name, _), (record, names) in zip(opened, results, strict=True):
            frame.record.subdirs[name] = record
            total += record.cold_bytes + sum(record.hot.values())
            if names:
                frame.visited.append((name, before.get(name), record, names))
        return total

    def _reuse(self, fd: int, previous: _Dir, hot_after: int) -> tuple[_Dir, list[str]]:
        """An unchanged directory: its cold files as they were, its hot files looked at
        again; and the names of its subdirectories."""
        self.reused_dirs += 1
        record = _Dir(None, previous.cold_bytes)
        for name in previous.hot:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # then the directory changed too: read afresh next time
            if st.st_mtime_ns >= hot_after:
                record.hot[name] = st.st_size
            else:
                record.cold_bytes += st.st_size
        return record, list(previous.subdirs)

    def _read(self, fd: int, hot_after: int, sweep_before: float | None) -> tuple[_Dir, list[str]]:
        """A directory read afresh: its files' sizes, and the names of its subdirectories."""
        self.read_dirs += 1
        record = _Dir(None)
        subdirs: list[str] = []
        cold = 0
        hot = record.hot
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if (
                        sweep_before is not None
                        and entry.name.startswith(TEMP_PREFIX)
                        and stat.S_ISREG(st.st_mode)
                        and st.st_mtime < sweep_before
                    ):
                        os.unlink(entry.name, dir_fd=fd)
                        continue
                except FileNotFoundError:
                    continue
                if st.st_mtime_ns >= hot_after:
                    hot[entry.name] = st.st_size
                else:
                    cold += st.st_size
        record.cold_bytes = cold
        return record, subdirs
