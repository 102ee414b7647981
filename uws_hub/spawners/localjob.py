"""Local jobs through the job wrapper (:mod:`.wrapper`), from the hub's side: start one,
find it again after a restart, watch it end, read how it ended, stop it.

Each job has three files in the hub's own job log directory (mode 0700):

- ``job-<id>.log``: the command's stdout and stderr;
- ``job-<id>.run``: locked (``flock``) by the job's wrapper for as long as it
  lives, holding its pid, its start time and the job's CPUs;
- ``job-<id>.exit``: the exit record, written atomically by the wrapper
  before it ends.

:func:`claim` takes the run file's lock: it fails while a wrapper holds it (the
job runs: adopt it), and a start happens only while the hub holds it, the
locked descriptor being handed to the new wrapper. So a job never runs twice,
whenever the hub dies; and a job whose run file is unlocked, with no exit
record but a pid, lost its wrapper (killed): it failed.

Both kinds of local job share two things of the hub's process, kept here:
which CPUs the jobs are pinned to (:data:`CPU_USE`: each new job gets the
least used), and the cgroup v2 parent of their memory limits
(:func:`memory_cgroups`).

Nothing here imports the hub: the local spawner uses it too.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import grp
import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..hubfolders import open_own_file
from . import wrapper
from .groupnames import group_name, is_group_name
from .localorphans import WRAPPER_MARK

#: the wrapper program, run by path with ``python -I -S`` (standard library only)
WRAPPER = os.path.abspath(wrapper.__file__)

#: what ``python -I -S -c`` runs to start the wrapper at ``argv[1]`` (its own arguments
#: follow): the wrapper's code as compiled and cached (``__pycache__``) by the hub's own
#: import of :mod:`.wrapper`, run as ``__main__``. Run as a script, its source would be
#: compiled at every start (a script's code is never cached): ~18 ms of CPU for each
#: server with limits and each batch job started without the launcher, a third of the
#: wrapper's start-up (the interpreter's own is the rest). (The launcher, started
#: once, runs as the script, the name its processes are known by in ``/proc``.)
_RUN_CACHED = (
    "import sys; from _frozen_importlib_external import SourceFileLoader; __file__ = sys.argv.pop(1);"
    " exec(SourceFileLoader('__main__', __file__).get_code('__main__'))"
)


def wrapper_argv(*args: str, python: str = sys.executable, path: str = WRAPPER) -> list[str]:
    """The command line that runs the wrapper (at ``path``) with ``args``, from its cached code.

    Without it (a fresh or read-only install) the wrapper compiles its source and caches
    it, as the hub's import would: not if the hub writes none (``PYTHONDONTWRITEBYTECODE``,
    ``-B``), which ``-I`` would have the wrapper ignore."""
    no_cache = ["-B"] if sys.dont_write_bytecode else []
    return [python, "-I", "-S", *no_cache, "-c", _RUN_CACHED, path, *args]


class CpuUse:
    """The CPUs each local job of this hub is pinned to (batch jobs and servers alike), so
    that a new job gets the least used ones."""

    def __init__(self) -> None:
        self.allowed = sorted(os.sched_getaffinity(0))
        self._held: dict[str, list[int]] = {}

    def take(self, key: str, count: int) -> list[int] | None:
        """CPUs for job ``key`` wanting ``count`` of them (None: it asked for none)."""
        if not count:
            return None
        in_use: dict[int, int] = {}
        for cpus in self._held.values():
            for cpu in cpus:
                in_use[cpu] = in_use.get(cpu, 0) + 1
        cpus = wrapper.pick_cpus(count, self.allowed, in_use)
        self._held[key] = cpus
        return cpus

    def hold(self, key: str, cpus: list[int] | None) -> None:
        """Count the CPUs of a job found running (after a hub restart)."""
        if cpus:
            self._held[key] = list(cpus)

    def release(self, key: str) -> None:
        self._held.pop(key, None)


#: the hub process's one record of its local jobs' CPUs
CPU_USE = CpuUse()

_CGROUPS: dict[str, tuple[wrapper.Cgroups | None, str | None]] = {}


def memory_cgroups(parent: str) -> tuple[wrapper.Cgroups | None, str | None]:
    """The cgroup v2 parent for local jobs' memory limits, set up once per process, or
    (None, why not): then ``RLIMIT_AS`` limits them. ``parent``: a cgroup v2 directory,
    ``""`` for ``uws-jobs`` under the cgroup v2 mount, ``"none"`` for never."""
    if parent not in _CGROUPS:
        path = wrapper.Cgroups.default_parent() if parent == "" else parent
        if parent == "none":
            _CGROUPS[parent] = (None, "memory_cgroup_parent is 'none'")
        elif path is None:
            _CGROUPS[parent] = (None, "no cgroup v2 hierarchy is mounted")
        else:
            cgroups = wrapper.Cgroups(path)
            problem = cgroups.prepare()
            _CGROUPS[parent] = (None, problem) if problem else (cgroups, None)
    return _CGROUPS[parent]


@dataclass(frozen=True)
class JobFiles:
    """The hub's files of one local job (see the module's docstring)."""

    directory: str
    job_id: int

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, f"job-{self.job_id}.{suffix}")

    @property
    def log(self) -> str:
        return self._path("log")

    @property
    def run(self) -> str:
        return self._path("run")

    @property
    def exit(self) -> str:
        return self._path("exit")

    def read_exit(self) -> dict[str, Any] | None:
        return _read_json(self.exit)

    def read_run(self) -> dict[str, Any] | None:
        return _read_json(self.run)

    def remove(self) -> None:
        _unlink(self.log, self.run, self.exit)

    def remove_stale(self) -> None:
        """Remove the log and exit record left by another job of the same id: a start
        (its run file claimed, so no wrapper of the id lives) makes them anew. A hub
        started on a new database with this job log directory numbers its jobs from 1
        again: earlier versions appended a new job's output to the file of the earlier
        job of its id, someone else's, which the new job's owner then read as theirs."""
        _unlink(self.log, self.exit)


def _unlink(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    try:
        value = json.loads(data) if data.strip() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def job_groups(account: pwd.struct_passwd, prefix: str | None, workspace_id: int) -> list[int]:
    """The groups a job of ``account`` in workspace ``workspace_id`` runs with: the
    account's (``getgrouplist``) and its workspace's POSIX group when it has one (the
    launch is authorized: the owner's or an editor's; no account is a member, see
    :mod:`uws_hub.sharing.posixgroups`), less the groups of other workspaces (named
    ``prefix`` and a workspace id; an account made a member by hand). A job reaches its
    own workspace and nothing of other people's: with every group of its account, an
    editor's job in a workspace of their own kept write access to one they edited after
    their access was revoked (the revocation stops their jobs in that workspace only),
    for as long as it ran."""
    groups = os.getgrouplist(account.pw_name, account.pw_gid)
    if prefix is None:
        return groups
    own = group_name(prefix, workspace_id)
    kept = []
    for gid in groups:
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            name = ""
        if name != own and is_group_name(prefix, name):
            continue
        kept.append(gid)
    try:
        own_gid = grp.getgrnam(own).gr_gid
    except KeyError:
        return kept  # not shared
    return kept if own_gid in kept else [*kept, own_gid]


def open_log(path: str) -> int:
    """A local job's log file, opened to append its output: the hub's own, 0600 (its
    folder may be passable by every account, see ``WorkspaceSlurmSpawner.batch_output_dir``),
    through no link of an account's, and no file that is not the hub's alone
    (:func:`~uws_hub.hubfolders.open_own_file`: earlier versions, opening it by its
    path, chmodded and appended the job's output to whatever such a link led to)."""
    fd = open_own_file(path, os.O_APPEND)
    os.fchmod(fd, 0o600)
    return fd


def claim(files: JobFiles) -> int | None:
    """Lock the job's run file (made if missing); the locked descriptor, or None while a
    wrapper holds the lock (the job runs)."""
    os.makedirs(files.directory, mode=0o700, exist_ok=True)
    fd = os.open(files.run, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def alive(run: dict[str, Any] | None) -> int | None:
    """The wrapper's pid if the process the run file names still lives (pid and start time)."""
    if not run or not isinstance(run.get("pid"), int):
        return None
    pid = run["pid"]
    return pid if wrapper.process_start_time(pid) == run.get("start") else None


def wrapper_env(hub_id: str, job_id: int | str) -> dict[str, str]:
    """The whole environment of a wrapper (or of the launcher, ``job_id`` its placeholder):
    nothing of the hub's own, its hub and its job named (:mod:`.localorphans`)."""
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "UWS_HUB_ID": hub_id,
        "UWS_JOB_ID": str(job_id),
        WRAPPER_MARK: "1",
    }


def _recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """``socket.recv_fds``, the descriptors close-on-exec as every descriptor of the hub's
    (nothing it runs, a user's command through setpriv, inherits them): Python 3.11's
    ``recv_fds`` drops its ``flags``."""
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return message, list(fds)


class LauncherLost(RuntimeError):
    """The launcher ended while it had a request of the hub (the job may have started)."""


class Launcher:
    """The hub's resident launcher (``wrapper.py --launcher``, :func:`.wrapper.launcher`):
    one long-lived process that forks each local batch job's wrapper, so that a job
    costs a fork instead of an interpreter's start-up.

    It is started on first use, as the hub's account, with a clean environment (as a
    wrapper is: nothing of the hub's memory or environment reaches it), in a session of
    its own, and talks with the hub over a socketpair only. A launcher that ended is
    replaced at the next start; one that cannot be started is tried again after
    :attr:`retry_seconds`, the jobs being started one interpreter each meanwhile.
    Thread-safe: the hub's starts run in threads.
    """

    #: how long a launcher may take to answer (start-up or a request)
    timeout_seconds = 30.0
    #: how long after a failed start the launcher is tried again
    retry_seconds = 60.0

    def __init__(self, log: logging.Logger, *, python: str = sys.executable, hub_id: str = ""):
        self.log = log
        self.python = python
        self.hub_id = hub_id
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._retry_at = 0.0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def _start(self) -> bool:
        """A launcher, started now if none lives; False if it cannot be (logged)."""
        if self._proc is not None and self._proc.poll() is None:
            return True
        if self._proc is not None:
            self.log.warning(
                "The batch job launcher (pid %s) ended (%s): starting another", self._proc.pid, self._proc.returncode
            )
            self._drop()
        if time.monotonic() < self._retry_at:
            return False
        hub_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-I", "-S", WRAPPER, "--launcher", str(launcher_end.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(launcher_end.fileno(),),
                start_new_session=True,
                env=wrapper_env(self.hub_id, wrapper.JOB_ID_PLACEHOLDER),
            )
            launcher_end.close()  # the launcher's only: its end ends the hub's wait
            self._sock = hub_end
            hub_end.settimeout(self.timeout_seconds)
            if hub_end.recv(64) != wrapper.LAUNCHER_READY:
                raise OSError("it ended before it was ready")
        except OSError as e:
            self.log.warning(
                "The batch job launcher cannot be started (%s): each local batch job starts its own wrapper "
                "interpreter for %g s",
                e,
                self.retry_seconds,
            )
            self._drop()
            hub_end.close()
            self._retry_at = time.monotonic() + self.retry_seconds
            return False
        finally:
            launcher_end.close()
        self.log.info("Started the batch job launcher (pid %s)", self._proc.pid)
        return True

    def _drop(self) -> None:
        """Forget the launcher (ending it if it lives: the jobs it started run on)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def launch(self, spec: dict[str, Any], lock_fd: int, log_fd: int) -> tuple[int, int | None] | None:
        """Have the launcher start ``spec``'s wrapper (blocking: run it in a thread): its
        pid and a pidfd of it (None if it ended already), or None without a launcher (the
        caller starts the wrapper itself). Raises :class:`LauncherLost` if the launcher
        ended after it got the request."""
        request = json.dumps(spec).encode()
        if len(request) > wrapper.LAUNCH_REQUEST_BYTES:
            return None  # more than the launcher reads: the wrapper reads it from its stdin
        with self._lock:
            for _ in range(2):
                if not self._start():
                    return None
                assert self._sock is not None
                try:
                    socket.send_fds(self._sock, [request], [lock_fd, log_fd])
                except (BrokenPipeError, ConnectionError):
                    continue  # it ended before the request: another one takes it
                except OSError as e:
                    if e.errno != errno.EMSGSIZE:
                        raise
                    # more than the socket's buffer holds (wmem_default, ~200 KB: long
                    # values of a job's parameters, non-ASCII ones 6 bytes each in JSON):
                    # the wrapper reads it from its stdin
                    return None
                try:
                    reply, fds = _recv_fds(self._sock, 65536, 1)
                except ConnectionResetError:
                    # it ended with the request unread (a socket closed with data in its
                    # queue resets its peer's): it started nothing, another one takes it
                    self._drop()
                    continue
                except OSError as e:
                    self._drop()
                    raise LauncherLost(f"the batch job launcher did not answer: {e}") from None
                if not reply:
                    self._drop()
                    raise LauncherLost("the batch job launcher ended while starting the job")
                answer = json.loads(reply)
                if "error" in answer:
                    for fd in fds:
                        os.close(fd)
                    raise RuntimeError(f"the batch job launcher could not start the job: {answer['error']}")
                return int(answer["pid"]), (fds[0] if fds else None)
            return None

    def close(self) -> None:
        """Close the hub's end: the launcher ends (its jobs run on)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Started:
    """A wrapper just started: its pid, and what the hub watches it by (the ``Popen`` of
    one it started itself, or a pidfd of one the launcher forked)."""

    pid: int
    proc: subprocess.Popen | None = None
    pidfd: int | None = None


