"""The job wrapper: runs one local job's command with its limits, and records how it ended.

The hub's resident launcher forks it (``python -I -S wrapper.py --launcher``,
:func:`launcher`: one process of the hub's, standard library only, needing
nothing of the hub, that forks a wrapper per job, so that no interpreter
starts per job), or, without a launcher, the hub starts it on its own
(``python -I -S -c``, running the code its import cached, not the script:
:func:`uws_hub.spawners.localjob.wrapper_argv`). Either way it runs in a session of its own, so
it outlives the hub and the launcher: a hub killed while jobs run finds their
outcomes when it starts again. It gets its instructions as JSON (from the
launcher's socket, or on stdin; never argv, which every account can read in
``/proc``), then:

1. writes its pid and start time into the job's *run file*, whose ``flock``
   the hub took and handed down to it (an inherited descriptor): while the
   wrapper lives the lock is held, so a restarted hub knows the job is still
   running (and adopts it), and a second wrapper of the same job can never
   start (the hub only starts one while it holds the lock itself);
2. starts the command (an argv list, never a shell) in a session of its own,
   as the job's account, in the workspace, with its output going where the
   wrapper's goes (the job's log file), and with the limits applied in the
   child before it runs a single instruction of the command
   (:func:`child_setup`): its CPUs by affinity, its memory by a cgroup v2
   ``memory.max`` when the hub could make one, else ``RLIMIT_AS``;
3. forwards SIGTERM, SIGINT and SIGHUP to the command's process group (the
   hub's stop sends SIGTERM), kills the group after ``kill_grace_seconds``,
   and stops the command at its time limit the same way;
4. writes the *exit record* (exit status or signal, time limit or memory
   limit reached, stopped on request, start and end times) atomically
   (a temporary file renamed into place) before it exits and so releases
   the lock.

Run as ``wrapper.py --exec SPEC -- COMMAND...`` it only applies the limits
and execs the command (:func:`exec_with_limits`): how the local spawner
starts an interactive job's server with its limits.

The module is also imported by the hub and the local spawner for its pure
helpers (:func:`pick_cpus`, :func:`memory_failure`) and the cgroup set-up
(:class:`Cgroups`).
"""

from __future__ import annotations

# The wrapper starts once per batch job: a burst of short jobs pays its start-up per job,
# on the hub's machine. So it imports no module that pulls in ``re`` and ``enum`` (``json``,
# ``signal``: half of its start-up time), and uses their C parts instead: ``_signal``
# (what ``signal`` wraps) and ``_json`` (:func:`loads`, :func:`dumps`).
import _signal as signal
import ctypes
import errno
import os
import resource
import sys
import time

try:
    import _json
except ImportError:  # pragma: no cover - an interpreter without the C accelerator
    _json = None  # type: ignore[assignment]

