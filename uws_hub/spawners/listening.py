"""Knowing the moment a job's server listens, and the moment its process exits.

JupyterHub waits for a started server with ``wait_for_http_server``: an
exponential backoff with full jitter (sleeps random in [0, 0.2], [0, 0.4],
[0, 0.8], ... seconds), so a server that answers 2 s after its start is
noticed on average about half a second late, sometimes 1.5 s. A spawner
whose ``start()`` returns only once the server's port accepts connections
makes JupyterHub's first check succeed: :func:`wait_listening` does that.

It is cheap enough for hundreds of starts at once: **one** timer checks
every waiting port per tick, each check a non-blocking ``connect`` whose
answer on the loopback interface is there at once (about 20 µs, no task
switch), and the ticks spread out as more starts wait
(``max_checks_per_second``), so a burst of launches does not turn the hub's
event loop into a port scanner. Remote hosts (a SLURM node) answer a
``connect`` later: the socket is kept and looked at again on the next tick.

A local server counts as listening only once the socket that listens on its
port is its own (one of its process tree's descriptors, :func:`holds_listener`):
any process on the machine can listen on a port the hub chose for a server
before the server binds it (the server then fails to bind and exits), and the
hub would otherwise route the server's URL, on the hub's own origin, to that
process: a squatter of another account would serve its pages to the server's
visitors.

:func:`process_exit` turns a process's exit into a future with a pidfd (no
polling): a local start fails the moment its server dies, and a stop sees the
exit at once instead of JupyterHub's backoff from ``death_interval``.

This module imports nothing of the hub (see ``tests/unit/test_layering.py``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import struct
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

#: seconds between two checks of a port while few servers start: at first
#: ``TICK_MIN_SECONDS``, then a fraction of the time the server has taken so far, up to
#: ``TICK_MAX_SECONDS``: a server is noticed on average half a tick after it listens,
#: which is 1 ms for a minimal server (100 ms) and a fraction of a percent for
#: JupyterLab (seconds), which is checked no more often than before (every 10 ms)
TICK_MIN_SECONDS = 0.002
TICK_MAX_SECONDS = 0.01
TICK_FRACTION = 0.02
#: at most this many port checks per second, however many servers start at once
MAX_CHECKS_PER_SECOND = 1000
#: a connect to a remote host still in progress after this long is tried afresh
CONNECT_RETRY_SECONDS = 2.0


class ServerExited(RuntimeError):
    """The server's process (or batch job) ended before it listened."""


#: netlink's socket-diagnostics protocol (``linux/sock_diag.h``, ``linux/inet_diag.h``)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
#: where a socket's source port, owner's uid and inode are in an ``inet_diag_msg``
#: (after the 4 bytes of family, state, timer and retransmits: the 48-byte socket id,
#: then expires, rqueue, wqueue, uid and inode)
_SPORT_AT, _UID_AT, _INODE_AT = 4, 4 + 48 + 12, 4 + 48 + 16


def _diag_listening(port: int) -> dict[str, int]:
    """The inodes of the TCP sockets listening on ``port``, with the uid of each one's
    account, asked of the kernel by netlink (it walks its table of listening sockets
    only: tens of microseconds)."""
    inodes = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
            header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
            nl.send(header + request)
            done = False
            while not done:
                data = nl.recv(65536)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        raise OSError(-struct.unpack_from("=i", data, offset + 16)[0], "sock_diag refused")
                    message = offset + 16
                    if struct.unpack_from("!H", data, message + _SPORT_AT)[0] == port:
                        inode = str(struct.unpack_from("=I", data, message + _INODE_AT)[0])
                        inodes[inode] = struct.unpack_from("=I", data, message + _UID_AT)[0]
                    offset += (length + 3) & ~3
    return inodes


def _proc_listening(port: int) -> dict[str, int]:
    """As :func:`_diag_listening`, from ``/proc/net/tcp`` and ``tcp6`` (where netlink is
    refused): milliseconds, as the kernel walks every socket's table to write them."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    # sl local_address rem_address st ... uid timeout inode
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                        inodes[fields[9]] = int(fields[7])
        except OSError:
            continue
    return inodes


def listening_sockets(port: int) -> dict[str, int]:
    """The inodes of the sockets listening on TCP ``port`` (IPv4 and IPv6, any address)
    in this network namespace, with the uid of each one's account."""
    try:
        return _diag_listening(port)
    except OSError:
        return _proc_listening(port)


