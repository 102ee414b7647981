"""Workspace jobs as local processes on the hub's machine.

Two modes, chosen by the hub per launch (``WorkspaceLaunch.system_user``):

- **system users**: the hub runs as root and each job runs as the system
  account of its owner (``setuid``), as JupyterHub's LocalProcessSpawner does;
- **single account** (the default for trying uws-hub out): every job runs as
  the hub's own account, with a per-user HOME. There is no isolation between
  users' processes in this mode; the hub still keeps users out of each other's
  workspaces, jobs and servers.

In both modes the job's working directory and server root is its workspace,
and its output goes to ``launch.log_path`` so that a failed start can be
explained with the tail of that file.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid

from .mixins import WorkspaceSpawnerMixin


class WorkspaceLocalProcessSpawner(WorkspaceSpawnerMixin, LocalProcessSpawner):
    """Run a workspace job as a local process (entry point ``uws-local``)."""

    async def start(self):
        launch = self.take_launch()
        if launch.previous_resource_id:
            # a process of an interrupted start of this job: not adoptable (its
            # port and token are unknown), so end it before starting afresh
            await self.release_leftover(launch.job_id, launch.previous_resource_id)
        log_file = None
        popen_kwargs = dict(self.popen_kwargs)
        if launch.log_path:
            log_file = open(launch.log_path, "ab", buffering=0)
            popen_kwargs.update(stdout=log_file, stderr=subprocess.STDOUT)
        self.popen_kwargs = popen_kwargs
        try:
            ip_port = await super().start()
        finally:
            if log_file is not None:
                # the child has its own copy of the descriptor
                log_file.close()
        self.report("queued", resource_id=str(self.pid))
        return ip_port

    def make_preexec_fn(self, name):
        launch = self.require_launch()
        directory = launch.directory
        become_user = set_user_setuid(launch.system_user, chdir=False) if launch.system_user else None

        def preexec():
            if become_user is not None:
                become_user()
            os.chdir(directory)

        return preexec

    def user_env(self, env):
        launch = self.require_launch()
        if launch.system_user:
            account = pwd.getpwnam(launch.system_user)
            env["USER"] = account.pw_name
            env["HOME"] = account.pw_dir
            if account.pw_shell:
                env["SHELL"] = account.pw_shell
        else:
            env["USER"] = self.user.name
            if launch.home:
                env["HOME"] = launch.home
            env["SHELL"] = "/bin/bash"
        return env

    async def release_leftover(self, job_id: int, resource_id: str) -> None:
        """Kill the process group of a server whose start the hub lost (hub restart)."""
        pid = int(resource_id)
        if not _is_job_process(pid, job_id):
            return
        self.log.warning("Killing leftover server process %s of job %s", pid, job_id)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(int(wait / 0.1)):
                if not _is_job_process(pid, job_id):
                    return
                await asyncio.sleep(0.1)


def _is_job_process(pid: int, job_id: int) -> bool:
    """Whether ``pid`` is alive and runs job ``job_id`` (its environment says so).

    Checking the environment means a recycled pid of another process is
    never touched.
    """
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z" and f"UWS_JOB_ID={job_id}".encode() in env
