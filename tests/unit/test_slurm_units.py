"""The SLURM spawner's knowledge, without SLURM: parsing squeue/sacct output,
the batch script, how SLURM's ends map to job outcomes, resource limits, and
the shared poller driven by scripted squeue/sacct commands (batchspawner's
``run_command`` fake, as real programs: one call per cycle, whatever the
number of jobs; a failing squeue retried with backoff, never ending a job)."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from uws_hub.errors import Unprocessable
from uws_hub.jobs.launch import LaunchRequest, check_resource_limits
from uws_hub.jobs.limits import memory_bytes, time_limit_seconds
from uws_hub.jobs.types import parse_job_types
from uws_hub.spawners.slurm.batch import DEFAULT_BATCH_JOB_SCRIPT, SlurmBatchRunner, slurm_time
from uws_hub.spawners.slurm.commands import SlurmCommandError, as_account, run_command, setpriv_argv
from uws_hub.spawners.slurm.parsing import (
    SQUEUE_FORMAT,
    SWEEP_FORMAT,
    JobState,
    describe_batch_end,
    describe_end,
    find_orphans,
    framed,
    job_id_from_name,
    job_name,
    parse_exit_code,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    parse_sweep,
    parse_uid,
)
from uws_hub.spawners.slurm.poller import SlurmPoller, _Waiter
from uws_hub.spawners.slurm.script import (
    DEFAULT_BATCH_SCRIPT,
    WAKE_CODE,
    render_batch_script,
    script_job_id,
    token_from_script,
)


# ---------------------------------------------------------------- parsing
def test_parse_squeue():
    out = (
        "@m@101|PENDING|Resources|n/a|1:00:00|1002|\n"
        "@m@102|RUNNING|None|node7|UNLIMITED|1002|uws-port=45001\n"
        "@m@103|CANCELLED|None|node7|1:00|1002|uws-port=45002\n"
        "@m@104|TIMEOUT|TimeLimit|node8|1:00|0|a|b|c\n"
    )
    states = parse_squeue(out, "@m@")
    assert set(states) == {"101", "102", "103", "104"}
    assert states["101"] == JobState("101", "PENDING", reason="Resources", node="", time_limit="1:00:00", uid=1002)
    assert states["101"].pending and not states["101"].ended and states["101"].port is None
    assert states["102"].running and states["102"].node == "node7" and states["102"].port == 45001
    assert states["102"].reason == ""
    assert states["103"].ended and states["104"].ended
    assert states["104"].comment == "a|b|c"  # the comment is last: a '|' in it is harmless
    assert states["104"].uid == 0


def test_a_newline_in_a_comment_or_name_forges_no_other_job():
    """Accounts set their jobs' names and comments to anything, newlines too: the lines
    after one are the rest of its record, never another job's (only a line that starts
    with the call's own marker starts a record)."""
    fmt, marker = framed(SQUEUE_FORMAT)
    assert fmt.endswith(SQUEUE_FORMAT) and marker in fmt and marker != framed(SQUEUE_FORMAT)[1]
    forged = "7|CANCELLED|None|evil|1:00|5|uws-port=45009"
    out = f"{marker}6|PENDING|JobHeldUser|n/a|1:00|5|x\n{forged}\n{marker}7|PENDING|JobHeldUser|n/a|1:00|5|\n"
    states = parse_squeue(out, marker)
    assert set(states) == {"6", "7"}
    assert states["7"] == JobState("7", "PENDING", reason="JobHeldUser", time_limit="1:00", uid=5)
    assert states["6"].comment == f"x\n{forged}" and states["6"].port is None
    # a forged line for a job squeue did not list at all
    assert set(parse_squeue(f"{marker}6|PENDING|None|n/a|1:00|5|x\n{forged}\n", marker)) == {"6"}
    name = "x\n8|RUNNING|2026-01-01T00:00:00|uws-abc-job-9"
    entries = parse_sweep(f"{marker}5|PENDING|2026-01-01T00:00:00|{name}\n", marker)
    assert [(e.job_id, e.name) for e in entries] == [("5", name)]
    assert find_orphans(entries, "uws-abc-", {}) == []
    # neither an array's tasks nor a heterogeneous job's parts (ids int() refuses) are the hub's
    for job_id in ("9_[1-3]", "9_1", "9+0", "٣"):
        line = f"{marker}{job_id}|PENDING|2026-01-01T00:00:00|uws-abc-job-12\n"
        assert parse_sweep(line, marker) == [], job_id


def test_a_record_forged_with_the_marker_read_off_squeues_command_line_is_refused():
    """The marker is on squeue's command line, which every account of the hub's machine
    may read while squeue runs (``/proc/<pid>/cmdline``): one that raced it into its own
    job's comment or name forged the record of another job (its port, or a hub job's
    name the orphan sweep cancels as root). That job is printed too, and squeue prints a
    job once: the output is refused (a failed poll, tried again with another marker)."""
    marker = framed(SQUEUE_FORMAT)[1]
    forged = "7|RUNNING|None|evil|1:00|5|uws-port=45009"
    out = f"{marker}6|RUNNING|None|n1|1:00|5|x\n{marker}{forged}\n{marker}7|RUNNING|None|n2|1:00|5|uws-port=45001\n"
    with pytest.raises(ValueError, match="7 more than once"):
        parse_squeue(out, marker)
    marker = framed(SWEEP_FORMAT)[1]
    name = f"x\n{marker}8|RUNNING|2026-01-01T00:00:00|uws-abc-job-9"
    out = f"{marker}5|PENDING|2026-01-01T00:00:00|{name}\n{marker}8|RUNNING|2026-01-01T00:00:00|theirs\n"
    with pytest.raises(ValueError, match="8 more than once"):
        parse_sweep(out, marker)
    # a forged record of a job squeue does not print is harmless (none to cancel, none polled)
    out = f"{marker}5|PENDING|2026-01-01T00:00:00|x\n{marker}99|RUNNING|t|y\n"
    assert [e.job_id for e in parse_sweep(out, marker)] == ["5", "99"]