def holds_listener(pid: int, port: int) -> bool:
    """Whether the process ``pid`` or one of its descendants holds a socket listening on
    ``port`` (its server may run under a shell or a wrapper that does not exec it).

    Where the hub may not read a process's descriptors (root without CAP_SYS_PTRACE, as
    in a container with the default capabilities: another account's ``/proc/<pid>/fd``
    lists but its links are refused), a listener of that process's account counts as
    its own: another account's is still not.
    """
    listeners = listening_sockets(port)
    wanted = {f"socket:[{inode}]" for inode in listeners}
    if not wanted:
        return False
    pending, seen = [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            for fd in os.listdir(f"/proc/{current}/fd"):
                try:
                    if os.readlink(f"/proc/{current}/fd/{fd}") in wanted:
                        return True
                except PermissionError:
                    if os.stat(f"/proc/{current}").st_uid in listeners.values():
                        return True
                    break
                except OSError:
                    continue
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except OSError:
            continue  # it exited meanwhile
    return False


@dataclass(eq=False)
class _Waiter:
    address: tuple
    family: int
    future: asyncio.Future
    #: the process (tree) whose socket must be the one that listens (None: any listener)
    owner: int | None = None
    sock: socket.socket | None = None
    since: float = field(default_factory=time.monotonic)
    #: when the wait began, and when the port is checked next
    began: float = field(default_factory=time.monotonic)
    due: float = 0.0

    def tick(self, now: float) -> float:
        """Seconds until this port's next check (see ``TICK_FRACTION``)."""
        return min(TICK_MAX_SECONDS, max(TICK_MIN_SECONDS, (now - self.began) * TICK_FRACTION))

    def check(self) -> bool:
        """Whether the port accepts connections (one non-blocking step)."""
        if self.sock is None:
            self.sock = socket.socket(self.family, socket.SOCK_STREAM)
            self.sock.setblocking(False)
            self.sock.connect_ex(self.address)
            self.since = time.monotonic()
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not error:
            if not select.select([], [self.sock], [], 0)[1]:
                if time.monotonic() - self.since < CONNECT_RETRY_SECONDS:
                    return False  # a remote host has not answered yet: look again next tick
            else:
                error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if not error:
                    self.close()
                    # another process's listener is not the server: wait on (the server
                    # fails to bind the port, exits, and the wait ends with its exit)
                    return self.owner is None or holds_listener(self.owner, self.address[1])
        self.close()
        return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _Watcher:
    """Every port this process waits for, checked by one task."""

    def __init__(self) -> None:
        self.waiters: set[_Waiter] = set()
        self.task: asyncio.Task | None = None

    def add(self, waiter: _Waiter) -> None:
        self.waiters.add(waiter)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self.run())

    def discard(self, waiter: _Waiter) -> None:
        self.waiters.discard(waiter)
        waiter.close()

    async def run(self) -> None:
        while self.waiters:
            now = time.monotonic()
            for waiter in list(self.waiters):
                if waiter.future.done():
                    self.discard(waiter)
                    continue
                if now < waiter.due:
                    continue
                waiter.due = now + waiter.tick(now)
                try:
                    up = waiter.check()
                except OSError as e:
                    waiter.close()
                    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS):
                        self.discard(waiter)
                        waiter.future.set_exception(e)
                    continue
                if up:
                    self.discard(waiter)
                    waiter.future.set_result(None)
            if not self.waiters:
                return
            due = min(waiter.due for waiter in self.waiters) - time.monotonic()
            await asyncio.sleep(max(TICK_MIN_SECONDS, due, len(self.waiters) / MAX_CHECKS_PER_SECOND))


_watchers: dict[asyncio.AbstractEventLoop, _Watcher] = {}


async def wait_listening(
    host: str, port: int, *, gone: Awaitable | None = None, timeout: float, owner: int | None = None
) -> None:
    """Return once ``host:port`` accepts TCP connections (and, with ``owner``, a local
    process's pid, once the listening socket is that process's or a descendant's).

    Raises :class:`ServerExited` if ``gone`` (the server's exit) completes
    first, and TimeoutError after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        for old in [k for k in _watchers if k.is_closed()]:
            del _watchers[old]
        watcher = _watchers[loop] = _Watcher()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    waiter = _Waiter(address, family, loop.create_future(), owner)
    watcher.add(waiter)
    waits: set[asyncio.Future] = {waiter.future}
    ended = asyncio.ensure_future(gone) if gone is not None else None
    if ended is not None:
        waits.add(ended)
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter.future in done:
            waiter.future.result()
            return
        if ended is not None and ended in done:
            raise ServerExited(f"The server exited before it listened on port {port}")
        raise TimeoutError(f"The server did not listen on {host}:{port} within {timeout:g} s")
    finally:
        watcher.discard(waiter)
        if not waiter.future.done():
            waiter.future.cancel()
        if ended is not None and not ended.done() and gone is not ended:
            ended.cancel()


def process_exit(pid: int) -> asyncio.Future | None:
    """A future done when process ``pid`` exits (a pidfd: no polling), or None where
    pidfds are not available (then poll instead)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def close(_: object = None) -> None:
        nonlocal fd
        if fd >= 0:
            loop.remove_reader(fd)
            os.close(fd)
            fd = -1

    def exited() -> None:
        close()
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, exited)
    future.add_done_callback(close)
    return future
