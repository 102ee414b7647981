"""A workspace's disk usage, measured again by re-reading only what changed.

The usage loop measures the workspaces that jobs may have written to every
few minutes. Reading every file's size each time costs as much as ``du``;
:class:`UsageTree` remembers, for each directory (never for each file), its
identity and times (inode, ``st_mtime_ns``, ``st_ctime_ns``) and the bytes
of the files in it, and on the next measurement re-reads (``scandir`` and
one ``lstat`` per entry) only the directories whose times changed: creating,
deleting or renaming a file, or saving one the way editors and Jupyter do (a
new file renamed over the old), changes its directory's times. What does
not is writing into an existing file; so a directory holding a file written
recently (within :data:`HOT_SECONDS` of a measurement) is read again on
every measurement, and a file untouched for longer and then changed in place
is seen at the next full measurement
(``UWSHub.workspace_usage_full_scan_seconds``, which starts every tree
afresh). A directory whose times are too recent to trust (they may change
again within the filesystem's timestamp granularity without looking
different) is read again next time too.

The number is the apparent size of the files and symlinks under the
directory (``du -sb`` less the directories' own sizes), symlinks not
followed; a file with several hard links in the tree counts once per link.
A file that takes more disk than its size (blocks preallocated past its end)
counts the disk it takes (:func:`.usagewalk.charged_bytes`).
Directories are opened relative to their parent's descriptor with
``O_NOFOLLOW`` (and ``O_NONBLOCK``: a FIFO swapped in never blocks), so a
directory swapped for a symlink is not followed out of the tree.
"""

from __future__ import annotations

import errno
import marshal
import os
import subprocess
import sys
import time

from .paths import DIR_FLAGS, MAX_DEPTH, TEMP_PREFIX
from .usagewalk import Dir, Frame, TreeMoved, Walk

__all__ = ["HELPER_AFTER", "HOT_SECONDS", "RACY_SECONDS", "TreeMoved", "UsageTree"]

#: a directory holding a file changed within this many seconds of a measurement is read again on the next
HOT_SECONDS = 3600.0
#: a directory changed within this many seconds of a measurement is read again on the next
RACY_SECONDS = 2.0
#: a walk of directories not measured before taking longer than this many seconds gets a helper process
HELPER_AFTER = 0.05
#: how long after a walk found nothing to give the helper it looks again
HELPER_RETRY = 0.01
#: how long the walk waits for its helper process
HELPER_TIMEOUT = 3600.0