#: what programs print when an allocation fails (``RLIMIT_AS`` makes it fail:
#: the kernel refuses the mapping, nothing is killed): Python, C/C++, Java, R, Go, numpy
OUT_OF_MEMORY_MARKERS = (
    "MemoryError",
    "Cannot allocate memory",
    "std::bad_alloc",
    "out of memory",
    "Out of memory",
    "OutOfMemoryError",
    "cannot allocate vector",
    "Unable to allocate",
)
#: how much of the end of the log is searched for them
OUT_OF_MEMORY_TAIL_BYTES = 4096
#: the exit status of a command that could not be run (as shells use)
CANNOT_RUN = 127
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: how long the wrapper waits between its rounds of ending what a command left running
END_DESCENDANTS_POLL_SECONDS = 0.01
#: what Python ignores at its start, and an exec would pass on ignored to the command
#: (``yes | head`` would end in "Broken pipe"): set back, as ``subprocess`` does
#: (``restore_signals``)
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class _Decoding:
    """What ``_json``'s scanner asks of its decoder: ``json.JSONDecoder``'s defaults."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__
        self.memo: dict = {}


def loads(text: str | bytes):
    """``json.loads`` of one JSON value (surrounding white space allowed)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    text = text.strip(" \t\n\r")
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    try:
        value, end = _json.make_scanner(_Decoding())(text, 0)  # type: ignore[arg-type]
    except StopIteration as e:
        raise ValueError(f"not JSON (at character {e.value})") from None
    if end != len(text):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def dumps(value) -> str:
    """``json.dumps`` of the wrapper's records (None, bools, numbers, strings, lists, dicts)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, str):
        if _json is None:  # pragma: no cover
            import json

            return json.dumps(value)
        return _json.encode_basestring_ascii(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def pick_cpus(count: int, allowed: list[int], in_use: dict[int, int]) -> list[int]:
    """``count`` CPUs of ``allowed`` for a job, the least used by other jobs first
    (ties: the lowest number); all of them if it asks for as many or more."""
    if count >= len(allowed):
        return sorted(allowed)
    return sorted(sorted(allowed, key=lambda cpu: (in_use.get(cpu, 0), cpu))[:count])


def memory_failure(exit_code: int | None, log_tail: str) -> bool:
    """Whether a command that ran under ``RLIMIT_AS`` failed for want of memory: it did
    not exit with 0 (an error, or a signal such as C++'s abort) and its last output
    says an allocation failed."""
    return exit_code != 0 and any(marker in log_tail for marker in OUT_OF_MEMORY_MARKERS)


def log_tail(path: str) -> str:
    """The end of a job's log, where an allocation failure shows (its last
    :data:`OUT_OF_MEMORY_TAIL_BYTES`; '' if unreadable). Not following a link: in
    single-account mode the job could swap its log for one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        f.seek(max(0, os.fstat(fd).st_size - OUT_OF_MEMORY_TAIL_BYTES))
        return f.read().decode("utf-8", "replace")


