"""A folder of a workspace as a zip file, made a piece at a time as it is downloaded.

- Nothing is built in memory or on disk: :meth:`ZipStream.read` returns the
  next piece (about :data:`PIECE_BYTES`), which the handler sends before it asks
  for another, so a slow client slows the zipping down rather than filling the
  hub's memory. Each ``read`` blocks (the handler runs it in a thread) but no
  thread is held between pieces.
- The folder is walked by descriptor, as a copy-share walks it
  (:mod:`.copying`): every directory and file is opened relative to its open
  directory with ``O_NOFOLLOW`` (files also ``O_NONBLOCK``, then ``fstat``-ed),
  so a directory swapped for a link to outside is never entered and a FIFO
  never blocks.
- Symbolic links are stored as links (as ``zip --symlinks`` and ``tar`` store
  them, and as copies keep them), when they resolve inside the workspace
  (:func:`~uws_hub.workspaces.paths.link_stays_inside`); others are left out. A
  link is never followed, so nothing outside is read, nothing is zipped twice
  and a link loop cannot make the zip endless.
- Upload temporaries and the hub's other ``.uws-`` names, FIFOs, sockets,
  devices and folders deeper than :data:`~uws_hub.workspaces.paths.MAX_DEPTH` are left out; names that are not UTF-8 get U+FFFD for their bad bytes.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import zipfile
from collections.abc import Generator

from .paths import CHANGED_ERRNOS, DIR_FLAGS, FILE_FLAGS, DirChain, link_stays_inside, listed_mode, text_name

#: about how much :meth:`ZipStream.read` returns at a time
PIECE_BYTES = 256 * 1024
#: zlib's fastest level: most of the gain on text and tables, little of the hub's CPU
ZIP_LEVEL = 1
#: the times a zip entry can hold
_EARLIEST = (1980, 1, 1, 0, 0, 0)
_LATEST = (2107, 12, 31, 23, 59, 58)


class _Sink:
    """Where the zip file writes: a buffer :meth:`ZipStream.read` empties."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _info(name: str, st: os.stat_result, kind: int) -> zipfile.ZipInfo:
    """A zip entry for ``name`` with the time and the permission bits of ``st``, as ``kind``
    (``S_IFREG``, ``S_IFDIR``, ``S_IFLNK``)."""
    when = min(max(time.localtime(st.st_mtime)[:6], _EARLIEST), _LATEST)
    info = zipfile.ZipInfo(name, date_time=when)
    info.external_attr = (kind | stat.S_IMODE(st.st_mode)) << 16
    if kind == stat.S_IFDIR:
        info.external_attr |= 0x10  # MS-DOS's directory flag
    return info


class ZipStream:
    """The folder where ``chain`` is (which it takes over and closes), zipped as it is read,
    in a folder ``top`` of the zip (so that unpacking it makes one folder)."""

    def __init__(self, chain: DirChain, shown: str, top: str):
        self._chain = chain
        self._shown = shown
        self._top = text_name(top)
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL)
        self._steps: Generator[None, None, None] | None = self._walk()

    def read(self) -> bytes:
        """The next piece of the zip file; ``b""`` at its end. Blocks."""
        while self._steps is not None and len(self._sink.buffer) < PIECE_BYTES:
            try:
                next(self._steps)
            except StopIteration:
                self._steps = None
                self._zip.close()  # the central directory
                self._chain.close()
        return self._sink.take()

    def close(self) -> None:
        """Stop (the client went away, or the zip is complete). Blocks."""
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        self._chain.close()

    def _walk(self) -> Generator[None, None, None]:
        """Add the folder's entries to the zip, yielding after each piece of work."""
        chain = self._chain
        self._zip.writestr(_info(self._top + "/", os.fstat(chain.fd), stat.S_IFDIR), b"")
        # one per directory entered: its name in the zip ("top/a/b/"), its names left to add
        frames: list[tuple[str, list[str]]] = [(self._top + "/", sorted(os.listdir(chain.fd), reverse=True))]
        while frames:
            prefix, names = frames[-1]
            if not names:
                frames.pop()
                if frames:
                    chain.up(self._shown)
                continue
            name = names.pop()
            if (mode := listed_mode(chain.fd, name)) is None:
                continue
            arcname = prefix + text_name(name)
            if stat.S_ISDIR(mode):
                if self._enter(name, arcname):
                    frames.append((arcname + "/", sorted(os.listdir(chain.fd), reverse=True)))
            elif stat.S_ISREG(mode):
                yield from self._add_file(name, arcname)
            elif stat.S_ISLNK(mode):
                self._add_link(name, arcname)
            yield

    def _enter(self, name: str, arcname: str) -> bool:
        if self._chain.too_deep:
            return False
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=self._chain.fd)
        except OSError as e:
            if e.errno not in CHANGED_ERRNOS:
                raise
            return False
        self._chain.enter(fd, name)
        self._zip.writestr(_info(arcname + "/", os.fstat(fd), stat.S_IFDIR), b"")
        return True

    def _add_file(self, name: str, arcname: str) -> Generator[None, None, None]:
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=self._chain.fd)
        except OSError as e:
            if e.errno not in CHANGED_ERRNOS:
                raise
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced by something else since it was listed
                return
            info = _info(arcname, st, stat.S_IFREG)
            info.compress_type = zipfile.ZIP_DEFLATED
            info._compresslevel = ZIP_LEVEL  # type: ignore[attr-defined]  # compress_level from Python 3.13
            info.file_size = st.st_size  # for the choice of ZIP64
            left = st.st_size  # as much as there was when opened, if the file grows meanwhile
            with self._zip.open(info, "w") as out:
                while left and (data := os.read(fd, min(PIECE_BYTES, left))):
                    out.write(data)
                    left -= len(data)
                    yield
        finally:
            os.close(fd)

    def _add_link(self, name: str, arcname: str) -> None:
        try:
            target = os.readlink(name, dir_fd=self._chain.fd)
            st = os.stat(name, dir_fd=self._chain.fd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (*CHANGED_ERRNOS, errno.EINVAL):  # EINVAL: no longer a link
                raise
            return
        if link_stays_inside(self._chain, target):
            self._zip.writestr(_info(arcname, st, stat.S_IFLNK), target)