def start(
    files: JobFiles,
    lock_fd: int,
    spec: dict[str, Any],
    *,
    python: str = sys.executable,
    log_path: str | None = None,
    hub_id: str = "",
    launcher: Launcher | None = None,
) -> Started:
    """Start the wrapper for ``spec`` (blocks briefly: run it in a thread), handing it the
    locked run file; the caller closes its own ``lock_fd`` after. The ``launcher`` forks
    it if there is one (and it can be started), else it is a new interpreter of its own.
    Either way its environment names this hub (``hub_id``) and the job, and marks it a
    wrapper, so that the hub finds it again (:mod:`.localorphans`)."""
    log_path = log_path or files.log
    spec = {
        **spec,
        "job_id": files.job_id,
        "lock_fd": lock_fd,
        "exit_path": files.exit,
        "log_path": log_path,
    }
    log_fd = open_log(log_path)
    try:
        if launcher is not None:
            launched = launcher.launch(spec, lock_fd, log_fd)
            if launched is not None:
                return Started(launched[0], pidfd=launched[1])
        proc = subprocess.Popen(
            wrapper_argv(python=python),
            stdin=subprocess.PIPE,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            pass_fds=(lock_fd,),
            start_new_session=True,
            env=wrapper_env(hub_id, files.job_id),
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(spec).encode())
    finally:
        proc.stdin.close()
    return Started(proc.pid, proc=proc)


