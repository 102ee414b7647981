"""The pure parts of batch jobs: declared parameters and their checks, the argv template,
the fair queue's order, log ranges, how an exit record reads, the CPUs a job gets."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pwd
import py_compile
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from uws_hub.errors import Unprocessable, UWSError
from uws_hub.examples import count_lines
from uws_hub.jobs.logs import RangeNotSatisfiable, complete_lines, parse_range
from uws_hub.jobs.parameters import ParameterSpec, render_argv, render_env, validate_parameters
from uws_hub.jobs.queue import Waiting, plan_starts
from uws_hub.jobs.service import tail
from uws_hub.jobs.types import parse_job_types
from uws_hub.spawners import wrapper
from uws_hub.spawners.localbatch import describe_exit
from uws_hub.spawners.localjob import wrapper_argv
from uws_hub.spawners.wrapper import memory_failure, pick_cpus

SPECS = {
    "text": ParameterSpec(type="string", required=True),
    "count": ParameterSpec(type="int", default=3, min=1, max=10),
    "ratio": ParameterSpec(type="float", min=0, max=1),
    "mode": ParameterSpec(type="choice", choices=["fast", "exact"], default="fast"),
    "folder": ParameterSpec(type="path", default="."),
    "loud": ParameterSpec(type="bool", default=False),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another account takes root to make")
def test_a_jobs_output_tail_is_read_only_from_a_regular_file_of_its_account(tmp_path):
    """The hub reads the tail of a job's output (a failed job's reason, its output page)
    as the log reader reads the log: a link, a FIFO or another account's file (a hard link
    to it, made in the folder a SLURM job's account writes) in its place reads as nothing."""
    me, nobody = os.geteuid(), pwd.getpwnam("nobody").pw_uid
    out = tmp_path / "job.out"
    out.write_text("first line\n" + "x" * 50 + "\nlast line\n")
    assert tail(str(out), me, 20) == "last line"
    assert tail(str(out), me, 4096).startswith("first line")
    os.chown(out, nobody, -1)
    assert tail(str(out), me, 4096) == ""
    assert tail(str(out), nobody, 4096).endswith("last line")
    (tmp_path / "link.out").symlink_to(out)
    os.mkfifo(tmp_path / "fifo.out")
    assert [tail(str(tmp_path / name), nobody, 4096) for name in ("link.out", "fifo.out", "none.out")] == ["", "", ""]


def test_defaults_fill_in_and_values_are_kept():
    assert validate_parameters(SPECS, {"text": "a b", "ratio": 1}) == {
        "text": "a b",
        "count": 3,
        "ratio": 1,
        "mode": "fast",
        "folder": ".",
        "loud": False,
    }


def test_every_problem_is_named_with_its_field():
    with pytest.raises(Unprocessable) as e:
        validate_parameters(
            SPECS, {"count": 0, "ratio": float("nan"), "mode": "slow", "folder": "a/../../b", "loud": 1, "extra": None}
        )
    assert e.value.message == (
        "Invalid parameters (it takes: text, count, ratio, mode, folder, loud): parameters.extra: unknown parameter;"
        " parameters.text: required; parameters.count: must be at least 1 (got 0);"
        " parameters.ratio: must be a finite number; parameters.mode: must be one of ['fast', 'exact'] (got 'slow');"
        " parameters.folder: Path must stay inside the workspace ('..' is not allowed): 'a/../../b';"
        " parameters.loud: must be true or false"
    )


def test_a_bad_default_is_refused_when_the_hub_starts():
    with pytest.raises(ValueError, match="its default is invalid: must be at most 5"):
        ParameterSpec(type="int", default=9, max=5)


def test_a_parameter_is_labelled_by_its_label_or_its_name_made_readable():
    jt = parse_job_types(
        {
            "b": {
                "interactive": False,
                "cmd": ["run", "{max_rows}", "{HTTP_port}", "{x}"],
                "parameters": {
                    "max_rows": {"type": "int"},
                    "HTTP_port": {"type": "int"},
                    "x": {"type": "string", "label": "Search for"},
                },
            }
        },
        ["local"],
    )["b"]
    labels = [p["label"] for p in jt.public_model()["parameters"]]
    assert labels == ["Max rows", "HTTP port", "Search for"]


