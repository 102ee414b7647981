"""Reading directories for the usage scan (:mod:`.usagetree`), with the standard library only.

Besides being imported, this file runs as a helper process
(``python -I -S usagescan.py ...``, so without site-packages or the current
directory on its path) that reads whole subtrees of a large tree in parallel
with the hub's own thread: in one Python process, threads do not overlap
this work (a directory entry costs a system call of about a microsecond and
about as much Python work, and the GIL changes hands far too slowly for
that), so on its own the scan costs about twice ``du``'s CPU time. The
subtrees come in as open directory descriptors (``pass_fds``), read relative
to them with ``O_NOFOLLOW`` as in the hub; the records go back on standard
output, marshalled.

A record (what :class:`~.usagetree.UsageTree` keeps of a directory, as a
list): ``[key, cold_bytes, hot, subdirs]``, with ``key`` the directory's
``(inode, st_mtime_ns, st_ctime_ns)`` or None when its times are too recent
to trust, ``hot`` the files written lately (name → size) and ``subdirs`` name
→ record.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import sys
from collections.abc import Iterator

#: errors opening a subdirectory that mean it is not part of the tree (any more)
NOT_IN_TREE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES)


def read_dir(
    fd: int, hot_after: int, sweep_before: float | None, temp_prefix: str
) -> tuple[int, dict[str, int], list[str]]:
    """One directory read afresh: the bytes in its files not written since ``hot_after``
    (ns), its files written since (name → size), the names of its subdirectories. With
    ``sweep_before`` (a time), files named ``temp_prefix...`` last written before it are
    deleted instead of counted. Symlinks are not followed (one counts its own length)."""
    subdirs: list[str] = []
    hot: dict[str, int] = {}
    cold = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                    continue
                st = entry.stat(follow_symlinks=False)
                if (
                    sweep_before is not None
                    and entry.name.startswith(temp_prefix)
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
    return cold, hot, subdirs


def open_subdirs(fd: int, names: list[str], dir_flags: int) -> Iterator[tuple[str, int]]:
    """The subdirectories ``names`` of the directory open at ``fd``, opened (``O_NOFOLLOW``
    in ``dir_flags``): those gone, no longer directories or symlinks now are passed over."""
    for name in names:
        try:
            yield name, os.open(name, dir_flags, dir_fd=fd)
        except OSError as e:
            if e.errno not in NOT_IN_TREE:
                raise


def read_subtree(
    fd: int, hot_after: int, racy_after: int, sweep_before: float | None, temp_prefix: str, dir_flags: int
) -> tuple[list, int]:
    """The record of the directory open at ``fd`` and of everything under it, and the
    number of directories read. Closes ``fd``."""
    root: list = [None, 0, {}, {}]
    stack = [(fd, root)]
    count = 0
    try:
        while stack:
            fd, record = stack.pop()
            try:
                st = os.fstat(fd)
                record[1], record[2], names = read_dir(fd, hot_after, sweep_before, temp_prefix)
                count += 1
                if st.st_mtime_ns < racy_after:
                    record[0] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                for name, child in open_subdirs(fd, names, dir_flags):
                    sub: list = [None, 0, {}, {}]
                    record[3][name] = sub
                    stack.append((child, sub))
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    return root, count


def main(argv: list[str]) -> None:
    """``usagescan.py HOT_AFTER RACY_AFTER SWEEP_BEFORE|- TEMP_PREFIX DIR_FLAGS FD...``:
    writes the marshalled list of ``(record, directories read)``, one for each ``FD``."""
    hot_after, racy_after, sweep, temp_prefix, dir_flags = argv[:5]
    sweep_before = None if sweep == "-" else float(sweep)
    out = [
        read_subtree(int(fd), int(hot_after), int(racy_after), sweep_before, temp_prefix, int(dir_flags))
        for fd in argv[5:]
    ]
    sys.stdout.buffer.write(marshal.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