def stop(run: dict[str, Any] | None) -> bool:
    """Ask the job's wrapper to stop the job (SIGTERM; it kills the command after its
    grace period); False if no wrapper of it lives."""
    pid = alive(run)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


class ExitWatch:
    """Calls back when a process ends, whether the hub started it or adopted it after a
    restart (a pidfd in the event loop: no thread, no polling)."""

    def __init__(self) -> None:
        self._fds: dict[int, tuple[int, subprocess.Popen | None]] = {}

    def watch(
        self, pid: int, on_exit: Callable[[], None], proc: subprocess.Popen | None = None, pidfd: int | None = None
    ) -> bool:
        """Watch ``pid`` (False if it is already gone), by ``pidfd`` if given (then
        this watch's: it closes it)."""
        if pid in self._fds:
            if pidfd is not None:
                os.close(pidfd)
            return True
        if pidfd is None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                if proc is not None:
                    proc.poll()
                return False
        loop = asyncio.get_running_loop()
        self._fds[pid] = (pidfd, proc)

        def ended() -> None:
            self.forget(pid)
            on_exit()

        loop.add_reader(pidfd, ended)
        return True

    def watching(self, pid: int) -> bool:
        return pid in self._fds

    def forget(self, pid: int) -> None:
        entry = self._fds.pop(pid, None)
        if entry is None:
            return
        pidfd, proc = entry
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        if proc is not None:
            proc.poll()  # reap it

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)