@pytest.mark.parametrize("label", ["x" * 81, "two\nlines", 3])
def test_a_bad_label_stops_the_hub(label):
    with pytest.raises(ValueError, match=r"parameters\.x\.label"):
        parse_job_types(
            {"b": {"interactive": False, "cmd": ["run", "{x}"], "parameters": {"x": {"type": "int", "label": label}}}},
            ["local"],
        )


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"cmd": ["run", "--x={x}"], "parameters": {"x": {"type": "int"}}}, "must be a whole argv item"),
        ({"cmd": ["run", "{y}"], "parameters": {"x": {"type": "int"}}}, "names 'y', which is no parameter"),
        ({"cmd": ["run"], "env": {"A": "{nope}"}}, "env 'A' names 'nope'"),
        ({}, "needs its command: cmd"),
        ({"cmd": ["run"], "parameters": {"1x": {"type": "int"}}}, "parameter name '1x'"),
    ],
)
def test_a_template_that_cannot_be_rendered_as_meant_stops_the_hub(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_job_types({"b": {"interactive": False, **spec}}, ["local"])


def test_interactive_job_types_take_no_parameters():
    with pytest.raises(ValueError, match="parameters are for batch job types"):
        parse_job_types({"lab": {"parameters": {"x": {"type": "int"}}}}, ["local"])


def test_each_value_is_one_argument_and_groups_drop_out():
    cmd = ["prog", "{text}", "{count}", ["--mode", "{mode}"], ["--loud", "{loud}"], ["--ratio", "{ratio}"], "{loud}"]
    hostile = "; rm -rf / $(id)\n`x`"
    values = {"text": hostile, "count": 3, "mode": "exact", "loud": True, "ratio": None}
    assert render_argv(cmd, values) == ["prog", hostile, "3", "--mode", "exact", "--loud", "true"]
    values.update(loud=False, ratio=0.25)
    assert render_argv(cmd, values) == ["prog", hostile, "3", "--mode", "exact", "--ratio", "0.25", "false"]


def test_env_values_embed_placeholders_and_every_parameter_is_passed():
    env = render_env({"A": "<{text}|{missing}>"}, {"text": "$(id)", "loud": True, "job_id": 7})
    assert env == {"A": "<$(id)|>", "UWS_PARAM_TEXT": "$(id)", "UWS_PARAM_LOUD": "true"}


T0 = datetime(2026, 1, 1)


def jobs(owner, count, start=0, resource="local"):
    return [Waiting(owner * 1000 + start + i, owner, resource) for i in range(count)]


def test_round_robin_across_users_fifo_within_each():
    # ann launched 500 jobs, then ben one: with one slot free, ben's goes first (ann holds 8)
    waiting = jobs(1, 500) + jobs(2, 1)
    assert plan_starts(waiting, {1: 8}, {1: T0}, lambda u: None, {"local": 1}) == [2000]
    # with 4 slots: ben's one, then ann's oldest ones
    assert plan_starts(waiting, {1: 8}, {1: T0}, lambda u: None, {"local": 4}) == [2000, 1000, 1001, 1002]


def test_ties_go_to_who_started_least_recently():
    waiting = jobs(1, 3) + jobs(2, 3)
    order = plan_starts(waiting, {}, {1: T0 + timedelta(seconds=5), 2: T0}, lambda u: None, {"local": 6})
    assert order == [2000, 1000, 2001, 1001, 2002, 1002]


def test_a_users_quota_bounds_their_own_jobs_only():
    waiting = jobs(1, 5) + jobs(2, 5)
    order = plan_starts(waiting, {1: 1}, {}, lambda u: 2, {"local": None})
    assert sorted(order) == [1000, 2000, 2001]


def test_a_full_resource_holds_its_jobs_and_lets_others_pass():
    waiting = jobs(1, 2, resource="local") + jobs(1, 2, start=2, resource="slurm")
    assert plan_starts(waiting, {}, {}, lambda u: None, {"local": 0, "slurm": None}) == [1002, 1003]


def test_simulated_queue_of_two_users_with_two_slots_alternates():
    """20 jobs of two users, each limited to 2, the hub to 2: starts alternate once both wait."""
    waiting = jobs(1, 10) + jobs(2, 10)
    held, last, running, started = {}, {}, [], []
    clock = T0
    while waiting or running:
        for job in plan_starts(waiting, held, last, lambda u: 2, {"local": 2 - len(running)}):
            w = next(w for w in waiting if w.job_id == job)
            waiting.remove(w)
            running.append(w)
            started.append(w)
            held[w.owner_id] = held.get(w.owner_id, 0) + 1
            clock += timedelta(seconds=1)
            last[w.owner_id] = clock
        done = running.pop(0)
        held[done.owner_id] -= 1
    owners = [w.owner_id for w in started]
    assert owners == [1, 2] * 10
    for owner in (1, 2):
        ids = [w.job_id for w in started if w.owner_id == owner]
        assert ids == sorted(ids)


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 10, None),
        ("bytes=0-3", 10, (0, 4)),
        ("bytes=4-", 10, (4, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-99", 10, (5, 10)),
    ],
)
def test_ranges(header, size, expected):
    assert parse_range(header, size) == expected