def test_port_comes_only_from_our_marker():
    assert JobState("1", "RUNNING", comment="uws-port=8888").port == 8888
    assert JobState("1", "RUNNING", comment="note, uws-port=8888").port == 8888
    assert JobState("1", "RUNNING", comment="xuws-port=8888").port is None
    assert JobState("1", "RUNNING", comment="uws-port=99999").port is None
    assert JobState("1", "RUNNING", comment="uws-port=0").port is None


def test_unknown_states_are_never_taken_for_ended():
    state = JobState("1", "SOME_NEW_STATE")
    assert not state.ended and not state.pending and not state.running


def test_parse_sacct():
    out = "7|CANCELLED by 1002|0:15|node1\n7.batch|CANCELLED|0:15|node1\n8|COMPLETED|0:0|node2\n9|FAILED|3:0|\n"
    states = parse_sacct(out)
    assert set(states) == {"7", "8", "9"}
    assert states["7"].state == "CANCELLED" and states["7"].reason == "by 1002" and states["7"].node == "node1"
    assert states["9"].exit_code == "3:0" and states["9"].ended


def test_another_uids_record_under_an_id_is_not_the_jobs_in_sacct():
    """SLURM gives a forgotten job's id again, to any account's job: sacct then lists both
    under the id, and the last line won, the other account's end taken for the hub job's.
    The uid decides (sacct's ``UID``, ``1002``; a jobcomp record's ``name(uid)``), not the
    name: slurmctld prints a new account with a freed uid under the former one's name."""
    out = (
        "7|COMPLETED|0:0|n1|2026-01-01T00:00:00|2026-01-01T00:01:00|1002\n"
        "7|FAILED|1:0|n2|2026-02-01T00:00:00|2026-02-01T00:01:00|mallory(1003)\n"
    )
    assert parse_sacct(out)["7"].uid == 1003
    mine = parse_sacct(out, {"7": 1002})["7"]
    assert (mine.state, mine.exit_code, mine.node, mine.uid) == ("COMPLETED", "0:0", "n1", 1002)
    assert parse_sacct(out.splitlines()[1], {"7": 1002}) == {}
    # a record whose uid cannot be read is no job of a known uid's
    assert parse_sacct("7|COMPLETED|0:0|n1|||\n", {"7": 1002}) == {}
    assert (parse_uid("1003"), parse_uid("alice(1002)"), parse_uid("alice"), parse_uid("1002)")) == (
        1003,
        1002,
        None,
        None,
    )


def test_parse_sbatch_and_sweep_and_names():
    assert parse_sbatch("123\n") == "123"
    assert parse_sbatch("warning: something\n124;cluster\n") == "124"
    with pytest.raises(ValueError):
        parse_sbatch("sbatch: error: Batch job submission failed")
    entries = parse_sweep(
        "@m@5|PENDING|2026-01-01T00:00:00|uws-abc-job-12\n@m@6|RUNNING|2026-01-01T00:00:01|other\n", "@m@"
    )
    assert [(e.job_id, e.name) for e in entries] == [("5", "uws-abc-job-12"), ("6", "other")]
    assert job_name("uws-abc-", 12) == "uws-abc-job-12"
    assert job_id_from_name("uws-abc-", "uws-abc-job-12") == 12
    assert job_id_from_name("uws-abc-", "uws-abd-job-12") is None
    assert job_id_from_name("uws-abc-", "uws-abc-job-12x") is None
    assert job_id_from_name("", "job-12") is None
    # names only other accounts give their jobs: ² (int() refuses it), ٣, a leading zero
    for name in ("uws-abc-job-²", "uws-abc-job-٣", "uws-abc-job-012", "uws-abc-job-0", "uws-abc-job-"):
        assert job_id_from_name("uws-abc-", name) is None, name
    assert find_orphans(parse_sweep("@m@7|RUNNING|2026-01-01T00:00:00|uws-abc-job-²\n", "@m@"), "uws-abc-", {}) == []


@pytest.mark.parametrize(
    "state, started, outcome, words",
    [
        (JobState("5", "CANCELLED"), True, "cancelled", "cancelled outside uws-hub"),
        (JobState("5", "CANCELLED", reason="by 1002"), False, "cancelled", "by 1002"),
        (JobState("5", "TIMEOUT", node="n1", time_limit="1:00"), True, "failed", "time limit of 1:00 on node n1"),
        (JobState("5", "NODE_FAIL", node="n1"), True, "failed", "its node n1 failed"),
        (JobState("5", "OUT_OF_MEMORY"), True, "failed", "ran out of memory"),
        (JobState("5", "FAILED", reason="NonZeroExitCode"), False, "failed", "ended FAILED (NonZeroExitCode)"),
        (JobState("5", "COMPLETED"), True, "completed", "its server exited"),
        (JobState("5", "COMPLETED"), False, "failed", "ended before its server answered"),
        (JobState("5", "VANISHED"), True, "failed", "no longer known to SLURM"),
        (JobState("5", "PREEMPTED"), True, "failed", "preempted"),
    ],
)
def test_describe_end(state, started, outcome, words):
    got_outcome, reason = describe_end(state, started=started)
    assert got_outcome == outcome
    assert words in reason and "SLURM job 5" in reason


# ---------------------------------------------------------------- the batch script
def script_values(**overrides):
    values = dict(
        job_name="uws-abc-job-3",
        output="/ws/.uws-jobs/job-3-%j.log",
        workdir="/ws",
        uws_job_id=3,
        partition="debug",
        runtime="1:00:00",
        memory="2G",
        nprocs="2",
        ngpus="",
        gres="",
        account="",
        qos="",
        reservation="",
        options="",
        prologue="",
        epilogue="",
        srun="",
        username="alice",
        python="/usr/bin/python3",
        scontrol="scontrol",
        wake="",
    )
    values.update(overrides)
    return values


