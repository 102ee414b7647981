"""Knowing when a job's server listens and when its process exits (uws_hub.spawners.listening):
real sockets and real processes, no hub."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import subprocess
import sys

import pytest

from uws_hub.spawners import listening
from uws_hub.spawners.listening import ServerExited, holds_listener, process_exit, wait_listening


def bound_socket() -> socket.socket:
    """A port of ours that does not listen (yet): connections are refused, and no other
    process on the machine can take it meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def port(s: socket.socket) -> int:
    return s.getsockname()[1]


async def test_returns_once_the_port_listens():
    with bound_socket() as s:
        waiting = asyncio.ensure_future(wait_listening("127.0.0.1", port(s), timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        s.listen()
        await asyncio.wait_for(waiting, 5)


async def test_many_waits_at_once_each_end_when_their_own_port_listens():
    sockets = [bound_socket() for _ in range(50)]
    try:
        waits = [asyncio.ensure_future(wait_listening("127.0.0.1", port(s), timeout=10)) for s in sockets]
        for s in sockets[::2]:
            s.listen()
        await asyncio.wait_for(asyncio.gather(*waits[::2]), 5)
        assert not any(w.done() for w in waits[1::2])
        for w in waits[1::2]:
            w.cancel()
    finally:
        for s in sockets:
            s.close()


async def test_the_servers_exit_ends_the_wait():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    exited = process_exit(proc.pid)
    assert exited is not None
    with bound_socket() as s, pytest.raises(ServerExited):
        await wait_listening("127.0.0.1", port(s), gone=exited, timeout=10)
    assert proc.wait() == 3


async def test_a_port_that_never_listens_times_out():
    with bound_socket() as s, pytest.raises(TimeoutError, match="did not listen"):
        await wait_listening("127.0.0.1", port(s), timeout=0.3)


async def test_process_exit_is_told_without_polling_and_can_be_cancelled():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    exited = process_exit(proc.pid)
    assert exited is not None and not exited.done()
    await asyncio.wait_for(exited, 5)
    proc.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        waiting = process_exit(sleeper.pid)
        assert waiting is not None
        waiting.cancel()  # closes its pidfd
        await asyncio.sleep(0)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_port_is_checked_often_at_first_then_at_a_fraction_of_the_time_taken():
    """A server is noticed about half a check interval after it listens: 2 ms apart at
    first (a minimal server listens after ~100 ms), then 2% of the time it has taken, up
    to 10 ms (JupyterLab takes seconds: no more checks than before)."""
    from uws_hub.spawners import listening

    waiter = listening._Waiter(("127.0.0.1", 1), socket.AF_INET, future=None, began=100.0)  # type: ignore[arg-type]
    assert waiter.tick(100.0) == listening.TICK_MIN_SECONDS == 0.002
    assert waiter.tick(100.05) == 0.002
    assert waiter.tick(100.25) == pytest.approx(0.005)
    assert waiter.tick(102.0) == waiter.tick(1000.0) == listening.TICK_MAX_SECONDS == 0.01


async def test_a_listener_of_another_process_is_not_the_servers():
    """With ``owner``, only a socket of that process (or a descendant) counts: another
    process that listens on the port (a squatter) does not end the wait."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(30)"], stdin=subprocess.PIPE
    )
    try:
        with bound_socket() as s:
            s.listen()
            with pytest.raises(TimeoutError):
                await wait_listening("127.0.0.1", port(s), timeout=0.3, owner=holder.pid)
            # the same listener is this process's own
            await asyncio.wait_for(wait_listening("127.0.0.1", port(s), timeout=10, owner=os.getpid()), 5)
    finally:
        holder.kill()
        holder.wait()


async def test_a_listener_held_by_a_child_of_the_owner_is_the_servers():
    """A server under a shell that does not exec it: its socket is a descendant's."""
    with bound_socket() as probe:
        free = port(probe)
    shell = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'{sys.executable} -c "import socket, time; s = socket.socket(); '
            f"s.bind(('127.0.0.1', {free})); s.listen(); time.sleep(30)\"; true",
        ],
        start_new_session=True,
    )
    try:
        await asyncio.wait_for(wait_listening("127.0.0.1", free, timeout=10, owner=shell.pid), 15)
        assert holds_listener(shell.pid, free)
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def test_the_kernels_answer_and_proc_net_tcp_agree():
    """The listening sockets of a port, asked of netlink, are those ``/proc/net/tcp``
    lists (the fallback where netlink is refused), IPv4 and IPv6 alike."""
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6, bound_socket() as idle:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        for s in (v4, v6):
            assert listening._proc_listening(port(s)) == {str(os.fstat(s.fileno()).st_ino): os.getuid()}
        # a bound socket that does not listen is not a listener
        assert listening._proc_listening(port(idle)) == {}
        try:
            for s in (v4, v6, idle):
                assert listening._diag_listening(port(s)) == listening._proc_listening(port(s))
        except PermissionError:
            pytest.skip("netlink's socket diagnostics are refused here (the /proc fallback was checked)")


@pytest.mark.skipif(os.geteuid() != 0, reason="switches accounts: the hub runs as root")
def test_a_root_hub_without_cap_sys_ptrace_knows_its_servers_listeners_by_their_account():
    """review5: root in a container without CAP_SYS_PTRACE (Docker's, Podman's and
    Kubernetes' default capabilities) may list another account's ``/proc/<pid>/fd`` but
    not read its links: every system user's server counted as not listening, and its
    start timed out. A listener of the server's account is then its own; another
    account's is still not. Failed before: the server's own listener was refused."""
    nobody = pwd.getpwnam("nobody")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
            " print(s.getsockname()[1], flush=True); time.sleep(30)",
        ],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server_port = int(server.stdout.readline())
        with bound_socket() as squatter:
            squatter.listen()
            checks = (
                f"print(holds_listener({server.pid}, {server_port}), holds_listener({server.pid}, {port(squatter)}))"
            )
            asked = subprocess.run(
                ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", sys.executable, "-c"]
                + [f"from uws_hub.spawners.listening import holds_listener; {checks}"],
                capture_output=True,
                text=True,
                check=True,
            )
        assert asked.stdout.split() == ["True", "False"], asked
    finally:
        server.kill()
        server.wait()