def test_ranges_past_the_end_or_malformed_are_refused():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=10-", 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 10)
    for bad in ("bytes=-", "bytes=1-2,4-5", "lines=1", "bytes=a-b"):
        with pytest.raises(UWSError):
            parse_range(bad, 10)


def test_a_follow_sends_whole_lines_until_the_end():
    assert complete_lines(b"a\nb\npartial", final=False) == b"a\nb\n"
    assert complete_lines(b"partial", final=False) == b""
    assert complete_lines(b"a\npartial", final=True) == b"a\npartial"


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"exit_code": 0}, ("completed", "The command exited with status 0")),
        ({"exit_code": 3}, ("failed", "The command exited with status 3")),
        ({"exit_code": None, "signal": 9}, ("failed", "The command was killed by signal 9 (SIGKILL) — out of memory?")),
        ({"exit_code": None, "signal": 15, "stopped": True}, ("cancelled", "Stopped on request")),
        (
            {"exit_code": None, "signal": 15, "time_limit": True, "time_limit_seconds": 60},
            ("failed", "The job reached its time limit of 60 s and was stopped (signal 15 (SIGTERM))"),
        ),
        (
            {"exit_code": 1, "memory_exceeded": True, "memory_limit": "rlimit"},
            (
                "failed",
                "The job went over its memory limit of 2G: an allocation failed (RLIMIT_AS);"
                " it ended with exit status 1",
            ),
        ),
        (
            {"exit_code": None, "signal": 9, "memory_exceeded": True, "memory_limit": "cgroup"},
            (
                "failed",
                "The job went over its memory limit of 2G: the kernel ended it (cgroup v2 memory.max);"
                " it ended with signal 9 (SIGKILL)",
            ),
        ),
        (
            {"exit_code": 127, "error": "cannot run 'x': No such file or directory"},
            ("failed", "The command could not be run: cannot run 'x': No such file or directory"),
        ),
    ],
)
def test_an_exit_record_reads_as_an_outcome_and_a_reason(record, expected):
    assert describe_exit({"signal": None, **record}, "2G") == expected


def test_a_failure_reads_as_memory_only_with_an_allocation_message():
    assert memory_failure(1, "Traceback ...\nMemoryError\n")
    assert memory_failure(None, "terminate called after throwing an instance of 'std::bad_alloc'")
    assert not memory_failure(0, "MemoryError handled, all fine")
    assert not memory_failure(1, "ValueError: bad input")


def test_cpus_go_to_the_least_used_first():
    assert pick_cpus(2, [0, 1, 2, 3], {0: 2, 1: 1}) == [2, 3]
    assert pick_cpus(3, [0, 1, 2, 3], {0: 2, 1: 1}) == [1, 2, 3]
    assert pick_cpus(8, [0, 1], {}) == [0, 1]


