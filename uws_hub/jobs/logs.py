"""A batch job's log: read whole, by byte range or its tail, and followed as it grows.

A batch job's log is the stdout and stderr of its command: a file in the
hub's job log directory (local jobs), or SLURM's output file (SLURM jobs, in
the account's own folder of the job log directory, ``batch_output_dir``). The
job's account can write to the latter, so it is opened without following a
link (the file; on the way to it, only an admin's, :func:`~uws_hub.hubfolders.open_folder`),
without blocking (a FIFO), and only if it is a regular file of the account the job
runs as: a job cannot make the hub read anything but its own output.

Logs are served to the job's owner and admins only, verbatim: a batch job
is given no credential of the hub's (no API token), so there is nothing of
the hub's in it to redact, and a checksum in a job's output must stay a
checksum.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import AsyncIterator

from ..errors import UWSError
from ..filethreads import in_file_thread
from ..hubfolders import open_folder

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: the most a follow reads at once
FOLLOW_CHUNK_BYTES = 64 * 1024
#: the most a download of a log reads at once
SEND_CHUNK_BYTES = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: a byte position of more digits is past the end of any file (and Python refuses to
#: read a number of thousands of digits: that was a 500)
_MAX_DIGITS = 19


class RangeNotSatisfiable(UWSError):
    code = 416


def _open_log_folder(folder: str) -> int | None:
    """The folder of a log, opened a folder at a time (an admin's link followed,
    any other refused: :func:`~uws_hub.hubfolders.open_folder`); None if it cannot be.
    Opened by its path, only the folder itself was not followed if a link: a link the
    account put above it (``out`` in ``/scratch/{username}/out/uws``, a
    ``batch_output_dir`` in the account's folder) led the hub (root) to a file of the account's uid it cannot reach (a former
    account's of that uid, set aside), read for the job's owner, measured for its stop."""
    try:
        return open_folder(folder)
    except OSError:
        return None


def open_log(path: str, owner_uid: int) -> int | None:
    """A descriptor of the log file, or None if there is none (yet), it is not a regular
    file of ``owner_uid``, or a link that is no admin's is on its way."""
    dir_fd = _open_log_folder(os.path.dirname(path))
    if dir_fd is None:
        return None
    try:
        fd = os.open(os.path.basename(path), OPEN_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner_uid:
        os.close(fd)
        return None
    return fd


def logs_taking_more(paths: dict[int, str], most: int) -> list[int]:
    """Which of these logs (by job id) take more than ``most`` bytes of disk: their
    blocks, not their sizes (a hole costs nothing). Blocking, an ``lstat`` each; a log
    that cannot be found takes none.

    A link at a log's place is not followed: a SLURM job's log lies in its account's own
    folder, where the job may put a link in its place. Followed, the hub (root) looked
    at whatever the job named: it answered the job whether a path it cannot reach
    exists and takes more than ``most`` (the job was failed or not), and a link into a
    hung or automounted file system held this one call for every running job (and so
    the reconciler's scan) as long as its ``stat`` took. Nor is one on its way that is
    no admin's (as :func:`open_log`): each folder is opened once, by descriptor."""
    over = []
    by_folder: dict[str, list[tuple[int, str]]] = {}
    for job_id, path in paths.items():
        by_folder.setdefault(os.path.dirname(path), []).append((job_id, os.path.basename(path)))
    for folder, logs in by_folder.items():
        dir_fd = _open_log_folder(folder)
        if dir_fd is None:
            continue
        try:
            for job_id, name in logs:
                try:
                    taken = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
                if taken > most:
                    over.append(job_id)
        finally:
            os.close(dir_fd)
    return over


def log_size(path: str, owner_uid: int) -> int:
    fd = open_log(path, owner_uid)
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_log(path: str, owner_uid: int, start: int = 0, end: int | None = None) -> tuple[bytes, int]:
    """Bytes ``start`` to ``end`` (exclusive; None: to the end) of the log, and its size."""
    fd = open_log(path, owner_uid)
    if fd is None:
        return b"", 0
    try:
        size = os.fstat(fd).st_size
        stop = size if end is None else min(end, size)
        if start >= stop:
            return b"", size
        return os.pread(fd, stop - start, start), size
    finally:
        os.close(fd)


async def pieces(path: str, owner_uid: int, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """Bytes ``start`` to ``end`` of the log (None: to its end when the first piece was
    read), in pieces of at most :data:`SEND_CHUNK_BYTES`, each read in a thread. A log is
    never read whole: a job makes it as long as it likes at no cost (its output is its
    own descriptor, which it may truncate to terabytes of a hole), and the hub would hold
    all of it in its memory."""
    while True:
        stop = start + SEND_CHUNK_BYTES if end is None else min(end, start + SEND_CHUNK_BYTES)
        data, size = await in_file_thread(read_log, path, owner_uid, start, stop)
        if not data:
            return
        start += len(data)
        yield data
        if end is None:
            end = size
        if start >= end:
            return


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """An HTTP ``Range: bytes=...`` header as ``(start, end)`` (end exclusive) of a file of
    ``size`` bytes; None without one. One range only: ``a-b``, ``a-`` or ``-n`` (the
    last n bytes, the tail). 416 if it lies past the end; 400 if it is no byte range."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        raise UWSError(
            f"Range must be one byte range: bytes=START-END, bytes=START- or bytes=-LAST, not {header[:40]!r}"
        )
    first, last = (text if len(text.lstrip("0")) <= _MAX_DIGITS else str(10**_MAX_DIGITS) for text in match.groups())
    if first == "":
        tail = int(last)
        if tail == 0:
            raise RangeNotSatisfiable(f"Range {header[:40]!r} asks for no bytes")
        return max(0, size - tail), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"Range {header[:40]!r} is past the end of the log ({size} bytes)")
    return start, end


def complete_lines(data: bytes, final: bool) -> bytes:
    """What of ``data`` a follow sends now: up to its last line break (the rest
    follows with its line), or all of it once the job has ended."""
    if final:
        return data
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""
