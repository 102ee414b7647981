"""The single-node SLURM cluster of the tests (``scripts/slurm-up.sh``), and the
SLURM commands tests use to look at it and act on it from outside the hub."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from .hubutil import REPO

SLURM_UP = REPO / "scripts" / "slurm-up.sh"


def start_cluster() -> str | None:
    """Start the cluster (idempotent: a no-op when it runs); None if it is up, else why not."""
    if os.geteuid() != 0:
        return "the SLURM tests start a single-node cluster and need root"
    try:
        r = subprocess.run(["bash", str(SLURM_UP), "up"], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"scripts/slurm-up.sh up failed: {e}"
    if r.returncode != 0:
        return f"scripts/slurm-up.sh up failed (exit {r.returncode}):\n{r.stderr[-3000:]}"
    return None


def hub_config(job_types: dict) -> str:
    """A hub's configuration for batch jobs on the cluster, as real system users, followed
    closely (1 s cycles), with a job log directory of its own where the jobs' accounts can
    reach their output folders (the tests' own temporary folders are root's only)."""
    return f"""
c.UWSHub.system_users = True
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.resource_spawners = {{"local": "uws-local", "slurm": "uws-slurm"}}
c.SlurmPoller.poll_interval_seconds = 1
c.SlurmPoller.fast_poll_interval_seconds = 0.5
c.UWSHub.job_types = {job_types!r}
c.UWSHub.job_log_dir = {tempfile.mkdtemp(prefix="uws-slurm-logs-")!r}
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check)


def job_info(job_id: str) -> dict[str, str]:
    """squeue's view of one job (finished ones too): state, reason, node, user, name, time
    limit (``%l``: ``1:00`` is a minute), comment."""
    out = run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r|%N|%u|%j|%l|%k", check=False).stdout.strip()
    if not out:
        return {}
    state, reason, node, user, name, time_limit, comment = out.split("|", 6)
    return {
        "state": state,
        "reason": reason,
        "node": node,
        "user": user,
        "name": name,
        "time_limit": time_limit,
        "comment": comment,
    }


def jobs_named(name: str) -> list[str]:
    """Ids of every job (finished ones too) with this name."""
    out = run("squeue", "-h", "-t", "all", "-n", name, "-o", "%i", check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def sbatch(*args: str, script: str = "#!/bin/sh\nsleep 600\n", account: str | None = None) -> str:
    """Submit a job as root (or as ``account``, from /tmp), outside any hub; returns its id."""
    as_account = ["runuser", "-u", account, "--"] if account else []
    r = subprocess.run(
        [*as_account, "sbatch", "--parsable", "--output=/dev/null", *args],
        input=script,
        cwd="/tmp" if account else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return r.stdout.strip().split(";")[0]


def free_memory_mb(node: str = "localhost") -> int:
    """Memory of the node not allocated to jobs (SLURM's view), in MB."""
    out = run("scontrol", "show", "node", node).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return int(fields["RealMemory"]) - int(fields["AllocMem"])


def scancel(*ids: str) -> None:
    if ids:
        run("scancel", *ids, check=False)


def release(job_id: str) -> None:
    run("scontrol", "release", job_id)


#: the job types of the session's time-limit hub (tests/conftest.py ``slurm_time_limits``):
#: a server (the minimal test server), a batch command and a UWS job, each to be ended by
#: SLURM at its time limit
TIME_LIMIT_JOB_TYPES = {
    "minimal": {
        "cmd": [sys.executable, str(REPO / "tests" / "minimal_server.py")],
        "resources": ["slurm"],
        "limits": {"cpus": 2, "memory": "1G", "gpus": 0, "time_limit": "10", "partitions": ["debug"]},
        "default_resources": {"cpus": 1, "memory": "128M", "time_limit": "5"},
    },
    "timed": {
        "interactive": False,
        "resources": ["slurm"],
        "default_resources": {"cpus": 1, "memory": "128M"},
        "cmd": [sys.executable, str(REPO / "tests" / "batch_job.py"), "sleep", "600"],
        "time_limit_seconds": 60,
    },
    "sleep": {
        "interactive": False,
        "resources": ["slurm"],
        "default_resources": {"cpus": 1, "memory": "128M"},
        "cmd": [sys.executable, str(REPO / "tests" / "batch_job.py"), "sleep", "{seconds}"],
        "parameters": {"seconds": {"type": "float", "default": 1, "min": 0, "max": 600}},
    },
}