class UsageTree:
    """What one measurement of a directory tree found, to measure it again quickly."""

    def __init__(self) -> None:
        self._root: Dir | None = None
        #: directories read (listed) and reused by the last measurement; of those read, by its helper process
        self.read_dirs = 0
        self.reused_dirs = 0
        self.helper_dirs = 0

    def measure(
        self, directory: str, sweep_before: float | None = None, helper_after: float | None = HELPER_AFTER
    ) -> int:
        """Bytes in the files under ``directory`` now. With ``sweep_before`` (a time),
        upload temporaries last written before it are deleted instead of counted.

        The tree is walked depth first (:class:`~.usagewalk.Walk`: one ``lstat``
        per entry, as ``du`` makes, and one ``fstat`` per directory on its open
        descriptor). A tree of any shape is measured with few descriptors: the
        directories the walk is in, of which only the deepest
        :data:`~.paths.MAX_DEPTH` stay open (one above them is opened again from
        below, as ``..``, when the walk comes back to it; TreeMoved if it is not
        the same directory any more). A walk of directories not measured before
        that takes longer than ``helper_after`` seconds (None: never) hands half
        of the subdirectories left in the shallowest directory it is in to a
        helper process (:func:`~.usagewalk.helper_main`), which walks them the
        same way, by that directory's descriptor, while this thread walks the
        rest: threads would not help, as every ``lstat`` hands Python's GIL over.
        Raises FileNotFoundError if ``directory`` itself is missing.
        """
        try:
            fd = os.open(directory, DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(directory) from None
        now_ns = time.time_ns()
        walk = Walk(
            (DIR_FLAGS, MAX_DEPTH, TEMP_PREFIX),
            now_ns - int(HOT_SECONDS * 1e9),
            now_ns - int(RACY_SECONDS * 1e9),
            sweep_before,
        )
        try:
            st = os.fstat(fd)
            root, names = walk.visit(fd, st, self._root)
        except BaseException:
            os.close(fd)
            raise
        helper = _Helper(walk, time.monotonic() + helper_after) if helper_after is not None else None
        try:
            stack = [Frame(fd, (st.st_dev, st.st_ino), self._root, root, names)]
            total = root.bytes + walk.run(stack, helper.offer if helper is not None else None)
            if helper is not None:
                total += helper.finish()
        finally:
            if helper is not None:
                helper.stop()
        self._root = root
        self.read_dirs, self.reused_dirs = walk.read_dirs, walk.reused_dirs
        self.helper_dirs = helper.read_dirs if helper is not None else 0
        return total


class _Helper:
    """The helper process of one measurement. When it is due, it is given half of
    the subdirectories left in the shallowest directory the walk is in that was
    not measured before (by that directory's descriptor, which it inherits: no
    path is opened again); it walks them with a :class:`~.usagewalk.Walk` of the
    same arguments and writes their records back (``marshal``: ints, strings and
    tuples, flat in the order of its walk)."""

    def __init__(self, walk: Walk, due_at: float):
        self.walk = walk
        self.due_at = due_at
        self.process: subprocess.Popen[bytes] | None = None
        #: where the records it writes back go: the record of the directory given, and the names given
        self.given: tuple[Dir, list[str]] | None = None
        #: directories it read
        self.read_dirs = 0

    def offer(self, stack: list[Frame]) -> None:
        """Called by the walk before each directory: starts the helper when it is due."""
        if self.process is not None or time.monotonic() < self.due_at:
            return
        frame = next((f for f in stack if f.fd != -1 and f.previous is None and len(f.todo) > 1), None)
        if frame is None:
            self.due_at = time.monotonic() + HELPER_RETRY
            return
        names = frame.todo[: len(frame.todo) // 2]
        del frame.todo[: len(names)]
        self.given = (frame.record, names)
        w = self.walk
        job = marshal.dumps((frame.fd, names, w.limits, w.hot_after, w.racy_after, w.sweep_before))
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        job_r, job_w = os.pipe()
        try:
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _HELPER_BOOT, package_parent],
                    stdin=job_r,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(frame.fd,),
                )
            except OSError:  # no interpreter to start (an embedded one), no processes left: the walk does it all
                frame.todo[:0] = names
                self.given = None
                self.due_at = float("inf")
                return
            os.close(job_r)
            job_r = -1
            with open(job_w, "wb") as out:
                job_w = -1
                out.write(job)
        except BrokenPipeError:
            pass  # it ended already: finish() says why
        finally:
            for end in (job_r, job_w):
                if end != -1:
                    os.close(end)

    def finish(self) -> int:
        """Wait for the helper; put its records in place. The bytes in the files it measured."""
        if self.process is None or self.given is None:
            return 0
        try:
            out, err = self.process.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:  # an OSError, as the usage loop expects of a walk (stop() kills it)
            raise OSError(errno.ETIMEDOUT, f"usage scan helper: no answer in {HELPER_TIMEOUT:.0f} s") from None
        if self.process.returncode != 0:
            # its last line: the exception (TreeMoved, PermissionError, ...) it met
            raise OSError(errno.EIO, f"usage scan helper: {err.decode(errors='replace').strip()[-300:]}")
        total, read_dirs, flat = marshal.loads(out)
        self.read_dirs = read_dirs
        self.walk.read_dirs += read_dirs
        record, names = self.given
        path = [record]
        for depth, name, key, size in flat:
            del path[depth + 1 :]
            child = Dir(key, size)
            path[-1].subdirs[name] = child
            path.append(child)
        return int(total)

    def stop(self) -> None:
        """Kill the helper if it still runs (the walk failed)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            self.process.communicate()


#: what the helper process runs (``python -I -S``: no site, no environment; argv[1]: where uws_hub is)
_HELPER_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from uws_hub.workspaces.usagewalk import helper_main; helper_main()"
)