def test_render_batch_script():
    env = {"JUPYTERHUB_API_TOKEN": "secret tok'en", "UWS_JOB_ID": "3", "PATH": "/usr/bin"}
    script = render_batch_script(
        DEFAULT_BATCH_SCRIPT, env=env, cmd=["jupyterhub-singleuser", "--x=a b"], **script_values()
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=uws-abc-job-3" in lines
    assert "#SBATCH --output=/ws/.uws-jobs/job-3-%j.log" in lines
    assert "#SBATCH --partition=debug" in lines and "#SBATCH --time=1:00:00" in lines
    assert "#SBATCH --mem=2G" in lines and "#SBATCH --cpus-per-task=2" in lines
    assert not any(line.startswith("#SBATCH --gres") for line in lines)
    assert "jupyterhub-singleuser '--x=a b'" in lines
    # the environment is exported, quoted, and the token can be read back for adoption
    assert token_from_script(script) == "secret tok'en"
    assert script_job_id(script) == 3
    # the script is valid bash
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_render_batch_script_refuses_line_breaks():
    with pytest.raises(ValueError, match="partition"):
        render_batch_script(DEFAULT_BATCH_SCRIPT, env={}, cmd=["x"], **script_values(partition="a\n#SBATCH --uid=0"))
    with pytest.raises(ValueError, match="environment variable name"):
        render_batch_script(DEFAULT_BATCH_SCRIPT, env={"A B": "1"}, cmd=["x"], **script_values())
    # an env value with a line break is quoted, not a new line of script
    script = render_batch_script(DEFAULT_BATCH_SCRIPT, env={"X": "a\nexport Y=1"}, cmd=["x"], **script_values())
    assert "\nexport Y=1'" in script and not any(line == "export Y=1" for line in script.splitlines())


# ---------------------------------------------------------------- limits
def test_memory_and_time_units():
    assert memory_bytes("512") == 512 * 1024**2
    assert memory_bytes("8G") == 8 * 1024**3 and memory_bytes("1T") == 1024**4
    assert time_limit_seconds("90") == 90 * 60
    assert time_limit_seconds("1:30") == 90
    assert time_limit_seconds("4:00:00") == 4 * 3600
    assert time_limit_seconds("1-12") == 36 * 3600
    assert time_limit_seconds("1-12:30") == 36 * 3600 + 1800
    assert time_limit_seconds("1-12:30:15") == 36 * 3600 + 1815
    for bad in ("1:2:3:4", "a", "", "1-", "-1"):
        with pytest.raises(ValueError):
            time_limit_seconds(bad)


def _job_type(**spec):
    return parse_job_types({"hpc": {"resources": ["slurm"], **spec}}, ["local", "slurm"])["hpc"]


def _check(job_type, resources):
    check_resource_limits(LaunchRequest(None, job_type, "slurm", job_type.resources_for(resources), None))


def test_limits_refuse_with_a_clear_message():
    jt = _job_type(
        limits={"cpus": 4, "memory": "8G", "gpus": 0, "time_limit": "4:00:00", "partitions": ["debug"]},
        default_resources={"cpus": 1, "memory": "1G", "partition": "debug"},
    )
    _check(jt, {})
    _check(jt, {"cpus": 4, "memory": "8192M", "time_limit": "240", "partition": "debug", "gpus": 0})
    for resources, words in [
        ({"cpus": 8}, "cpus=8 is over the limit of 4"),
        ({"memory": "9G"}, "memory=9G is over the limit of 8G"),
        ({"gpus": 1}, "gpus=1 is over the limit of 0"),
        ({"time_limit": "4:00:01"}, "time_limit=4:00:01 is over the limit of 4:00:00"),
        ({"time_limit": "1-00"}, "time_limit=1-00 is over the limit"),
        ({"partition": "gpu"}, "partition=gpu is not allowed (allowed: debug)"),
        ({"time_limit": "1:2:3:4"}, "invalid time limit"),
    ]:
        with pytest.raises(Unprocessable) as e:
            _check(jt, resources)
        assert e.value.code == 422
        assert words in e.value.message and "'hpc'" in e.value.message, e.value.message
    # defaults fill what is not asked for, requests win
    assert jt.resources_for({"cpus": 2}) == {"cpus": 2, "memory": "1G", "partition": "debug"}


def test_job_type_config_errors():
    with pytest.raises(ValueError, match="default_resources are over its limits"):
        _job_type(limits={"cpus": 2}, default_resources={"cpus": 4})
    with pytest.raises(ValueError, match="limits"):
        _job_type(limits={"cpu": 2})  # a typo is an error, not ignored
    with pytest.raises(ValueError, match="time_limit"):
        _job_type(limits={"time_limit": "1:2:3:4"})


def test_public_model_shows_limits_and_defaults():
    jt = _job_type(limits={"cpus": 4}, default_resources={"cpus": 1})
    model = jt.public_model()
    assert model["limits"] == {"cpus": 4, "memory": None, "gpus": None, "time_limit": None, "partitions": None}
    assert model["default_resources"]["cpus"] == 1


# ---------------------------------------------------------------- the poller, with scripted commands
FAKE_SLURM = textwrap.dedent(
    """\
    #!{python}
    # A scripted squeue/sacct: job states come from {state}; every call is logged.
    import json, sys
    cmd = sys.argv[1]
    args = sys.argv[2:]
    with open({calls!r}, "a") as f:
        f.write(json.dumps([cmd] + args) + "\\n")
    state = json.load(open({state!r}))
    if state.get("fail_" + cmd):
        print("slurm_load_jobs error: Unable to contact slurm controller", file=sys.stderr)
        sys.exit(1)
    ids = args[args.index("-j") + 1].split(",")
    if cmd == "squeue":
        known = [i for i in ids if i in state["squeue"]]
        if not known:
            print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
            sys.exit(1)
        fmt = args[args.index("-o") + 1]
        marker = fmt[: fmt.index("%")]  # each record starts with the call's own marker
        for i in known:
            print(marker + "|".join([i] + state["squeue"][i]))
    else:
        for i in ids:
            for record in state.get("sacct_records", {{}}).get(i, []) + [state.get("sacct", {{}}).get(i)]:
                if record:
                    print("|".join([i] + record))
    """
)


#: the uid the fake's jobs run as (squeue's ``%U``) unless said otherwise
HUB_UID = 1002


class FakeSlurm:
    def __init__(self, tmp: Path):
        self.state_file = tmp / "state.json"
        self.calls_file = tmp / "calls.log"
        self.state: dict = {"squeue": {}, "sacct": {}}
        self.save()
        script = tmp / "fake_slurm.py"
        script.write_text(
            FAKE_SLURM.format(python=sys.executable, state=str(self.state_file), calls=str(self.calls_file))
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.script = str(script)

    def save(self):
        # atomic: a cycle under way (a waiting stop polls every 10 ms) never reads half a file
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.state_file)

    def set(self, job_id, state, reason="None", node="n/a", comment="", uid=HUB_UID):
        self.state["squeue"][job_id] = [state, reason, node, "1:00:00", str(uid), comment]
        self.save()

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def poller(self, **config) -> SlurmPoller:
        return SlurmPoller(
            squeue_cmd=[self.script, "squeue"],
            sacct_cmd=[self.script, "sacct"],
            poll_interval_seconds=config.pop("poll_interval_seconds", 0.2),
            fast_poll_interval_seconds=config.pop("fast_poll_interval_seconds", 0.2),
            **config,
        )


@pytest.fixture
def fake(tmp_path):
    return FakeSlurm(tmp_path)


async def test_one_squeue_per_cycle_for_many_jobs(fake):
    ids = [str(1000 + i) for i in range(200)]
    for i in ids:
        fake.set(i, "PENDING", "Priority")
    poller = fake.poller(poll_interval_seconds=30)
    seen = []
    for i in ids:
        poller.track(i, seen.append)
    assert await poller.refresh()
    calls = fake.calls()
    assert len(calls) == 1, calls  # 200 tracked jobs: one squeue
    assert calls[0][calls[0].index("-j") + 1] == ",".join(ids)
    assert len(seen) == 200 and poller.get("1042").reason == "Priority"
    # concurrent refreshes (200 spawners polling at a hub's start) share one cycle
    results = await asyncio.gather(*(poller.refresh() for _ in range(50)))
    assert all(results) and len(fake.calls()) == 2
    await poller.close()


async def test_batch_jobs_just_submitted_wait_for_the_next_cycle(fake):
    """A burst of submitted batch jobs (``soon=False``) does not make the poller call
    ``squeue`` back to back: they are asked about at its next regular cycle."""
    fake.set("1", "RUNNING", node="n1")
    poller = fake.poller(poll_interval_seconds=30)
    poller.track("1")
    assert await poller.refresh()
    n = len(fake.calls())
    for i in range(2, 52):
        fake.set(str(i), "PENDING", "Priority")
        poller.track(str(i), exit_code=True, soon=False)
    await asyncio.sleep(0.5)
    assert len(fake.calls()) == n  # no cycle brought forward
    fake.set("99", "PENDING", "Priority")
    poller.track("99")  # a job something waits for: the next cycle comes at once
    await asyncio.wait_for(poller.wait("2", lambda s: s.pending), 5)
    assert len(fake.calls()) == n + 1 and poller.get("51").reason == "Priority"
    await poller.close()


async def test_wait_and_vanished_jobs_end_through_sacct(fake):
    fake.set("1", "PENDING", "Resources")
    fake.set("2", "RUNNING", node="n1", comment="uws-port=40000")
    poller = fake.poller()
    poller.track("1")
    poller.track("2")
    running = await asyncio.wait_for(poller.wait("2", lambda s: s.running and s.port is not None), 5)
    assert running.node == "n1" and running.port == 40000
    assert poller.get("1").pending
    # job 1 vanishes from squeue (MinJobAge): its end comes from one sacct call
    del fake.state["squeue"]["1"]
    fake.state["sacct"]["1"] = ["CANCELLED by 0", "0:0", "n1"]
    fake.save()
    ended = await asyncio.wait_for(poller.wait("1", lambda s: s.ended), 5)
    assert ended.state == "CANCELLED" and ended.reason == "by 0"
    sacct_calls = [c for c in fake.calls() if c[0] == "sacct"]
    assert len(sacct_calls) == 1 and "1" == sacct_calls[0][sacct_calls[0].index("-j") + 1]
    # ended jobs are not asked about again; a job neither command knows is VANISHED
    fake.state["squeue"] = {}
    fake.save()
    gone = await asyncio.wait_for(poller.wait("2", lambda s: s.ended), 5)
    assert gone.state == "VANISHED"
    n = len(fake.calls())
    await asyncio.sleep(0.5)
    assert len(fake.calls()) == n  # everything tracked has ended: no more calls
    await poller.close()


async def test_another_uids_job_under_a_tracked_id_is_never_the_hubs(fake):
    """SLURM gives the id of a job it forgot (slurmctld restarted without its state,
    ``FirstJobId``, ``MaxJobId`` wrapped) to the next job, any account's: the poller took
    that job for the hub's (its server running on the other's node and port, or its end
    the hub job's outcome). A record of another uid is not the tracked job's: the hub's
    job is gone from squeue, saying why, and sacct's record of it, if any, is its end."""
    other = HUB_UID + 1
    fake.set("5", "RUNNING", node="theirs", comment="uws-port=40001", uid=other)
    fake.state["sacct"]["5"] = ["RUNNING", "0:0", "theirs", "2026-02-01T00:00:00", "Unknown", str(other)]
    fake.save()
    poller = fake.poller()
    seen = []
    poller.track("5", seen.append, exit_code=True, uid=HUB_UID)
    gone = await asyncio.wait_for(poller.wait("5", lambda s: True), 5)
    assert (gone.state, gone.node, gone.port, gone.exit_code) == ("VANISHED", "", None, "")
    assert [s.state for s in seen] == ["VANISHED"]
    outcome, reason = describe_batch_end(gone)
    assert outcome == "failed" and reason == (
        f"SLURM job 5 is no longer known to SLURM: its id is another account's job now (uid {other}),"
        " SLURM gave it again (it lost its state)"
    )
    # its end in sacct (listed before the other's, as sacct lists them; jobcomp's name(uid)) is its end
    fake.state["sacct_records"] = {
        "6": [["COMPLETED", "0:0", "n1", "2026-01-01T00:00:00", "2026-01-01T00:01:00", f"hub({HUB_UID})"]]
    }
    fake.state["sacct"]["6"] = ["FAILED", "1:0", "theirs", "2026-02-01T00:00:00", "2026-02-01T00:01:00", str(other)]
    fake.set("6", "PENDING", "Priority", uid=other)
    poller.track("6", exit_code=True, uid=HUB_UID)
    ended = await asyncio.wait_for(poller.wait("6", lambda s: True), 5)
    assert (ended.state, ended.exit_code, ended.node) == ("COMPLETED", "0:0", "n1")
    # gone from squeue, only another uid's end in sacct (jobcomp/filetxt's record): not its end
    fake.state["sacct"]["7"] = ["COMPLETED", "0:0", "theirs", "2026-02-01T00:00:00", "2026-02-01T00:01:00", "x(9)"]
    fake.save()
    poller.track("7", exit_code=True, uid=HUB_UID)
    assert (await asyncio.wait_for(poller.wait("7", lambda s: True), 5)).state == "VANISHED"
    # a job of the uid tracked is the job; one tracked without a uid (from before) too
    fake.set("8", "RUNNING", node="n2", comment="uws-port=40002")
    fake.set("9", "RUNNING", node="n3", comment="uws-port=40003", uid=other)
    poller.track("8", uid=HUB_UID)
    poller.track("9")
    assert (await asyncio.wait_for(poller.wait("8", lambda s: True), 5)).port == 40002
    assert (await asyncio.wait_for(poller.wait("9", lambda s: True), 5)).port == 40003
    await poller.close()


async def test_a_job_slurmctld_forgot_is_never_running_on_sacct_s_word(fake):
    """slurmctld restarted without its state forgets its jobs; slurmdbd's records of them
    still say RUNNING or PENDING (SLURM's "runaway jobs", ``sacctmgr show runawayjobs``).
    squeue lists every job slurmctld knows (``-t all``): a job it does not list whose
    only record is not ended ran on in the hub, its server taken for running and a batch
    job's slot held, forever. It is gone (VANISHED, saying why), whatever its uid."""
    fake.state["sacct"]["3"] = ["RUNNING", "0:0", "n1", "2026-02-01T00:00:00", "Unknown", str(HUB_UID)]
    fake.state["sacct"]["4"] = ["PENDING", "0:0", "None assigned", "Unknown", "Unknown", str(HUB_UID)]
    fake.save()
    poller = fake.poller()
    poller.track("3", exit_code=True, uid=HUB_UID)
    poller.track("4")  # (a job from before uids were recorded)
    for job_id in ("3", "4"):
        gone = await asyncio.wait_for(poller.wait(job_id, lambda s: True), 5)
        assert gone.state == "VANISHED" and gone.ended
        outcome, reason = describe_batch_end(gone)
        assert outcome == "failed" and "slurmctld no longer knows it" in reason, reason
    await poller.close()


async def test_a_stop_follows_an_ending_job_to_its_end_without_a_gap():
    """While a stop waits for a job SLURM is ending (COMPLETING: its server shuts down),
    the job is followed up every 10 ms at first, then every tenth of the time waited so
    far, until the next cycle for all jobs comes first: never a fixed gap after a short
    window (it was 0.5 s after 0.25 s). A follow-up asks about the ending jobs only."""
    poller = SlurmPoller(poll_interval_seconds=5, fast_poll_interval_seconds=0.5)
    loop = asyncio.get_running_loop()
    poller._states["1"] = JobState("1", "COMPLETING")
    poller._states["2"] = JobState("2", "RUNNING")
    poller._states["3"] = JobState("3", "PENDING")
    poller._states["4"] = JobState("4", "CANCELLED")

    def schedule(job_id: str, waited: float) -> tuple[float, list[str] | None]:
        poller._waiters = [_Waiter(job_id, lambda s: s.ended, loop.create_future(), time.monotonic() - waited)]
        now = time.monotonic()
        poller._full_due = now + poller._interval()
        due, ids = poller._next()
        return due - now, ids

    assert schedule("1", 0) == (pytest.approx(0.01, abs=0.002), ["1"])
    assert schedule("1", 0.3) == (pytest.approx(0.03, abs=0.005), ["1"])
    assert schedule("1", 1) == (pytest.approx(0.1, abs=0.005), ["1"])
    # past five seconds of waiting the follow-up would come after the next cycle for all
    assert schedule("1", 60) == (pytest.approx(0.5, abs=0.005), None)
    # a stop or a start that waits for anything else: the fast interval for all jobs; a
    # job pending past the fast window: the normal one
    assert schedule("2", 0) == (pytest.approx(0.5, abs=0.005), None)
    assert schedule("2", 60) == (pytest.approx(0.5, abs=0.005), None)
    assert schedule("3", 60) == (pytest.approx(5, abs=0.005), None)
    # a job the hub has just cancelled is ending before any cycle says COMPLETING (its
    # follow-up starts at once), until a cycle sees it ended
    poller.ending("2")  # not tracked: nothing
    assert schedule("2", 0)[1] is None
    poller._listeners["2"] = []
    poller.ending("2")
    assert schedule("2", 0) == (pytest.approx(0.01, abs=0.002), ["2"])
    poller._listeners["4"] = []
    poller.ending("4")
    assert schedule("4", 0) == (pytest.approx(0.5, abs=0.005), None)
    poller._waiters = []
    assert poller._interval() == 5


async def test_a_stop_after_its_scancel_asks_slurm_about_its_job_only(fake):
    """After the hub's own scancel (``ending``), a wait for the job's end asks SLURM about
    that job only, every 10 ms at first: the next cycle for all the other jobs is not
    brought forward (with a thousand jobs tracked each is a big squeue) and keeps its pace."""
    for i in range(1, 11):
        fake.set(str(i), "RUNNING", node="n1")
    poller = fake.poller(poll_interval_seconds=300, fast_poll_interval_seconds=300)
    for i in range(1, 11):
        poller.track(str(i))
    assert await poller.refresh()
    n = len(fake.calls())
    fake.set("7", "COMPLETING", node="n1")
    poller.ending("7")

    async def end_soon():
        await asyncio.sleep(0.2)
        fake.set("7", "CANCELLED", node="n1")

    ender = asyncio.ensure_future(end_soon())
    state = await asyncio.wait_for(poller.wait("7", lambda s: s.ended), 5)
    await ender
    assert state.state == "CANCELLED"
    follow_ups = fake.calls()[n:]
    assert len(follow_ups) >= 2  # COMPLETING, then CANCELLED
    assert all(call[call.index("-j") + 1] == "7" for call in follow_ups), follow_ups
    # the other jobs keep their pace (300 s): no cycle for all of them meanwhile, and the
    # ended job is asked about no more
    await asyncio.sleep(0.3)
    assert len(fake.calls()) == n + len(follow_ups)
    assert poller.get("3").running
    # a refresh still gets a cycle for all jobs at once
    assert await poller.refresh()
    last = fake.calls()[-1]
    assert last[last.index("-j") + 1] == "1,2,3,4,5,6,8,9,10"
    await poller.close()


async def test_failing_squeue_backs_off_and_never_ends_jobs(fake):
    fake.set("7", "RUNNING", node="n1")
    poller = fake.poller(poll_interval_seconds=0.1, fast_poll_interval_seconds=0.1, backoff_max_seconds=0.8)
    changes = []
    poller.track("7", changes.append)
    assert await poller.refresh()
    fake.state["fail_squeue"] = True
    fake.save()
    before = len(fake.calls())
    await asyncio.sleep(2.0)
    failed_calls = len(fake.calls()) - before
    # 0.1, 0.2, 0.4, 0.8, 0.8 ... s apart: far fewer than 20 calls at 0.1 s
    assert 3 <= failed_calls <= 8, failed_calls
    assert poller.get("7").running and len(changes) == 1  # still running, as last seen
    assert poller.stats["failures"] >= 3
    # a refresh during backoff waits for the next retry instead of forcing one, and reports failure
    assert await asyncio.wait_for(poller.refresh(), 5) is False
    fake.state["fail_squeue"] = False
    fake.set("7", "TIMEOUT", "TimeLimit", "n1")
    ended = await asyncio.wait_for(poller.wait("7", lambda s: s.ended), 5)
    assert ended.state == "TIMEOUT"
    await poller.close()


async def test_only_unknown_ids_is_not_an_error(fake):
    poller = fake.poller()
    poller.track("99")
    assert await poller.refresh()
    assert poller.get("99").state == "VANISHED"  # squeue: "Invalid job id", sacct: nothing
    await poller.close()


async def test_commands_time_out(tmp_path):
    slow = tmp_path / "slow"
    slow.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c 'import time; time.sleep(30)'\n")
    slow.chmod(0o755)
    poller = SlurmPoller(squeue_cmd=[str(slow)], command_timeout_seconds=0.5, poll_interval_seconds=60)
    poller.track("1")
    assert await asyncio.wait_for(poller.refresh(), 5) is False
    assert poller.get("1") is None
    await poller.close()


# ---------------------------------------------------------------- batch jobs
def test_exit_codes_read_as_a_status_or_a_signal():
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:9") == (None, 9)
    assert parse_exit_code("0:0") == (0, None)
    assert parse_exit_code("") == (None, None)


@pytest.mark.parametrize(
    "state, outcome, reason",
    [
        (
            JobState("5", "COMPLETED", exit_code="0:0", node="n1"),
            "completed",
            "The command exited with status 0 (SLURM job 5 on node n1)",
        ),
        (
            JobState("5", "FAILED", "NonZeroExitCode", exit_code="3:0"),
            "failed",
            "The command exited with status 3 (SLURM job 5)",
        ),
        (
            JobState("5", "FAILED", exit_code="0:9", node="n1"),
            "failed",
            "The command was killed by signal 9 (SIGKILL) (SLURM job 5 on node n1) — out of memory?",
        ),
        (
            JobState("5", "TIMEOUT", exit_code="0:15", node="n1"),
            "failed",
            "The job reached its time limit of 60 s: SLURM stopped it (SLURM job 5 on node n1)",
        ),
        (
            JobState("5", "OUT_OF_MEMORY", exit_code="0:125"),
            "failed",
            "The job went over its memory limit of 200M: SLURM ended it (SLURM job 5)",
        ),
        (
            JobState("5", "CANCELLED", "by 1002"),
            "cancelled",
            "SLURM job 5 was cancelled outside uws-hub (scancel, by 1002)",
        ),
        (JobState("5", "COMPLETED"), "completed", "SLURM job 5 completed"),
        (JobState("5", "NODE_FAIL", node="n1"), "failed", "SLURM job 5 failed: its node n1 failed"),
    ],
)
def test_how_slurm_ends_a_batch_job(state, outcome, reason):
    assert describe_batch_end(state, time_limit="60 s", memory="200M") == (outcome, reason)


def test_slurm_time_limits():
    assert slurm_time(60) == "0-00:01:00"
    assert slurm_time(90.5) == "0-00:01:31"
    assert slurm_time(2 * 86400 + 3600) == "2-01:00:00"


def test_slurm_grants_time_limits_in_whole_minutes():
    """What the hub says a SLURM batch job gets: SLURM rounds ``--time`` up to a minute."""
    grant = SlurmBatchRunner.granted_time_limit
    assert [grant(s) for s in (0.5, 30, 60, 61, 3600)] == [60, 60, 60, 120, 3600]


def test_a_batch_jobs_script_hands_every_value_to_the_command_as_one_argument(tmp_path):
    """The rendered script, run by bash (SLURM does the same): each value one argument."""
    hostile = ["; rm -rf / #", "$(id)", "`id`", "line\nbreak", "${HOME}", "'q' \"d\"", "*", ""]
    script = render_batch_script(
        DEFAULT_BATCH_JOB_SCRIPT,
        env={"UWS_PARAM_X": "$(id)\nx"},
        cmd=[
            sys.executable,
            "-c",
            "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['UWS_PARAM_X']]))",
            *hostile,
        ],
        job_name="uws-x-job-1",
        output="/dev/null",
        workdir=str(tmp_path),
        uws_job_id=1,
        partition="",
        runtime="",
        memory="",
        nprocs="",
        gres="",
        account="",
        qos="",
        reservation="",
        options="",
        prologue="",
        epilogue="",
    )
    assert "\nexec " in script
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert json.loads(out) == [hostile, "$(id)\nx"]


async def test_a_batch_jobs_end_comes_with_its_exit_code_in_the_same_cycle(fake):
    """squeue says how a job ended, not its exit code: for jobs tracked for one, the cycle
    that sees them end asks sacct (once, for all of them); servers' jobs need none."""
    fake.set("1", "FAILED", "NonZeroExitCode", "n1")
    fake.set("2", "FAILED", "NonZeroExitCode", "n1")
    fake.set("3", "COMPLETED", node="n1")
    fake.state["sacct"] = {"1": ["FAILED", "3:0", "n1"], "2": ["FAILED", "0:9", "n1"]}
    fake.save()
    poller = fake.poller()
    poller.track("1", exit_code=True)
    poller.track("2", exit_code=True)
    poller.track("3")
    assert await poller.refresh()
    assert (poller.get("1").state, poller.get("1").exit_code, poller.get("1").reason) == (
        "FAILED",
        "3:0",
        "NonZeroExitCode",
    )
    assert poller.get("2").exit_code == "0:9" and poller.get("3").exit_code == ""
    sacct = [c for c in fake.calls() if c[0] == "sacct"]
    assert len(sacct) == 1 and sacct[0][sacct[0].index("-j") + 1] == "1,2"
    await poller.close()


# ---------------------------------------------------------------- commands as a user, the wake
def test_setpriv_argv_sets_exactly_the_given_ids():
    setpriv = setpriv_argv(1002, 1005, [1002, 1007])
    assert setpriv[1:] == ["--reuid=1002", "--regid=1005", "--groups=1002,1007", "--"]
    # no groups: cleared, never kept (root's groups would stay)
    assert setpriv_argv(1002, 1002, [])[1:] == ["--reuid=1002", "--regid=1002", "--clear-groups", "--"]


STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")


def status_of(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k in STATUS_FIELDS}


@pytest.mark.skipif(os.geteuid() != 0, reason="switches accounts: the hub runs as root")
async def test_a_command_as_a_user_has_what_popen_would_give_it():
    """sbatch, scancel, mkdir and tail as the job's account go through setpriv (so that the hub
    need not fork itself whole): the same uid, gid, groups and no capabilities as Popen's
    user/group/extra_groups, the workspace's group as the primary group."""
    assert setpriv_argv(1, 1, [1]), "setpriv (util-linux) is installed"
    account = pwd.getpwnam("nobody")
    group = grp.getgrgid(os.getgrouplist("root", 0)[0]).gr_name  # any group: as_account does not check
    popen_args = as_account(account, group)
    assert popen_args["group"] == grp.getgrnam(group).gr_gid != account.pw_gid
    ours = await run_command(["cat", "/proc/self/status"], timeout=30, **popen_args)
    popen = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True, check=True, **popen_args)
    assert status_of(ours.stdout) == status_of(popen.stdout)
    assert status_of(ours.stdout)["Uid"].split() == [str(account.pw_uid)] * 4
    assert status_of(ours.stdout)["CapEff"] == "0000000000000000"
    # a command that cannot be run is an error, as Popen's OSError was
    with pytest.raises(SlurmCommandError, match="cannot run no-such-command"):
        await run_command(["no-such-command"], timeout=30, **popen_args)
    # its own exit status is its own
    assert (await run_command(["false"], timeout=30, **popen_args)).returncode == 1


