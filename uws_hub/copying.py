"""Copying a workspace's tree for a copy-share, safely and fast (blocking: run it in a thread).

- Never follows a symlink: links are copied as links, and only when they
  stay inside the source workspace (relative links that do not climb out of
  it); others are left out and counted. Files are opened with ``O_NOFOLLOW``,
  so a link swapped in during the copy is not followed either.
- Only directories, regular files and those links are copied (no device
  files, FIFOs or sockets); setuid/setgid bits are dropped; modes and
  modification times are kept.
- Everything created is handed to the recipient (``Owner.chown``).
- Data moves in the kernel (``copy_file_range``, falling back to
  ``sendfile``, then to read/write).
- ``limit_bytes`` stops the copy as soon as it would go over (a quota).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from .storage import Owner

CHUNK_BYTES = 8 * 1024 * 1024


class CopyTooLarge(Exception):
    """The tree holds more than ``limit_bytes``."""

    def __init__(self, copied: int, limit: int):
        super().__init__(f"more than {limit} bytes to copy")
        self.copied = copied
        self.limit = limit


@dataclass
class CopyResult:
    files: int = 0
    directories: int = 0
    bytes: int = 0
    links: int = 0
    skipped: int = 0


def _inside(relpath_of_link: str, target: str) -> bool:
    """Whether a link at ``relpath_of_link`` (relative to the tree) pointing at ``target`` stays inside."""
    if os.path.isabs(target):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(relpath_of_link), target))
    return resolved != ".." and not resolved.startswith("../") and not os.path.isabs(resolved)


def _copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    copied = 0
    use = "copy_file_range"
    while True:
        try:
            if use == "copy_file_range":
                n = os.copy_file_range(src_fd, dst_fd, CHUNK_BYTES)
            elif use == "sendfile":
                n = os.sendfile(dst_fd, src_fd, None, CHUNK_BYTES)
            else:
                data = os.read(src_fd, CHUNK_BYTES)
                n = len(data)
                while data:
                    data = data[os.write(dst_fd, data):]
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) and copied == 0:
                use = "sendfile" if use == "copy_file_range" else "readwrite"
                continue
            raise
        if n == 0:
            return
        copied += n


def copy_tree(src: str, dst: str, owner: Owner, limit_bytes: int | None = None) -> CopyResult:
    """Copy directory ``src`` to ``dst`` (which must not exist)."""
    result = CopyResult()
    src_st = os.stat(src)
    if not stat.S_ISDIR(src_st.st_mode):
        raise NotADirectoryError(src)
    os.mkdir(dst, 0o700)
    owner.chown(dst)
    # (source dir, destination dir, path relative to the tree, stat of the source dir)
    stack: list[tuple[str, str, str, os.stat_result]] = [(src, dst, "", src_st)]
    finished_dirs: list[tuple[str, os.stat_result]] = []
    while stack:
        sdir, ddir, rel, dir_st = stack.pop()
        finished_dirs.append((ddir, dir_st))
        with os.scandir(sdir) as it:
            for entry in it:
                spath = entry.path
                dpath = os.path.join(ddir, entry.name)
                relpath = os.path.join(rel, entry.name) if rel else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(dpath, 0o700)
                    owner.chown(dpath)
                    result.directories += 1
                    stack.append((spath, dpath, relpath, st))
                elif stat.S_ISREG(mode):
                    if limit_bytes is not None and result.bytes + st.st_size > limit_bytes:
                        raise CopyTooLarge(result.bytes + st.st_size, limit_bytes)
                    _copy_file(spath, dpath, st, owner)
                    result.files += 1
                    result.bytes += st.st_size
                elif stat.S_ISLNK(mode):
                    target = os.readlink(spath)
                    if _inside(relpath, target):
                        os.symlink(target, dpath)
                        owner.chown(dpath)
                        result.links += 1
                    else:
                        result.skipped += 1
                else:
                    result.skipped += 1
    # directory modes and times last: adding entries changes a directory's mtime
    for ddir, st in reversed(finished_dirs):
        os.chmod(ddir, stat.S_IMODE(st.st_mode) & 0o1777 | 0o700)
        os.utime(ddir, ns=(st.st_atime_ns, st.st_mtime_ns))
    return result


def _copy_file(spath: str, dpath: str, st: os.stat_result, owner: Owner) -> None:
    sfd = os.open(spath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(sfd).st_mode):
            raise OSError(errno.EINVAL, "no longer a regular file", spath)
        dfd = os.open(dpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if st.st_size:
                _copy_data(sfd, dfd, st.st_size)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode) & 0o1777)
            if owner.uid is not None:
                os.fchown(dfd, owner.uid, owner.gid if owner.gid is not None else -1)
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
