"""The walk of the usage scan (:mod:`.usagetree`), and the main of its helper process.

Only small modules of the standard library are imported here, so the helper process (``python -I -S``) starts
in a few milliseconds; the limits of :mod:`.paths` come as arguments.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import sys
from collections.abc import Callable

#: what opening a subdirectory gives when it went away or is something else now
_CHANGED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES)

#: a file may take one block of disk more than its size rounded up to whole blocks for
#: every this many blocks of it and still count as its size: the file system's record of
#: where a large file's blocks are (ext4's extent tree, ext2's indirect blocks) takes
#: about one in 340 (one in 1024) at most; a file of under this many blocks gets none
BLOCKS_PER_RECORD_BLOCK = 256


def charged_bytes(st: os.stat_result) -> int:
    """What a file counts on its workspace's disk usage: its size (what ``du -sb`` counts),
    or the disk it takes where that is more than its size rounded up to whole blocks
    (``st_blksize``) and the file system's records of a large file (see
    :data:`BLOCKS_PER_RECORD_BLOCK`). Space preallocated past a file's end
    (``fallocate --keep-size``) takes disk without changing its size: earlier versions
    counted the size only, and a job held all the disk it liked at no quota; then
    16 KiB free per file, which a million small files made 16 GB. Now nothing past a
    file's last block is free, and its records only as they grow with what it counts."""
    allocated = st.st_blocks * 512
    block = st.st_blksize or 4096
    blocks = -(-st.st_size // block)
    return allocated if allocated > (blocks + blocks // BLOCKS_PER_RECORD_BLOCK) * block else st.st_size


class Dir:
    """What a measurement found in one directory."""

    __slots__ = ("key", "bytes", "subdirs")

    def __init__(self, key: tuple[int, int, int] | None, size: int) -> None:
        #: (inode, mtime, ctime) when it was read; None: read it again next time
        self.key = key
        #: bytes in its files (not in its subdirectories')
        self.bytes = size
        self.subdirs: dict[str, Dir] = {}


class Frame:
    """A directory the walk is in."""

    __slots__ = ("fd", "identity", "previous", "record", "todo")

    def __init__(self, fd: int, identity: tuple[int, int], previous: Dir | None, record: Dir, todo: list[str]):
        #: its descriptor (-1: closed to save descriptors, opened again from below as '..')
        self.fd = fd
        #: (device, inode): what it must be when opened again
        self.identity = identity
        #: its record of the last measurement, and the one being made
        self.previous = previous
        self.record = record
        #: its subdirectories not read yet
        self.todo = todo


class TreeMoved(OSError):
    """A directory the walk had left (and closed) is not where it was when the walk
    came back: the tree was moved meanwhile, and its measurement is not to be trusted."""


class Walk:
    """One measurement's walk: its limits and times, and what it read.

    ``dir_flags``, ``max_depth`` and ``temp_prefix`` are :data:`~.paths.DIR_FLAGS`,
    :data:`~.paths.MAX_DEPTH` and :data:`~.paths.TEMP_PREFIX`. A directory holding
    a file changed at or after ``hot_after``, or itself changed at or after
    ``racy_after`` (nanoseconds), is recorded to be read again next time; with
    ``sweep_before`` (a time), upload temporaries last written before it are
    deleted instead of counted.
    """

    def __init__(
        self,
        limits: tuple[int, int, str],
        hot_after: int,
        racy_after: int,
        sweep_before: float | None,
    ):
        self.limits = limits
        self.dir_flags, self.max_depth, self.temp_prefix = limits
        self.hot_after = hot_after
        self.racy_after = racy_after
        self.sweep_before = sweep_before
        #: directories read (listed), and reused
        self.read_dirs = self.reused_dirs = 0

    def run(self, stack: list[Frame], offer: Callable[[list[Frame]], None] | None = None) -> int:
        """Walk the subdirectories left in the frames of ``stack`` (closing their
        descriptors, the first's included), recording each in its frame's record;
        the bytes in their files. ``offer(stack)`` is called before each directory:
        it may take subdirectories off the frames' lists (to walk them elsewhere).

        Depth first; only the deepest ``max_depth`` frames (and the first) stay
        open; one above them is opened again from below, as ``..``, when the walk
        comes back to it (TreeMoved if it is not the same directory any more)."""
        total = 0
        try:
            while stack:
                frame = stack[-1]
                if not frame.todo:
                    stack.pop()
                    try:
                        if stack and stack[-1].fd == -1:
                            stack[-1].fd = self._reopen_parent(frame.fd, stack[-1].identity)
                    finally:
                        os.close(frame.fd)
                    continue
                if offer is not None:
                    offer(stack)
                    if not frame.todo:
                        continue
                name = frame.todo.pop()
                try:
                    sub = os.open(name, self.dir_flags, dir_fd=frame.fd)
                except OSError as e:
                    # gone, no longer a directory, or a symlink now: not part of the tree
                    if e.errno in _CHANGED:
                        continue
                    raise
                try:
                    st = os.fstat(sub)
                    previous = frame.previous.subdirs.get(name) if frame.previous is not None else None
                    record, names = self.visit(sub, st, previous)
                except BaseException:
                    os.close(sub)
                    raise
                frame.record.subdirs[name] = record
                total += record.bytes
                if not names:
                    os.close(sub)
                    continue
                stack.append(Frame(sub, (st.st_dev, st.st_ino), previous, record, names))
                if len(stack) > self.max_depth + 1:  # the first's and the deepest stay open
                    evicted = stack[-self.max_depth - 1]
                    if evicted.fd != -1:
                        os.close(evicted.fd)
                        evicted.fd = -1
        finally:
            for frame in stack:
                if frame.fd != -1:
                    os.close(frame.fd)
        return total

    def _reopen_parent(self, fd: int, identity: tuple[int, int]) -> int:
        """The directory above the one open at ``fd``, which must be ``identity``."""
        parent = os.open("..", self.dir_flags, dir_fd=fd)
        st = os.fstat(parent)
        if (st.st_dev, st.st_ino) != identity:
            os.close(parent)
            raise TreeMoved(errno.ESTALE, "a directory was moved while its tree was measured")
        return parent

    def visit(self, fd: int, st: os.stat_result, previous: Dir | None) -> tuple[Dir, list[str]]:
        """The record of the directory open at ``fd`` (``st``: its ``fstat``), and the
        names of its subdirectories: its last record's if its times did not change."""
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if previous is not None and previous.key == key:
            self.reused_dirs += 1
            return Dir(key, previous.bytes), list(previous.subdirs)
        self.read_dirs += 1
        size, newest, names = self._read(fd)
        # a change within the timestamp's granularity of this one would not show: no trust.
        # (The ctime in the key catches an mtime set back with utime, which sets the ctime.)
        # A file written lately may be written again in place, which its directory's times do not show.
        trusted = st.st_mtime_ns < self.racy_after and newest < self.hot_after
        return Dir(key if trusted else None, size), names

    def _read(self, fd: int) -> tuple[int, int, list[str]]:
        """The directory open at ``fd`` read afresh: the bytes in its files, the newest
        ``st_mtime_ns`` among them, and the names of its subdirectories. This loop is
        the scan's cost beyond the system calls: it makes no object per entry beyond
        what ``scandir`` and ``stat`` return, and keeps none."""
        size = newest = 0
        subdirs: list[str] = []
        sweep_before = self.sweep_before
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if sweep_before is not None and self._stale_temporary(entry, st, fd):
                    continue
                # (a file within its last block's rounding, most files, counts its size: at once)
                size += st.st_size if st.st_blocks * 512 < st.st_size + st.st_blksize else charged_bytes(st)
                if st.st_mtime_ns > newest:
                    newest = st.st_mtime_ns
        return size, newest, subdirs

    def _stale_temporary(self, entry: os.DirEntry, st: os.stat_result, fd: int) -> bool:
        """Whether ``entry`` was an upload temporary an earlier hub process left (deleted now)."""
        assert self.sweep_before is not None
        if not entry.name.startswith(self.temp_prefix) or not stat.S_ISREG(st.st_mode):
            return False
        if st.st_mtime >= self.sweep_before:
            return False
        try:
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            pass
        return True


def helper_main() -> None:
    """The helper process (see :class:`.usagetree.UsageTree`): reads its job from
    stdin (``marshal``: the descriptor of a directory it inherited, the names of
    subdirectories of it to walk, the :class:`Walk`'s arguments) and writes what it
    found to stdout: the bytes, the directories read, and the records of the
    directories walked, flat in the order of the walk (depth, name, key, bytes)."""
    fd, names, limits, hot_after, racy_after, sweep_before = marshal.loads(sys.stdin.buffer.read())
    walk = Walk(limits, hot_after, racy_after, sweep_before)
    st = os.fstat(fd)
    top = Dir(None, 0)
    total = walk.run([Frame(fd, (st.st_dev, st.st_ino), None, top, names)])
    flat: list[tuple[int, str, tuple[int, int, int] | None, int]] = []
    todo = [(0, name, record) for name, record in reversed(top.subdirs.items())]
    while todo:
        depth, name, record = todo.pop()
        flat.append((depth, name, record.key, record.bytes))
        todo.extend((depth + 1, sub, child) for sub, child in reversed(record.subdirs.items()))
    sys.stdout.buffer.write(marshal.dumps((total, walk.read_dirs, flat)))