# ---------------------------------------------------------------- the job wrapper's start-up
def test_the_wrapper_starts_without_json_re_or_enum():
    """The wrapper runs once per batch job, so its start-up is paid per job: it imports
    none of the modules that pull in ``re`` and ``enum`` (half of its start-up time)."""
    probe = (
        f"import sys; sys.path.insert(0, {os.path.dirname(wrapper.__file__)!r}); import wrapper;"
        " print(sorted(m for m in ('json', 're', 'enum', 'signal') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_wrapper_runs_from_its_cached_code_not_its_source(tmp_path):
    """Every server with limits and every batch job started without the launcher starts
    the wrapper in a new interpreter: it runs the code the hub's import cached in
    ``__pycache__`` (a script's source is compiled at each start, ~18 ms). Shown with a
    copy whose source is then replaced, same size and time, by text that does not compile:
    only the cached code can run."""
    source = tmp_path / "wrapper.py"
    shutil.copyfile(wrapper.__file__, source)
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)), doraise=True)
    stat = source.stat()
    source.write_bytes(b"(" * stat.st_size)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    argv = wrapper_argv("--exec", "{}", "--", sys.executable, "-c", "print('the server ran')", path=str(source))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "the server ran\n"), out.stderr


def test_the_wrapper_writes_no_bytecode_where_the_hub_writes_none(tmp_path, monkeypatch):
    """Without its cached code (a fresh or read-only install) the wrapper compiles its
    source and, as the hub's own import would, caches it; but not when the hub runs with
    ``PYTHONDONTWRITEBYTECODE`` (or ``-B``), which ``-I`` would have the wrapper ignore:
    nothing is written into the hub's installation behind its administrator's back."""
    source = tmp_path / "wrapper.py"
    shutil.copyfile(wrapper.__file__, source)
    run = [sys.executable, "-c", "print('ran')"]
    for dont_write, cached in ((True, False), (False, True)):
        monkeypatch.setattr(sys, "dont_write_bytecode", dont_write)
        out = subprocess.run(
            wrapper_argv("--exec", "{}", "--", *run, path=str(source)), capture_output=True, text=True, timeout=30
        )
        assert (out.returncode, out.stdout) == (0, "ran\n"), out.stderr
        assert os.path.exists(importlib.util.cache_from_source(str(source))) == cached, dont_write


def _end_descendants_in_a_subreaper(command: str) -> list[str]:
    """What a fresh subreaper process prints after it ran ``command`` (``sh -c``), waited
    for it, and called :func:`wrapper.end_descendants`: whether it looked through
    ``/proc`` for children, then the pids of the processes the command left that still
    live. The command prints the pid of anything it leaves behind."""
    probe = f"""
import ctypes, os, subprocess, sys
sys.path.insert(0, {os.path.dirname(wrapper.__file__)!r})
import wrapper
ctypes.CDLL(None).prctl(wrapper.PR_SET_CHILD_SUBREAPER, 1)
looked = []
children = wrapper.children
wrapper.children = lambda pid: looked.append(pid) or children(pid)
left = subprocess.run(["sh", "-c", {command!r}], capture_output=True, text=True).stdout.split()
wrapper.end_descendants()
print("looked" if looked else "did not look")
print(*[pid for pid in left if wrapper.process_stat(int(pid)) is not None])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split("\n")[:2]


def test_a_command_that_leaves_nothing_costs_no_look_through_every_process():
    """Mostly a job's command leaves nothing running: the wrapper then ends at once, without
    reading every process's stat to find children it has not got (milliseconds a job)."""
    assert _end_descendants_in_a_subreaper("true") == ["did not look", ""]


def test_what_a_command_leaves_in_a_session_of_its_own_is_killed():
    """What the command leaves running (here a ``setsid`` daemon out of its group) is the
    subreaper's child once the command ended, and is killed and reaped."""
    command = "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!"
    assert _end_descendants_in_a_subreaper(command) == ["looked", ""]