class Cgroups:
    """cgroup v2 memory limits for jobs, where the hub can make them.

    ``parent`` is a cgroup v2 directory whose ``cgroup.subtree_control``
    enables (or may be made to enable) the memory controller; each job gets a
    child ``job-<id>`` with ``memory.max`` and ``memory.swap.max = 0``.
    """

    def __init__(self, parent: str):
        self.parent = parent

    @staticmethod
    def default_parent() -> str | None:
        """``uws-jobs`` under the cgroup v2 mount, or None without one."""
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    left, _, right = line.partition(" - ")
                    if right.split(" ", 1)[0] == "cgroup2":
                        return os.path.join(left.split()[4], "uws-jobs")
        except OSError:
            pass
        return None

    def prepare(self) -> str | None:
        """Make ``parent`` usable (create it, enable memory for its children); None if it
        is, else why not."""
        above = os.path.dirname(self.parent)
        try:
            with open(os.path.join(above, "cgroup.controllers")) as f:
                if "memory" not in f.read().split():
                    return f"{above} offers no memory controller (cgroup.controllers)"
            with open(os.path.join(above, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            if "memory" not in enabled:
                with open(os.path.join(above, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory")
            os.makedirs(self.parent, exist_ok=True)
            with open(os.path.join(self.parent, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")
            probe = self.create("probe", 64 * 1024 * 1024)
            self.remove(probe)
        except OSError as e:
            return f"cannot set up {self.parent}: {e.strerror or e}"
        return None

    def create(self, name: str, memory_bytes: int) -> str:
        path = os.path.join(self.parent, name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "memory.max"), "w") as f:
            f.write(str(memory_bytes))
        try:
            with open(os.path.join(path, "memory.swap.max"), "w") as f:
                f.write("0")
        except FileNotFoundError:
            pass  # no swap accounting: swap cannot stretch the limit either
        return path

    @staticmethod
    def oom_killed(path: str) -> bool:
        try:
            with open(os.path.join(path, "memory.events")) as f:
                events = dict(line.split() for line in f if line.strip())
        except OSError:
            return False
        return int(events.get("oom_kill", "0")) > 0

    @staticmethod
    def remove(path: str) -> None:
        try:
            os.rmdir(path)
        except OSError:
            pass


def has_ended(state: str | bytes, threads: int) -> bool:
    """Whether a process in ``state`` (``Z``, ``R``…: the state field of
    ``/proc/<pid>/stat``, or the first letter of ``State`` in ``/proc/<pid>/status``) with
    ``threads`` threads has ended and only waits for its parent to collect it.

    A process whose first thread ended while others run on (``pthread_exit`` in
    ``main``) reads as a zombie too, but runs, with its account and groups, and cannot
    be reaped until its last thread ends: its thread count tells it apart. Earlier
    versions took it for ended: a batch job's wrapper waited for it forever (the job ran
    on past its end, its time limit and its stop), and the orphan sweep and the stray
    kill passed it by. The one rule for the wrapper and the hub: it is here because the
    wrapper runs as a script (``python -I -S``) that imports nothing but the standard
    library, and the hub's modules import it from here
    (:func:`uws_hub.sharing.posixgroups.ended`)."""
    return state in ("Z", b"Z") and threads <= 1


def process_stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command's name (the state first, the
    parent's pid second, the thread count 18th), or None if the process is gone or has
    ended (:func:`has_ended`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if has_ended(fields[0], int(fields[17])) else fields


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``), or None if
    it is gone: with the pid, it names one process for good (pids are reused)."""
    fields = process_stat(pid)
    return None if fields is None else int(fields[19])


def set_session_nice(nice: int, pid: int | None = None) -> bool:
    """Give the session that ``pid`` (this process by default) leads the CPU priority
    ``nice`` where the kernel schedules sessions as groups (``/proc/<pid>/autogroup``);
    whether it did. Nothing for a process that leads no session (the session would be
    its parent's: the hub's).

    With the kernel's autogroup on (``kernel.sched_autogroup_enabled``, the default of
    many distributions), each session is one group that gets as much CPU as any other,
    whatever the niceness of the processes in it: a job in its own session at
    ``nice 10`` weighs as much as the hub, and a burst of starting jobs takes most of
    the CPU from the hub's event loop. Its session's own niceness lowers it as the
    job's does without autogroups. Only a lower priority (0 to 19) is set. Without
    CAP_SYS_ADMIN the kernel sets this at most 10 times a second (on the whole
    machine), and refuses (EAGAIN) in between; without autogroups there is no file."""
    if not 0 < nice <= 19:
        return False
    pid = os.getpid() if pid is None else pid
    try:
        if os.getsid(pid) != pid:
            return False
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        return False
    return True


def apply_limits(spec: dict) -> None:
    """In a process about to run a job's command: its cgroup (as root), CPUs, memory and
    priority, then its account (after the cgroup, which only root may join)."""
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0")
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    if spec.get("memory_bytes") and not spec.get("cgroup"):
        resource.setrlimit(resource.RLIMIT_AS, (spec["memory_bytes"], spec["memory_bytes"]))
    if spec.get("nice"):
        os.nice(spec["nice"])
        # its session's too (before the account switch: root may set it at any time)
        set_session_nice(spec["nice"])
    if spec.get("uid") is not None:
        os.setgroups(spec.get("groups") or [])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (read from ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := process_stat(int(entry))) is not None and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def end_descendants() -> None:
    """Kill every process the command left running, and wait for them: a child
    subreaper (``PR_SET_CHILD_SUBREAPER``, set before the command's fork) is given
    the orphans of its descendants, so whatever the command started, in a session,
    process group and environment of its own (``setsid``, ``env -i``, where neither
    the group's kill nor the hub's orphan sweep reach it), is this process's child
    once its parent has ended. Nothing of a job outlives it: not its share of the
    machine, its port, nor the groups it runs with (an editor whose access to the
    workspace was revoked keeps no process that may write there). Rounds until no
    child is left (a killed process's children come here in turn).

    It asks first whether any child is left: mostly none is, and finding them reads
    every process's ``/proc/<pid>/stat``, milliseconds each time a job ends (a third of
    the wrappers' CPU in a burst of short jobs), and more on a busy machine."""
    me = os.getpid()
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        for pid in children(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(END_DESCENDANTS_POLL_SECONDS)


_PRCTL: list = []


def _prctl():
    """libc's ``prctl``, looked up once per process (and so once for every wrapper the
    launcher forks)."""
    if not _PRCTL:
        _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
    return _PRCTL[0]


def execvpe(file: str, argv: list[str], env: dict[str, str]) -> None:
    """``os.execvpe``: ``file`` looked for in ``env``'s ``PATH`` (``os.defpath`` without
    one) unless it holds a slash, the first error other than a missing file raised if
    none could be run. Without ``os.get_exec_path``, which imports ``warnings``: in the
    command's child of every batch job, a fork of the wrapper, where each object touched
    costs a copied page (a burst of short jobs is bounded by that CPU)."""
    if os.path.dirname(file):
        os.execve(file, argv, env)
    saved: OSError | None = None
    last: OSError | None = None
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(directory, file), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            if saved is None:
                saved = e
    raise saved or last or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), file)


def child_setup(spec: dict) -> None:
    """In the batch job's child, before the command runs: its limits and account, then die
    with the wrapper."""
    apply_limits(spec)
    # set after the account switch, which clears it: a killed wrapper takes its command along
    _prctl()(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != spec["wrapper_pid"]:
        os._exit(CANNOT_RUN)


def exec_with_limits(args: list[str]) -> None:
    """``--exec SPEC -- COMMAND...``: apply SPEC's limits (:func:`apply_limits`), then become
    COMMAND (same pid). How the local spawner starts an interactive job's server with its
    limits: nothing of the command runs before they hold, and the server outlives the hub
    (it is adopted after a restart), so it is not tied to its parent as a batch job is."""
    spec = loads(args[1])
    argv = args[args.index("--") + 1 :]
    apply_limits(spec)
    for sig in PYTHON_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.execvp(argv[0], argv)


class Wrapper:
    def __init__(self, spec: dict):
        self.spec = spec
        self.pid: int | None = None
        self.stopped = False
        self.time_limit = False
        self.killing = False

    def signal_group(self, sig: int) -> None:
        if self.pid is not None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def on_stop(self, signum, frame) -> None:
        """The hub's stop (or a signal meant for the job): the command's group gets it,
        then SIGKILL after the grace period."""
        self.stopped = self.stopped or not self.time_limit
        self.signal_group(signum)
        self.escalate()

    def on_alarm(self, signum, frame) -> None:
        if self.killing:
            self.signal_group(signal.SIGKILL)
            return
        self.time_limit = not self.stopped
        self.signal_group(signal.SIGTERM)
        self.escalate()

    def escalate(self) -> None:
        if not self.killing:
            self.killing = True
            signal.setitimer(signal.ITIMER_REAL, max(0.1, float(self.spec.get("kill_grace_seconds", 10))))

    def catch_signals(self) -> None:
        """From here on a stop is the wrapper's to handle (called before the run file
        names this process, so the hub's stop never meets the default action)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_stop)
        signal.signal(signal.SIGALRM, self.on_alarm)

    def run(self) -> dict:
        spec = self.spec
        record: dict = {"started": time.time(), "cpus": spec.get("cpus"), "memory_bytes": spec.get("memory_bytes")}
        record["memory_limit"] = "cgroup" if spec.get("cgroup") else ("rlimit" if spec.get("memory_bytes") else None)
        # the stop signals are caught already (:meth:`catch_signals`, before the run file named us)
        if self.stopped:
            # stopped before the command started: it never runs
            signal.setitimer(signal.ITIMER_REAL, 0)
            return {
                **record,
                "ended": time.time(),
                "exit_code": None,
                "signal": None,
                "stopped": True,
                "time_limit": False,
                "memory_exceeded": False,
            }
        spec["wrapper_pid"] = os.getpid()
        # what the command leaves behind comes here (:func:`end_descendants`)
        _prctl()(PR_SET_CHILD_SUBREAPER, 1)
        # the child reports a failed exec here; a successful one closes it (close-on-exec)
        errors_in, errors_out = os.pipe2(os.O_CLOEXEC)
        try:
            self.pid = os.fork()
        except OSError as e:
            return {**record, "ended": time.time(), "exit_code": CANNOT_RUN, "error": f"cannot fork: {e.strerror}"}
        if self.pid == 0:
            os.close(errors_in)
            self.exec_child(errors_out)
        os.close(errors_out)
        exec_error = _read_all(errors_in).decode("utf-8", "replace").strip()
        if spec.get("time_limit_seconds"):
            signal.setitimer(signal.ITIMER_REAL, float(spec["time_limit_seconds"]))
        _, status, usage = os.wait4(self.pid, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        # what the command left running ends with it, wherever it went
        end_descendants()
        record["ended"] = time.time()
        record["max_rss_bytes"] = usage.ru_maxrss * 1024
        if os.WIFSIGNALED(status):
            record["signal"] = os.WTERMSIG(status)
            record["exit_code"] = None
        else:
            record["exit_code"] = os.WEXITSTATUS(status)
            record["signal"] = None
            if exec_error:
                record["error"] = exec_error
        record["stopped"] = self.stopped
        record["time_limit"] = self.time_limit
        record["memory_exceeded"] = self.memory_exceeded(record)
        return record

    def exec_child(self, errors: int) -> None:
        """In the forked child: become the command (never returns); why not goes to ``errors``."""
        spec = self.spec
        try:
            os.setsid()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, *PYTHON_IGNORED_SIGNALS):
                signal.signal(sig, signal.SIG_DFL)
            os.close(spec["lock_fd"])
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            child_setup(spec)
            # as the job's account: it enters its workspace with its own rights
            os.chdir(spec["cwd"])
            execvpe(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as e:  # noqa: BLE001 - anything that stops the exec is the job's failure
            message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            where = spec["argv"][0] if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.EACCES) else ""
            try:
                text = f"cannot run {where!r}: {message}" if where else f"cannot start the command: {message}"
                os.write(errors, text.encode())
            finally:
                os._exit(CANNOT_RUN)

    def memory_exceeded(self, record: dict) -> bool:
        if self.spec.get("cgroup"):
            return Cgroups.oom_killed(self.spec["cgroup"])
        if not self.spec.get("memory_bytes"):
            return False
        # a command that exited with 0 did not fail: its log is not read
        return record["exit_code"] != 0 and memory_failure(record["exit_code"], log_tail(self.spec["log_path"]))


def _read_all(fd: int) -> bytes:
    """Everything up to the end of pipe ``fd``, which it closes (no file object: their
    making is a good part of a forked wrapper's CPU)."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def write_record(path: str, record: dict) -> None:
    """The exit record, whole or not at all (a hub reading it never sees half of it)."""
    temporary = f"{path}.tmp"
    data = dumps(record).encode()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def run_job(spec: dict) -> int:
    """The wrapper's work for one batch job (this process, its stdout and stderr the job's
    log): take over the run file, run the command, write the exit record."""
    lock_fd = spec["lock_fd"]
    os.ftruncate(lock_fd, 0)
    run = {
        "pid": os.getpid(),
        "start": process_start_time(os.getpid()),
        "cpus": spec.get("cpus"),
        "started": time.time(),
    }
    job = Wrapper(spec)
    job.catch_signals()
    os.pwrite(lock_fd, dumps(run).encode(), 0)
    record = job.run()
    if spec.get("cgroup"):
        Cgroups.remove(spec["cgroup"])
    write_record(spec["exit_path"], record)
    return 0


# ---------------------------------------------------------------- the resident launcher
#: the environment variable naming a wrapper's job (see :mod:`.localorphans`); in the
#: launcher's own environment its value is :data:`JOB_ID_PLACEHOLDER` (no digits: the
#: orphan sweep passes the launcher by), which each forked wrapper overwrites in place
JOB_ID_VARIABLE = b"UWS_JOB_ID="
JOB_ID_PLACEHOLDER = "-" * 20
#: the largest request the launcher reads (a job's spec, JSON)
LAUNCH_REQUEST_BYTES = 1 << 20
#: what the launcher says first, once it is ready
LAUNCHER_READY = b"ready"


_JOB_ID_SLOT: list[tuple[int, int]] = []


def _job_id_slot() -> tuple[int, int]:
    """Where the value of ``UWS_JOB_ID`` lies in this process's initial environment (what
    ``/proc/<pid>/environ`` shows; the kernel knows where it lies: ``env_start`` and
    ``env_end`` of ``/proc/self/stat``): its address and width. Found once, by the
    launcher (:func:`prepare_forks`): a forked wrapper has it at the same address."""
    if not _JOB_ID_SLOT:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])
        environ = ctypes.string_at(start, end - start)
        key = b"\0" + JOB_ID_VARIABLE
        at = environ.find(key)
        if environ.startswith(JOB_ID_VARIABLE):
            at, key = 0, JOB_ID_VARIABLE
        if at < 0:
            raise RuntimeError("the launcher's environment has no UWS_JOB_ID to overwrite")
        at += len(key)
        _JOB_ID_SLOT.append((start + at, environ.index(b"\0", at) - at))
    return _JOB_ID_SLOT[0]


def name_job(job_id: int) -> None:
    """Write ``job_id`` over the placeholder in this process's initial environment, so
    that a wrapper forked by the launcher carries its job as one the hub started on its
    own does (``UWS_JOB_ID``). NULs pad the value's end: readers split the environment
    at them."""
    address, width = _job_id_slot()
    value = str(int(job_id)).encode()
    if len(value) > width:
        raise RuntimeError(f"job id {job_id} is longer than the launcher's placeholder")
    ctypes.memmove(address, value + b"\0" * (width - len(value)), width)


def prepare_forks() -> None:
    """In the launcher, before it forks any wrapper: look up once what each wrapper would
    look up again (libc's ``prctl``, where its job's id goes). A forked wrapper pays a
    copied page for every object it touches: a burst of short jobs is bounded by that."""
    _prctl()
    try:
        _job_id_slot()
    except RuntimeError:
        pass  # each wrapper says so, in its job's log


def launched(spec: dict, lock_fd: int, log_fd: int, inherited: list[int]) -> int:
    """In a child the launcher forked: become the job's wrapper, as one started on its own
    is (its own session, its output the job's log, stdin ``/dev/null``, the run file's
    lock), and run the job (:func:`run_job`)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    for fd in inherited:
        os.close(fd)
    os.setsid()
    name_job(spec["job_id"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    spec["lock_fd"] = lock_fd
    return run_job(spec)


def _reap() -> None:
    """Wait for every child of the launcher that ended (it keeps no zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _launch(sock, message: bytes, fds: list[int], flags: int, inherited: list[int]) -> None:
    """One request of the hub: fork a wrapper for it, answer its pid (and a pidfd of it)."""
    import socket

    pidfd = None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 2:
            raise ValueError("a request of the hub came cut short")
        spec = loads(message)
        lock_fd, log_fd = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = launched(spec, lock_fd, log_fd, inherited)
            except BaseException as e:  # noqa: BLE001 - the child never returns to the launcher's loop
                os.write(2, f"uws-hub job wrapper: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(code)
        del spec
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None  # cannot be: the child is not reaped yet; the hub then asks again
        reply = dumps({"pid": pid})
    except Exception as e:  # noqa: BLE001 - a bad request is answered, the launcher goes on
        reply = dumps({"error": f"{type(e).__name__}: {e}"})
    finally:
        for fd in fds:
            os.close(fd)
    try:
        socket.send_fds(sock, [reply.encode()], [] if pidfd is None else [pidfd])
    finally:
        if pidfd is not None:
            os.close(pidfd)


def launcher(sock_fd: int) -> int:
    """``--launcher FD``: the hub's resident launcher. It reads the hub's requests on the
    socket ``FD`` (one end of a socketpair, never a path: nobody else can talk to it),
    each a job's spec with its run file's locked descriptor and its log's, forks a
    wrapper per request (no interpreter to start per job), answers its pid, and reaps
    its children. It ends when the hub closes its end (the hub ended): the wrappers run
    on, as they do when the hub dies."""
    import select
    import socket

    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    wake_in, wake_out = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_out)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    # a stop of the hub's session is not the launcher's (it is in its own anyway)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inherited = [sock.fileno(), wake_in, wake_out]
    prepare_forks()
    sock.sendall(LAUNCHER_READY)
    while True:
        _reap()
        ready, _, _ = select.select([sock_fd, wake_in], [], [])
        if wake_in in ready:
            try:
                while os.read(wake_in, 512):
                    pass
            except BlockingIOError:
                pass
        if sock_fd in ready:
            try:
                message, fds, flags, _ = socket.recv_fds(sock, LAUNCH_REQUEST_BYTES, 2)
            except ConnectionError:
                break
            if not message and not fds:
                break  # the hub closed its end
            _launch(sock, message, fds, flags, inherited)
    _reap()
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--exec"]:
        exec_with_limits(sys.argv[1:])
    if sys.argv[1:2] == ["--launcher"]:
        return launcher(int(sys.argv[2]))
    return run_job(loads(sys.stdin.buffer.read()))


if __name__ == "__main__":
    sys.exit(main())
