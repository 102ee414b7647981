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

import os
import pwd
import subprocess

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid

from .mixins import WorkspaceSpawnerMixin


class WorkspaceLocalProcessSpawner(WorkspaceSpawnerMixin, LocalProcessSpawner):
    """Run a workspace job as a local process (entry point ``uws-local``)."""

    async def start(self):
        launch = self.take_launch()
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