def test_what_a_command_leaves_looking_ended_is_killed():
    """A process whose first thread ended while another runs on (``pthread_exit`` in
    ``main``) reads as a zombie in ``/proc``, and cannot be reaped until its last thread
    ends: the wrapper took it for ended, and waited for it forever, so the job ran on past
    its end, its time limit and its stop (the wrapper's end left it running)."""
    ghost = (
        "import ctypes, threading, time; threading.Thread(target=time.sleep, args=(600,)).start();"
        " ctypes.CDLL(None).pthread_exit(None)"
    )
    command = f"setsid {sys.executable} -c '{ghost}' </dev/null >/dev/null 2>&1 & echo $!; sleep 0.5"
    assert _end_descendants_in_a_subreaper(command) == ["looked", ""]


@pytest.mark.parametrize(
    "value",
    [
        {"started": 1764912345.123456, "cpus": [0, 3], "memory_bytes": None, "stopped": False, "time_limit": True},
        {"error": "cannot run 'x': No such file or directory", "exit_code": 127, "signal": None},
        {"text": 'quotes " backslash \\ newline \n tab \t unicode é \u2028 \U0001f600', "big": 2**70, "tiny": 1e-7},
        [],
        {},
    ],
)
def test_the_wrappers_json_is_json(value):
    assert json.loads(wrapper.dumps(value)) == value
    assert wrapper.loads(json.dumps(value)) == value
    assert wrapper.loads(json.dumps(value, indent=2).encode()) == value


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "nul", "[1,]"])
def test_the_wrapper_refuses_what_is_not_json(text):
    with pytest.raises(ValueError):
        wrapper.loads(text)


# ---------------------------------------------------------------- the resident launcher
def _launch_jobs(tmp_path, launcher, commands):
    from uws_hub.spawners.localjob import JobFiles, claim, start

    started = []
    for job_id, argv in commands:
        files = JobFiles(str(tmp_path), job_id)
        lock_fd = claim(files)
        env = {"PATH": os.defpath}
        spec = {"argv": argv, "cwd": str(tmp_path), "env": env, "kill_grace_seconds": 1}
        try:
            started.append((files, start(files, lock_fd, spec, hub_id="unit", launcher=launcher)))
        finally:
            os.close(lock_fd)
    return started


