"""Copying a workspace's tree for a copy-share, safely and fast (blocking: run it in a thread).

- Goes by descriptor on both sides, as :mod:`uws_hub.workspaces.paths` does: every
  entry is opened relative to its open directory with ``O_NOFOLLOW``, so
  neither the sharer (in the source) nor the recipient (in the copy, which is
  theirs as it is made) can swap in a symlink that takes the copy elsewhere.
- Never follows a symlink: links are copied as links, and only when they
  resolve inside the workspace (:func:`~uws_hub.workspaces.paths.link_stays_inside`,
  following the links on their way, as they will resolve in the copy); others
  are left out and counted.
- Only directories, regular files and those links are copied (no device
  files, FIFOs or sockets, no upload temporaries, no folder deeper than
  :data:`~uws_hub.workspaces.paths.MAX_DEPTH`); setuid/setgid bits are
  dropped; modes and modification times are kept.
- Everything created is handed to the recipient (``Owner``).
- Data moves in the kernel (``copy_file_range``, falling back to
  ``sendfile``, then to read/write).
- ``limit_bytes`` stops the copy as soon as it would go over (a quota).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from .paths import (
    CHANGED_ERRNOS,
    DIR_FLAGS,
    FILE_FLAGS,
    NEW_FILE_FLAGS,
    DirChain,
    Owner,
    link_stays_inside,
    listed_mode,
)

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


def _copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy the first ``size`` bytes (the size when opened: a file growing meanwhile is not followed)."""
    copied = 0
    use = "copy_file_range"
    while copied < size:
        count = min(CHUNK_BYTES, size - copied)
        try:
            if use == "copy_file_range":
                n = os.copy_file_range(src_fd, dst_fd, count)
            elif use == "sendfile":
                n = os.sendfile(dst_fd, src_fd, None, count)
            else:
                data = os.read(src_fd, count)
                n = len(data)
                while data:
                    data = data[os.write(dst_fd, data) :]
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
    source = DirChain([os.open(src, DIR_FLAGS)])
    # one per directory being copied, from the top down: (the copy's open directory,
    # the source's entries still to copy, the source directory's stat)
    frames: list[tuple[int, list[str], os.stat_result]] = []
    try:
        os.mkdir(dst, 0o700)
        frames.append((os.open(dst, DIR_FLAGS), os.listdir(source.fd), os.fstat(source.fd)))
        owner.chown_fd(frames[0][0])
        while frames:
            ddir, names, dir_st = frames[-1]
            if not names:
                # all its entries are made (each changed its mtime): now its own mode and times
                os.fchmod(ddir, stat.S_IMODE(dir_st.st_mode) & 0o1777 | 0o700)
                os.utime(ddir, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
                os.close(ddir)
                frames.pop()
                if frames:
                    source.up(src)
                continue
            name = names.pop()
            if (mode := listed_mode(source.fd, name)) is None:
                continue
            if stat.S_ISDIR(mode):
                _enter_directory(source, ddir, name, owner, frames, result)
            elif stat.S_ISREG(mode):
                _copy_file(source.fd, ddir, name, owner, result, limit_bytes)
            elif stat.S_ISLNK(mode):
                _copy_link(source, ddir, name, owner, result)
            else:
                result.skipped += 1
    finally:
        for ddir, _, _ in frames:
            os.close(ddir)
        source.close()
    return result


def _enter_directory(source: DirChain, ddir: int, name: str, owner: Owner, frames: list, result: CopyResult) -> None:
    if source.too_deep:
        result.skipped += 1
        return
    try:
        source.enter(os.open(name, DIR_FLAGS, dir_fd=source.fd), name)
    except OSError as e:
        if e.errno not in CHANGED_ERRNOS:
            raise
        result.skipped += 1
        return
    below, st = os.listdir(source.fd), os.fstat(source.fd)
    os.mkdir(name, 0o700, dir_fd=ddir)
    frames.append((os.open(name, DIR_FLAGS, dir_fd=ddir), below, st))
    owner.chown_fd(frames[-1][0])
    result.directories += 1


def _copy_link(source: DirChain, ddir: int, name: str, owner: Owner, result: CopyResult) -> None:
    try:
        target = os.readlink(name, dir_fd=source.fd)
    except OSError as e:
        if e.errno not in (*CHANGED_ERRNOS, errno.EINVAL):  # EINVAL: no longer a link
            raise
        result.skipped += 1
        return
    if not link_stays_inside(source, target):
        result.skipped += 1
        return
    os.symlink(target, name, dir_fd=ddir)
    owner.chown_link(name, ddir)
    result.links += 1


def _copy_file(sdir: int, ddir: int, name: str, owner: Owner, result: CopyResult, limit_bytes: int | None) -> None:
    try:
        sfd = os.open(name, FILE_FLAGS, dir_fd=sdir)
    except OSError as e:
        if e.errno not in CHANGED_ERRNOS:
            raise
        result.skipped += 1
        return
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode):
            result.skipped += 1
            return
        if limit_bytes is not None and result.bytes + st.st_size > limit_bytes:
            raise CopyTooLarge(result.bytes + st.st_size, limit_bytes)
        dfd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=ddir)
        try:
            _copy_data(sfd, dfd, st.st_size)
            os.fchmod(dfd, stat.S_IMODE(st.st_mode) & 0o1777)
            owner.chown_fd(dfd)
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dfd)
        result.files += 1
        result.bytes += st.st_size
    finally:
        os.close(sfd)
