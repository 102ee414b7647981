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

import marshal
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import usagescan
from .paths import DIR_FLAGS, TEMP_PREFIX
from .usagescan import open_subdirs, read_dir

#: files changed within this many seconds of a measurement are looked at again on the next
HOT_SECONDS = 3600.0
#: a directory changed within this many seconds of a measurement is read again on the next
RACY_SECONDS = 2.0
#: a measurement still reading after this many seconds shares what is left with helper processes
HELP_AFTER_SECONDS = 0.05


@dataclass(slots=True)
class _Dir:
    #: (inode, mtime, ctime) when it was read; None: read it again next time
    key: tuple[int, int, int] | None
    #: bytes in its files that were not hot when read
    cold_bytes: int = 0
    #: its hot files: name -> size (looked at again on every measurement)
    hot: dict[str, int] = field(default_factory=dict)
    subdirs: dict[str, _Dir] = field(default_factory=dict)


class UsageTree:
    """What one measurement of a directory tree found, to measure it again quickly."""

    def __init__(self) -> None:
        self._root: _Dir | None = None
        #: directories read (listed) and reused by the last measurement
        self.read_dirs = 0
        self.reused_dirs = 0
        #: of the directories read, those read by helper processes
        self.helped_dirs = 0

    def measure(
        self,
        directory: str,
        sweep_before: float | None = None,
        workers: int = 2,
        help_after: float = HELP_AFTER_SECONDS,
    ) -> int:
        """Bytes in the files under ``directory`` now. With ``sweep_before`` (a time),
        upload temporaries last written before it are deleted instead of counted.

        The calling thread walks the tree depth first. A walk still going after
        ``help_after`` seconds (a large tree) shares the subtrees it has not
        read yet, and has no record of, with ``workers - 1`` helper processes
        (:mod:`.usagescan`: threads would not overlap, see there); should a
        helper fail, its subtrees are read here. Raises FileNotFoundError if
        ``directory`` itself is missing.
        """
        try:
            fd = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(directory) from None
        self.read_dirs = self.reused_dirs = self.helped_dirs = 0
        now_ns = time.time_ns()
        hot_after = now_ns - int(HOT_SECONDS * 1e9)
        racy_after = now_ns - int(RACY_SECONDS * 1e9)
        roots: dict[str, _Dir] = {}
        pending: list[_Item] = [(fd, self._root, roots, "")]
        helpers: list[_Helper] = []
        help_at = time.monotonic() + help_after if workers > 1 else float("inf")
        total = 0
        try:
            while pending:
                total += self._visit(pending.pop(), pending, hot_after, racy_after, sweep_before)
                if len(pending) > 1 and time.monotonic() >= help_at:
                    help_at = float("inf")
                    helpers = _Helper.share(pending, workers - 1, (hot_after, racy_after, sweep_before))
                if not pending:
                    for helper in helpers:
                        if helper.proc is not None:  # still to collect
                            total += helper.collect(self, pending)
        finally:
            for helper in helpers:
                helper.close()
            for item in pending:  # left by an error
                os.close(item[0])
        self._root = roots.get("")
        return total

    def _visit(
        self, item: _Item, pending: list[_Item], hot_after: int, racy_after: int, sweep_before: float | None
    ) -> int:
        """Read (or reuse) one directory, record it, open its subdirectories onto ``pending``;
        the bytes in its files."""
        fd, previous, parent, name = item
        try:
            st = os.fstat(fd)
            key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            if previous is not None and previous.key == key:
                record, names = self._reuse(fd, previous, hot_after)
            else:
                self.read_dirs += 1
                cold, hot, names = read_dir(fd, hot_after, sweep_before, TEMP_PREFIX)
                record = _Dir(None, cold, hot)
            # a change within the timestamp's granularity of this one would not show: no trust.
            # (The ctime in the key catches an mtime set back with utime, which sets the ctime.)
            record.key = None if st.st_mtime_ns >= racy_after else key
            parent[name] = record
            for sub, child in open_subdirs(fd, names, DIR_FLAGS):
                pending.append(
                    (child, previous.subdirs.get(sub) if previous is not None else None, record.subdirs, sub)
                )
        finally:
            os.close(fd)
        return record.cold_bytes + sum(record.hot.values())

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


#: a directory to read: its descriptor, its record last time, where its new record goes, its name
_Item = tuple[int, _Dir | None, dict[str, _Dir], str]


class _Helper:
    """A helper process reading whole subtrees (:mod:`.usagescan`) while the hub's thread
    reads others. The subtrees' descriptors stay open here until it is done, to read
    them here if it fails."""

    def __init__(self, items: list[_Item], times: tuple[int, int, float | None]):
        self.items = items
        hot_after, racy_after, sweep_before = times
        fds = [item[0] for item in items]
        argv = [sys.executable, "-I", "-S", usagescan.__file__, str(hot_after), str(racy_after),
                "-" if sweep_before is None else repr(sweep_before), TEMP_PREFIX, str(DIR_FLAGS),
                *map(str, fds)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds, env={}
        )

    @classmethod
    def share(cls, pending: list[_Item], helpers: int, times: tuple[int, int, float | None]) -> list[_Helper]:
        """Start ``helpers`` helpers, each with its share of the subtrees on ``pending`` of
        which there is no earlier record (taken off it); this thread keeps a share."""
        fresh = [item for item in pending if item[1] is None]
        shares = [fresh[i :: helpers + 1] for i in range(1, helpers + 1)]
        started = []
        for share in shares:
            if not share:
                continue
            try:
                started.append(cls(share, times))
            except OSError:  # no process to be had: this thread reads them
                continue
        given = {id(item) for helper in started for item in helper.items}
        pending[:] = [item for item in pending if id(item) not in given]
        return started

    def collect(self, tree: UsageTree, pending: list[_Item]) -> int:
        """Wait for the helper; put its records in place and return their bytes, or (if it
        failed) put its subtrees back on ``pending``."""
        assert self.proc is not None
        out, _ = self.proc.communicate()
        failed = self.proc.returncode != 0
        self.proc = None
        if failed:
            pending.extend(self.items)
            self.items = []
            return 0
        total = 0
        for (fd, _, parent, name), (record, count) in zip(self.items, marshal.loads(out), strict=True):
            os.close(fd)
            parent[name], nbytes = _from_helper(record)
            total += nbytes
            tree.read_dirs += count
            tree.helped_dirs += count
        self.items = []
        return total

    def close(self) -> None:
        """Stop the helper if it still runs (after an error here); close what it was given."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.communicate()
            self.proc = None
        for item in self.items:
            os.close(item[0])
        self.items = []


def _from_helper(top: list) -> tuple[_Dir, int]:
    """A helper's record of a subtree as :class:`_Dir` records, and the bytes in its files."""
    total = 0
    root = _Dir(None)
    stack = [(top, root)]
    while stack:
        (key, cold, hot, subdirs), record = stack.pop()
        record.key, record.cold_bytes, record.hot = key, cold, hot
        total += cold + sum(hot.values())
        for name, sub in subdirs.items():
            record.subdirs[name] = child = _Dir(None)
            stack.append((sub, child))
    return root, total