def _ended(files, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (record := files.read_exit()) is None:
        assert time.monotonic() < deadline, f"job {files.job_id} did not end"
        time.sleep(0.02)
    return record


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def test_the_launcher_forks_each_wrapper_names_its_job_and_reaps_it(tmp_path):
    import logging

    from uws_hub.spawners.localjob import Launcher

    launcher = Launcher(logging.getLogger("test"), hub_id="unit")
    try:
        jobs = _launch_jobs(
            tmp_path, launcher, [(7, ["sleep", "2"]), *[(i, ["sh", "-c", "echo $0", "hi"]) for i in (8, 12345)]]
        )
        sleeping = jobs[0][1]
        assert sleeping.proc is None and sleeping.pidfd is not None
        os.close(sleeping.pidfd)
        # the forked wrapper names its job first thing, maybe a moment after its pid came back
        # (until then it carries the launcher's placeholder, which the orphan sweep passes by)
        deadline = time.monotonic() + 5
        while True:
            with open(f"/proc/{sleeping.pid}/environ", "rb") as f:
                env = [v for v in f.read().split(b"\0") if v]
            if b"UWS_JOB_ID=" + wrapper.JOB_ID_PLACEHOLDER.encode() not in env or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert env == [
            b"PATH=" + os.defpath.encode(),
            b"LANG=C.UTF-8",
            b"UWS_HUB_ID=unit",
            b"UWS_JOB_ID=7",
            b"UWS_JOB_WRAPPER=1",
        ]
        for files, job in jobs[1:]:
            os.close(job.pidfd) if job.pidfd is not None else None
            assert _ended(files)["exit_code"] == 0
            with open(files.log) as f:
                assert f.read() == "hi\n"
        # the ended wrappers are reaped: only the sleeping one is left
        deadline = time.monotonic() + 5
        while _children(launcher.pid) != [sleeping.pid]:
            assert time.monotonic() < deadline, _children(launcher.pid)
            time.sleep(0.02)
        # it holds nothing of this process but its socket (and its own wake-up pipe)
        fds = {fd: os.readlink(f"/proc/{launcher.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{launcher.pid}/fd")}
        assert fds["0"] == os.devnull and fds["1"] == os.devnull
        assert sorted(target.split(":")[0] for fd, target in fds.items() if fd not in ("0", "1", "2")) == [
            "pipe",
            "pipe",
            "socket",
        ]
        first = launcher.pid
        os.kill(first, 9)
        # the next start replaces it; the job it forked runs on
        [(files, job)] = _launch_jobs(tmp_path, launcher, [(9, ["true"])])
        assert launcher.pid != first and job.proc is None
        assert _ended(files)["exit_code"] == 0
        assert _ended(jobs[0][0])["exit_code"] == 0
    finally:
        launcher.close()


def test_a_launcher_that_cannot_start_leaves_the_jobs_to_their_own_interpreters(tmp_path, caplog):
    import logging

    from uws_hub.spawners.localjob import Launcher

    launcher = Launcher(logging.getLogger("test"), python="/bin/false", hub_id="unit")
    [(files, job)] = _launch_jobs(tmp_path, launcher, [(3, ["true"])])
    job.proc.wait()
    assert _ended(files)["exit_code"] == 0
    assert "cannot be started" in caplog.text
    launcher.close()


def _signals_ignored_here() -> int:
    """The mask of signals this process ignores, without those Python itself ignores."""
    with open("/proc/self/status") as f:
        [line] = [line for line in f if line.startswith("SigIgn:")]
    mask = int(line.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        mask &= ~(1 << (sig - 1))
    return mask


@pytest.mark.parametrize("resident", [True, False])
def test_a_jobs_command_starts_with_no_signal_ignored(tmp_path, resident):
    """review3: Python ignores SIGPIPE and SIGXFSZ at its start and an exec keeps what is
    ignored: the wrapper's command had them ignored (``yes | head -n 1`` ended with
    "yes: standard output: Broken pipe"), launched or not. Failed before."""
    import logging

    from uws_hub.spawners.localjob import Launcher

    launcher = Launcher(logging.getLogger("test"), hub_id="unit") if resident else None
    try:
        script = "grep SigIgn /proc/self/status; yes | head -n 1"
        [(files, job)] = _launch_jobs(tmp_path, launcher, [(5, ["sh", "-c", script])])
        assert _ended(files)["exit_code"] == 0
        with open(files.log) as f:
            ignored_line, output = f.read().split("\n", 1)
        assert output == "y\n"  # no "Broken pipe"
        ignored = int(ignored_line.split("\t")[1], 16)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored in the job's command"
        # what the hub's own parent ignored (a shell's background job: SIGINT, SIGQUIT) is
        # the environment's, kept as subprocess keeps it; nothing else is added
        assert ignored & ~_signals_ignored_here() == 0
    finally:
        if launcher is not None:
            launcher.close()


def test_the_pidfd_the_launcher_answers_is_close_on_exec(tmp_path):
    """review3: the hub receives a pidfd of each wrapper; like every descriptor of the hub's
    it must not pass to what the hub runs (a user's command through setpriv). Failed before:
    recv_fds without MSG_CMSG_CLOEXEC made it inheritable."""
    import fcntl
    import logging

    from uws_hub.spawners.localjob import Launcher

    launcher = Launcher(logging.getLogger("test"), hub_id="unit")
    try:
        [(files, job)] = _launch_jobs(tmp_path, launcher, [(6, ["true"])])
        assert job.pidfd is not None
        try:
            assert fcntl.fcntl(job.pidfd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        finally:
            os.close(job.pidfd)
        assert _ended(files)["exit_code"] == 0
    finally:
        launcher.close()


def test_a_spec_larger_than_the_launchers_socket_takes_starts_all_the_same(tmp_path):
    """review3: a job's spec is one message on the launcher's socket, which takes at most
    its send buffer (wmem_default, ~200 KB): long parameter values (non-ASCII ones are 6
    bytes each in JSON) made the start fail with "Message too long" where a wrapper of its
    own reads any size from its stdin. Failed before (OSError EMSGSIZE)."""
    import logging

    from uws_hub.spawners.localjob import JobFiles, Launcher, claim, start

    launcher = Launcher(logging.getLogger("test"), hub_id="unit")
    try:
        # 360 KB of JSON (over the socket's buffer), 1.4 MB (over what the launcher reads)
        count = "import os; print(sum(len(v) for k, v in os.environ.items() if k.startswith('BIG')))"
        for job_id, variables in ((11, 1), (12, 4)):
            files = JobFiles(str(tmp_path), job_id)
            lock_fd = claim(files)
            env = {"PATH": os.defpath, **{f"BIG{i}": "\u00e9" * 60_000 for i in range(variables)}}
            spec = {"argv": [sys.executable, "-c", count], "cwd": str(tmp_path), "kill_grace_seconds": 1, "env": env}
            try:
                job = start(files, lock_fd, spec, hub_id="unit", launcher=launcher)
            finally:
                os.close(lock_fd)
            assert job.proc is not None  # its own interpreter
            job.proc.wait()
            assert _ended(files)["exit_code"] == 0
            with open(files.log) as f:
                assert f.read() == f"{60_000 * variables}\n"
        # the launcher still serves the next job
        [(files, job)] = _launch_jobs(tmp_path, launcher, [(13, ["true"])])
        assert job.proc is None and _ended(files)["exit_code"] == 0
    finally:
        launcher.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switches accounts: the hub runs as root")
def test_between_the_account_switch_and_the_exec_the_job_cannot_read_its_process(tmp_path):
    """review3: a forked wrapper's command process holds the launcher's memory (where other
    jobs' specs were) from the account switch until its exec; the switch clears its dumpable
    flag, so the job's account can neither read its memory nor its environment then (what
    docs/security.md says of the launcher). Holds; guards it."""
    nobody = pwd.getpwnam("nobody")
    ready, go = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(ready)
            wrapper.apply_limits({"uid": nobody.pw_uid, "gid": nobody.pw_gid, "groups": []})
            dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
            os.write(go, str(dumpable).encode())
            os.close(go)
            time.sleep(5)
        finally:
            os._exit(0)
    os.close(go)
    try:
        assert os.read(ready, 8) == b"0"
        as_nobody = [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        for what in ("mem", "environ"):
            tried = subprocess.run(
                ["setpriv", *as_nobody, "cat", f"/proc/{child}/{what}"], capture_output=True, text=True
            )
            assert tried.returncode != 0 and "Permission denied" in tried.stderr, (what, tried)
        # after an exec the process is the account's to read: what the test would see
        after = subprocess.Popen(["setpriv", *as_nobody, "sleep", "5"])
        try:
            while open(f"/proc/{after.pid}/cmdline", "rb").read().split(b"\0")[0] != b"sleep":
                time.sleep(0.01)  # until setpriv exec'd it
            seen = subprocess.run(["setpriv", *as_nobody, "cat", f"/proc/{after.pid}/environ"], capture_output=True)
            assert seen.returncode == 0, seen
        finally:
            after.kill()
            after.wait()
    finally:
        os.close(ready)
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_the_example_batch_job_counts_in_words(tmp_path, monkeypatch, capsys):
    """The shipped count-lines job's log says "1 file, 1 line", not "1 files, 1 lines"."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "one.txt").write_text("only line\n")
    monkeypatch.setenv("UWS_RESULTS_DIR", str(tmp_path))
    assert count_lines.main([str(tmp_path / "data")]) == 0
    log = capsys.readouterr().out
    assert "one.txt: 1 line\n" in log
    assert f"1 file, 1 line; wrote {tmp_path / 'line_counts.csv'}" in log


# ---------------------------------------------------------------- the command's child
def test_the_commands_child_imports_nothing_before_the_exec(tmp_path):
    """The command's child of each batch job is a fork of the wrapper: every object it
    touches costs a copied page. ``os.execvpe`` imported ``warnings`` there (its PATH
    search, ``os.get_exec_path``), a tenth of the child's CPU before the exec."""
    probe = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(wrapper.__file__)!r})
import wrapper
before = set(sys.modules)
read, write = os.pipe()
def execve(path, argv, env):
    os.write(write, repr(sorted(set(sys.modules) - before)).encode())
    os._exit(0)
os.execve = execve
spec = {{"argv": ["true"], "env": {{"PATH": os.defpath}}, "cwd": {str(tmp_path)!r},
         "lock_fd": os.open(os.devnull, os.O_RDONLY), "wrapper_pid": os.getpid()}}
pid = os.fork()
if pid == 0:
    wrapper.Wrapper(spec).exec_child(write)
os.close(write)
os.waitpid(pid, 0)
print(os.read(read, 4096).decode())
"""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    "name, path",
    [
        ("prog", "{no_exec}:{exec}"),  # a file that cannot be run is passed over
        ("prog", "{no_exec}"),  # ... and its error told when nothing else is found
        ("prog", "{missing}:{exec}"),
        ("prog", "{missing}"),
        ("prog", "{file}:{exec}"),  # a PATH entry that is a file, not a directory
        ("prog", ""),  # an empty entry: the current directory
        ("{exec}/prog", "{missing}"),  # a name with a slash is not looked for
        ("{no_exec}/prog", "{exec}"),
        ("absent", "{exec}"),
    ],
)
def test_the_wrappers_path_search_finds_what_os_execvpe_finds(tmp_path, name, path):
    dirs = {k: tmp_path / k for k in ("exec", "no_exec", "missing")}
    for key in ("exec", "no_exec"):
        dirs[key].mkdir()
        prog = dirs[key] / "prog"
        prog.write_text(f"#!/bin/sh\necho {key}\n")
        prog.chmod(0o755 if key == "exec" else 0o644)
    (tmp_path / "file").write_text("")
    names = {**{k: str(v) for k, v in dirs.items()}, "file": str(tmp_path / "file")}
    name, path = name.format(**names), path.format(**names)
    outcomes = []
    for call in ("os.execvpe", "wrapper.execvpe"):
        probe = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(wrapper.__file__)!r})
import wrapper
try:
    {call}({name!r}, [{name!r}], {{"PATH": {path!r}}})
except OSError as e:
    print(type(e).__name__, e.errno)
"""
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, cwd=dirs["exec"], timeout=30
        )
        outcomes.append((out.stdout, out.returncode))
    assert outcomes[0] == outcomes[1]


def test_a_command_that_exited_with_0_has_its_log_left_unread(tmp_path, monkeypatch):
    """Under ``RLIMIT_AS`` only a failed command is looked for an allocation failure: the
    wrapper read the end of every job's log, a file opened and read per job."""
    log = tmp_path / "job.log"
    log.write_text("MemoryError\n")
    job = wrapper.Wrapper({"memory_bytes": 1 << 30, "log_path": str(log)})
    read = []
    monkeypatch.setattr(wrapper, "log_tail", lambda path: read.append(path) or log.read_text())
    assert job.memory_exceeded({"exit_code": 0}) is False
    assert read == []
    assert job.memory_exceeded({"exit_code": 1}) is True
    assert job.memory_exceeded({"exit_code": None}) is True  # a signal (a C++ abort)


def test_a_forked_wrapper_looks_up_nothing_the_launcher_found_once():
    """Each wrapper the launcher forks pays a copied page for every object it touches: it
    names its job (``UWS_JOB_ID`` in its environment) and looks libc's ``prctl`` up
    without reading ``/proc`` or making a ``ctypes.CDLL``, which the launcher did once."""
    from uws_hub.spawners.localjob import wrapper_env

    probe = f"""
import builtins, ctypes, os, sys
sys.path.insert(0, {os.path.dirname(wrapper.__file__)!r})
import wrapper
wrapper.prepare_forks()
def refused(*args, **kwargs):
    raise AssertionError("looked up again")
builtins.open = ctypes.string_at = ctypes.CDLL = refused
wrapper.name_job(42)
wrapper._prctl()
fd = os.open(f"/proc/{{os.getpid()}}/environ", os.O_RDONLY)
print([v for v in os.read(fd, 65536).split(b"\\0") if v.startswith(b"UWS_JOB_ID=")])
"""
    env = wrapper_env("unit", wrapper.JOB_ID_PLACEHOLDER)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, env=env, timeout=30)
    assert out.stdout.strip() == "[b'UWS_JOB_ID=42']", out.stderr
