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

from .paths import DIR_FLAGS, TEMP_PREFIX

#: files changed within this many seconds of a measurement are looked at again on the next
HOT_SECONDS = 3600.0
#: a directory changed within this many seconds of a measurement is read again on the next
RACY_SECONDS = 2.0


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

    def measure(self, directory: str, sweep_before: float | None = None, workers: int = 2) -> int:
        """Bytes in the files under ``directory`` now. With ``sweep_before`` (a time),
        upload temporaries last written before it are deleted instead of counted.

        The directories of each level of the tree are read by ``workers``
        threads: ``lstat`` releases the GIL, so they overlap the system calls
        with the Python work. Raises FileNotFoundError if ``directory`` itself
        is missing.
        """
        try:
            fd = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(directory) from None
        self.read_dirs = self.reused_dirs = 0
        now_ns = time.time_ns()
        hot_after = now_ns - int(HOT_SECONDS * 1e9)
        racy_after = now_ns - int(RACY_SECONDS * 1e9)
        roots: dict[str, _Dir] = {}
        # (descriptor of a directory, its record last time, where its new record goes, its name)
        level: list[tuple[int, _Dir | None, dict[str, _Dir], str]] = [(fd, self._root, roots, "")]

        def visit(item: tuple[int, _Dir | None, dict[str, _Dir], str]) -> tuple[_Dir, list[str]]:
            fd, previous, _, _ = item
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

        total = 0
        with ThreadPoolExecutor(max(1, workers)) as pool:
            while level:
                following: list[tuple[int, _Dir | None, dict[str, _Dir], str]] = []
                try:
                    results = list(pool.map(visit, level) if len(level) > 1 else map(visit, level))
                    for (fd, previous, parent, name), (record, names) in zip(level, results, strict=True):
                        parent[name] = record
                        total += record.cold_bytes + sum(record.hot.values())
                        for sub in names:
                            try:
                                child = os.open(sub, DIR_FLAGS, dir_fd=fd)
                            except OSError as e:
                                # gone, no longer a directory, or a symlink now: not part of the tree
                                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                                    continue
                                raise
                            before = previous.subdirs.get(sub) if previous is not None else None
                            following.append((child, before, record.subdirs, sub))
                except BaseException:
                    for item in following:
                        os.close(item[0])
                    raise
                finally:
                    for item in level:
                        os.close(item[0])
                level = following
        self._root = roots.get("")
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
