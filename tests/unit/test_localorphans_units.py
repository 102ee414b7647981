"""Finding a hub's local job processes again and ending its orphans
(uws_hub.spawners.localorphans): real processes, no hub."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import time
import uuid

from uws_hub.spawners.localorphans import JobProcess, end, end_job, find_orphans, job_processes, roots

LOG = logging.getLogger("test")

#: a parent that starts a child of the same job (a server and its kernel), then sleeps
PARENT = (
    "import subprocess, sys, time;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True);"
    "time.sleep(600)"
)


def spawn(hub_id: str, job_id: int, code: str = "import time; time.sleep(600)") -> subprocess.Popen:
    """A process of job ``job_id`` of hub ``hub_id`` running ``code``, once it printed a line."""
    env = {"PATH": os.defpath, "UWS_HUB_ID": hub_id, "UWS_JOB_ID": str(job_id)}
    code = code.replace("time.sleep(600)", "print(flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def proc(pid: int, ppid: int, job_id: int, wrapper: bool = False, start: int = 100) -> JobProcess:
    return JobProcess(pid=pid, ppid=ppid, pgid=pid, start=start, job_id=job_id, wrapper=wrapper)


def test_orphans_are_roots_of_unknown_jobs_or_older_than_their_jobs_process():
    processes = [
        proc(10, 1, job_id=1),  # the job's recorded server
        proc(11, 10, job_id=1),  # its kernel: not a root
        proc(12, 1, job_id=1, start=50),  # an earlier start of job 1, older than its server
        proc(13, 1, job_id=1, start=150),  # what the server left in the background: the job's
        proc(20, 1, job_id=2),  # a finished job's
        proc(30, 1, job_id=3),  # a job that records none, and whose start is under way here
        proc(40, 1, job_id=4),  # a job that records none, whose start the hub lost
        proc(50, 1, job_id=5, wrapper=True),  # a batch wrapper not recorded yet
        proc(51, 50, job_id=5),  # its command
        proc(60, 1, job_id=6),  # a batch command whose wrapper died
    ]
    known = {1: "10", 3: None, 4: None, 5: None, 6: "61"}
    orphans = find_orphans(processes, known, starting=lambda job_id: job_id == 3)
    assert [(p.pid, why) for p, why in orphans] == [
        (12, "an earlier start's: its job runs process 10, started later"),
        (20, "its job is finished or unknown"),
        (40, "its job records no process"),
        (60, "its job's process 61 is gone"),
    ]


def test_a_sleeping_parent_and_its_child_are_found_and_ended_other_hubs_are_not():
    hub, other = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    parent = spawn(hub, 7, PARENT)
    foreign = spawn(other, 7)
    try:
        found = []

        def both():
            found[:] = job_processes(hub)
            return len(found) == 2

        deadline = time.monotonic() + 30
        while not both() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == 2, found
        assert [p.pid for p in roots(found)] == [parent.pid]
        assert {p.job_id for p in found} == {7}
        assert job_processes(hub, 8) == []
        assert [p.pid for p in job_processes(other)] == [foreign.pid]
    finally:
        foreign.kill()
        foreign.wait()
        parent.kill()
        parent.wait()
        for p in job_processes(hub):
            os.kill(p.pid, 9)


async def test_end_job_ends_the_jobs_tree_by_sigterm():
    hub = uuid.uuid4().hex[:8]
    parent = spawn(hub, 3, PARENT)
    other_job = spawn(hub, 4)
    try:
        for _ in range(600):
            if len(job_processes(hub, 3)) == 2:
                break
            await asyncio.sleep(0.05)
        child = next(p for p in job_processes(hub, 3) if p.pid != parent.pid)
        await end_job(hub, 3, None, 5.0, LOG, "a test")
        assert parent.wait(10) == -15
        assert job_processes(hub, 3) == [], f"the child {child.pid} (a session of its own) lives on"
        assert other_job.poll() is None
    finally:
        other_job.kill()
        other_job.wait()


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace():
    hub = uuid.uuid4().hex[:8]
    stubborn = spawn(hub, 5, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")
    processes = job_processes(hub)
    await end([(p, "a test") for p in processes], processes, 0.5, LOG)
    assert stubborn.wait(10) == -9


def test_hubs_on_relative_sqlite_paths_in_two_folders_are_two_hubs(tmp_path, monkeypatch):
    from uws_hub.spawners.mixins import hub_id

    ids = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        ids.append(hub_id("sqlite:///jupyterhub.sqlite"))
        assert ids[-1] == hub_id(f"sqlite:///{tmp_path / folder / 'jupyterhub.sqlite'}")
    assert ids[0] != ids[1]
    # the ids of other databases are what they were (SLURM job names are made of them)
    for url in ("postgresql://uws:***@db/uws", f"sqlite:///{tmp_path / 'hub.sqlite'}"):
        assert hub_id(url) == hashlib.sha256(url.encode()).hexdigest()[:8]