def test_the_default_script_wakes_the_hub_with_the_jobs_own_token(tmp_path):
    """The wake the default batch script sends (node_python -I -S -c WAKE_CODE): one POST to
    the job's wake route with its token, from the job's environment, nothing else."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Content-Length")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{server.server_port}/hub/api/",
            "JUPYTERHUB_API_TOKEN": "tok",
            "UWS_JOB_ID": "42",
            "PATH": os.environ["PATH"],
        }
        script = render_batch_script(DEFAULT_BATCH_SCRIPT, env={}, cmd=["x"], **script_values(wake=WAKE_CODE))
        line = next(line for line in script.splitlines() if "/wake" in line)
        assert line.startswith("( scontrol update ") and line.endswith(" ) &"), line
        subprocess.run([sys.executable, "-I", "-S", "-c", WAKE_CODE], env=env, check=True, timeout=30)
    finally:
        server.shutdown()
    assert seen == [("/hub/api/jobs/42/wake", "token tok", "0")]


async def test_a_wake_runs_a_cycle_at_once_and_is_coalesced(fake):
    fake.set("7", "PENDING", "Priority")
    poller = fake.poller(poll_interval_seconds=300, fast_poll_interval_seconds=300)
    poller.wake()  # nothing tracked: nothing to do
    await asyncio.sleep(0.2)
    assert fake.calls() == []
    poller.track("7")
    assert await poller.refresh()
    before = len(fake.calls())
    fake.set("7", "RUNNING", node="n1", comment="uws-port=4321")
    for _ in range(20):
        poller.wake()  # a burst of wakes: one cycle, long before the next poll
    for _ in range(100):
        if poller.get("7").port == 4321:
            break
        await asyncio.sleep(0.05)
    assert poller.get("7").port == 4321
    await asyncio.sleep(0.3)
    assert len(fake.calls()) - before == 1
    await poller.close()


async def test_a_stop_waiting_on_completing_follows_it_to_its_end(fake):
    fake.set("7", "COMPLETING", node="n1")
    poller = fake.poller(poll_interval_seconds=300, fast_poll_interval_seconds=300)
    poller.track("7")
    assert await poller.refresh()

    async def end_soon():
        await asyncio.sleep(0.1)
        fake.set("7", "CANCELLED", node="n1")

    ender = asyncio.ensure_future(end_soon())
    state = await asyncio.wait_for(poller.wait("7", lambda s: s.ended), 5)
    assert state.state == "CANCELLED"
    await ender
    # a job that stays COMPLETING (a server that takes its time to shut down) is still
    # followed, less and less often (see the schedule's own test): its end is seen soon
    # after, not at the next cycle of the usual pace (300 s here)
    fake.set("8", "COMPLETING", node="n1")
    poller.track("8")
    waiting = asyncio.ensure_future(poller.wait("8", lambda s: s.ended))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    fake.set("8", "CANCELLED", node="n1")
    state = await asyncio.wait_for(waiting, 5)
    assert state.state == "CANCELLED"
    await poller.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switches accounts: the hub runs as root")
async def test_a_command_as_a_user_gets_nothing_of_the_hubs_environment(monkeypatch):
    """review3: ``tail`` of a job's output runs as the job's account, and the user can read
    ``/proc/<pid>/environ`` of their own process (a FIFO for an output file holds it for the
    command's whole timeout): the hub's environment (JUPYTERHUB_CRYPT_KEY, a database URL)
    must not reach it. Failed before: ``read_tail`` passed no ``env``, so the hub's own went
    to setpriv and on to ``tail``."""
    from uws_hub.spawners.slurm.output import read_tail

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "review3-hub-secret")
    account = pwd.getpwnam("nobody")
    as_user = as_account(account)
    # what any command as a user gets
    env = (await run_command(["cat", "/proc/self/environ"], timeout=30, **as_user)).stdout
    assert "PATH=" in env and "review3-hub-secret" not in env
    # the output tail, the user's output file a FIFO: tail waits on it, the user reads its environment
    folder = tempfile.mkdtemp(prefix="uws-review3-")  # one the account can pass through
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "output.fifo")
    os.mkfifo(path, 0o666)

    class Poller:
        async def command(self, argv, **kwargs):
            return await run_command(argv, timeout=30, **kwargs)

    reading = asyncio.ensure_future(read_tail(Poller(), str(path), as_user=as_user, prefix=[]))  # type: ignore[arg-type]
    seen = None
    for _ in range(500):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:1] == [b"tail"] and os.stat(f"/proc/{pid}").st_uid == account.pw_uid:
                        # as the user, who owns the process
                        seen = subprocess.run(
                            [*setpriv_argv(account.pw_uid, account.pw_gid, []), "cat", f"/proc/{pid}/environ"],
                            capture_output=True,
                            check=True,
                        ).stdout
            except OSError:
                pass
        if seen is not None:
            break
        await asyncio.sleep(0.02)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if tail is not reading
        os.write(fd, b"the end\n")
        os.close(fd)
        assert await reading == "the end"
    finally:
        reading.cancel()
        shutil.rmtree(folder)
    assert seen is not None and b"PATH=" in seen and b"review3-hub-secret" not in seen


def test_a_servers_output_file_is_found_where_its_spawner_had_slurm_write_it():
    """At a user's deletion, their servers' SLURM output files are set aside: found from
    the job's row (its SLURM id, its account's uid, its workspace) with the spawner's
    ``output_dir``, as the spawner names them; not when no account has the uid now."""
    import logging

    from traitlets.config import Config

    from uws_hub.spawners.slurm import WorkspaceSlurmSpawner

    config = Config()
    config.WorkspaceSlurmSpawner.output_dir = "{workspace}/.out/{job_log_dir}/{username}/{job_id}"
    runner = WorkspaceSlurmSpawner.batch_runner(config, "/var/log/uws", logging.getLogger("test"), "h")
    nobody = pwd.getpwnam("nobody")
    assert runner.server_output(5, "17", nobody.pw_uid, "/ws/a") == "/ws/a/.out//var/log/uws/nobody/5/job-5-17.log"
    unused = max(p.pw_uid for p in pwd.getpwall()) + 1
    assert runner.server_output(5, "17", unused, "/ws/a") is None
