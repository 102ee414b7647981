"""Batch jobs as SLURM jobs: ``sbatch`` of the command itself, followed by the shared poller.

A batch job is no server: its SLURM job runs the job type's command (an
argv list, shell-quoted into the batch script, so a value is one argument
whatever it holds) and its exit status is the job's outcome. There is no
port, no token and no proxy route. The runner:

- writes the batch script (``WorkspaceSlurmSpawner.batch_job_script``) with
  the job's resources as ``#SBATCH`` options (``--time`` from the job's time
  limit) and submits it with ``sbatch`` as the job's account;
- follows every job with the hub's one shared poller
  (:class:`~uws_hub.spawners.slurm.poller.SlurmPoller`: one ``squeue`` per
  cycle for all jobs, servers and batch jobs alike), which fetches the exit
  codes of ended jobs with one ``sacct`` per cycle;
- maps SLURM's end to the outcome (:func:`.parsing.describe_batch_end`):
  ``ExitCode``, ``TIMEOUT``, ``OUT_OF_MEMORY``, ``CANCELLED``;
- sends the job's output to a file in the hub's job log directory
  (``batch_output_dir``), outside the workspace: the hub serves it to the
  job's owner and admins only, and the workspace's files API, which its
  collaborators use, never reaches it.

After a hub restart the stored SLURM id is followed again (adopted); a job
whose id the hub never stored (it died right after ``sbatch``) is found by
its name before it would be submitted again, so no job runs twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pwd
import shlex
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..batch import BatchLaunch, RunState
from .commands import as_account, check_scancel, scancel_argv
from .output import make_account_folder, remove_output, server_output_path
from .parsing import describe_batch_end, job_name, parse_exit_code, parse_sbatch
from .poller import SlurmPoller
from .script import SBATCH_RESOURCES, render_batch_script, submit_environment

DEFAULT_BATCH_JOB_SCRIPT = (
    """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --output={{ output }}
#SBATCH --open-mode=append
#SBATCH --chdir={{ workdir }}
"""
    + SBATCH_RESOURCES
    + """
# uws-hub batch job {{ uws_job_id }} in {{ workdir }}
{{ exports }}
{{ prologue }}
{% if epilogue %}# a stop's SIGTERM (scancel's, a time limit's) reaches this shell too: it waits for the
# command's own clean-up, then runs the epilogue (the command's SIGKILL comes after KillWait)
trap : TERM
{{ cmd }}
status=$?
{{ epilogue }}
exit $status
{% else %}exec {{ cmd }}
{% endif %}"""
)


def slurm_time(seconds: float) -> str:
    """A time limit in seconds as SLURM's ``--time`` (``D-HH:MM:SS``; SLURM counts whole
    minutes, rounding up)."""
    minutes, secs = divmod(int(-(-seconds // 1)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


class SlurmBatchRunner:
    """Runs batch jobs as SLURM jobs (see the module's docstring); ``settings`` is a
    :class:`~uws_hub.spawners.slurm.WorkspaceSlurmSpawner` made from the hub's config."""

    def __init__(self, settings: Any, log_dir: str, log: logging.Logger, *, hub_id: str):
        self.settings = settings
        self.log_dir = log_dir
        self.log = log
        self.prefix = settings.job_name_prefix or f"uws-{hub_id}-"
        self.poller = SlurmPoller.shared(config=settings.config, log=log)
        #: the poller's listener of each SLURM job followed, which wakes its hub job
        self._wakes: dict[str, Callable[[Any], None]] = {}
        #: SLURM jobs this process submitted that the poller has not seen yet
        self._submitted: set[str] = set()

    # ---------------------------------------------------------------- accounts and files
    @staticmethod
    def _account(launch: BatchLaunch) -> pwd.struct_passwd:
        return pwd.getpwnam(launch.system_user) if launch.system_user else pwd.getpwuid(os.geteuid())

    def _as_user(self, launch: BatchLaunch) -> dict[str, Any]:
        """Popen arguments that run a command as the job's account (the hub is root)."""
        account = self._account(launch)
        if self.settings.exec_prefix or os.geteuid() != 0 or account.pw_uid == 0:
            return {}
        return as_account(account, launch.group)

    def _prefix(self, launch: BatchLaunch) -> list[str]:
        name = self._account(launch).pw_name
        return [part.format(username=name) for part in shlex.split(self.settings.exec_prefix)]

    def _output_dir(self, launch: BatchLaunch) -> str:
        return self.settings.batch_output_dir.format(job_log_dir=self.log_dir, username=self._account(launch).pw_name)

    def log_path(self, launch: BatchLaunch) -> str:
        return os.path.join(self._output_dir(launch), f"job-{launch.job_id}.log")

    def server_output(self, job_id: int, slurm_id: str, uid: int, workspace: str) -> str | None:
        """The output file of a server (an interactive job) this resource ran as SLURM job
        ``slurm_id`` as the account of ``uid``, in ``workspace`` (its spawner's
        ``output_dir``); None if no account has the uid now (its folder's name is unknown)."""
        try:
            username = pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
        return server_output_path(
            self.settings.output_dir,
            job_log_dir=self.log_dir,
            workspace=workspace,
            username=username,
            job_id=job_id,
            slurm_id=slurm_id,
        )

    def log_owner(self, launch: BatchLaunch) -> int:
        # SLURM writes the file as the job's account
        return self._account(launch).pw_uid

    def _make_output_dir(self, launch: BatchLaunch) -> None:
        """The job's account's own folder for its output (:func:`.output.make_account_folder`)."""
        make_account_folder(
            self._output_dir(launch),
            self.log_dir,
            self._account(launch),
            self.log,
            stale=os.path.basename(self.log_path(launch)),
            holder=launch.account_holder,
        )

    # ---------------------------------------------------------------- submit
    @staticmethod
    def granted_time_limit(seconds: float) -> float:
        """SLURM keeps ``--time`` in whole minutes, rounding up (``--time=0-00:00:02`` is a
        minute): the job gets that, so the hub says so rather than the seconds asked for."""
        return math.ceil(seconds / 60) * 60

    def script(self, launch: BatchLaunch) -> str:
        res = launch.resources
        gpus = res.get("gpus")
        s = self.settings
        return render_batch_script(
            s.batch_job_script,
            env={**launch.env, "UWS_SLURM_JOB_NAME": job_name(self.prefix, launch.job_id)},
            cmd=launch.argv,
            job_name=job_name(self.prefix, launch.job_id),
            output=self.log_path(launch),
            workdir=launch.directory,
            uws_job_id=launch.job_id,
            partition=res.get("partition") or s.req_partition,
            runtime=slurm_time(launch.time_limit_seconds) if launch.time_limit_seconds else s.req_runtime,
            memory=res.get("memory") or s.req_memory,
            nprocs=str(res.get("cpus") or s.req_nprocs or ""),
            gres=f"gpu:{gpus}" if gpus else s.req_gres,
            account=s.req_account,
            qos=s.req_qos,
            reservation=s.req_reservation,
            options=s.req_options,
            prologue=s.req_prologue,
            epilogue=s.req_epilogue,
        )

    async def submit(
        self, launch: BatchLaunch, wake: Callable[[], None], *, prepare: Callable[[], None] = lambda: None
    ) -> str:
        script = self.script(launch)

        def prepare_all() -> None:
            prepare()
            self._make_output_dir(launch)

        await asyncio.to_thread(prepare_all)
        account = self._account(launch)
        # the uid SLURM gives the job (sbatch's own), stored with its id by the hub
        launch.resource_uid = account.pw_uid
        result = await self.poller.command(
            [*self._prefix(launch), *self.settings.sbatch_cmd],
            input=script,
            env=submit_environment({"HOME": account.pw_dir, "USER": account.pw_name}),
            cwd=launch.directory,
            **self._as_user(launch),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"sbatch refused the job (exit status {result.returncode}): {result.stderr.strip()[:1000]}"
            )
        slurm_id = parse_sbatch(result.stdout)
        self.log.info("Batch job %s is SLURM job %s", launch.job_id, slurm_id)
        # queued on SLURM: seen at the poller's next cycle (nothing waits for it sooner)
        self._submitted.add(slurm_id)
        self._follow(slurm_id, launch.resource_uid, wake, soon=False)
        return slurm_id

    # ---------------------------------------------------------------- follow
    def _follow(self, slurm_id: str, uid: int | None, wake: Callable[[], None], *, soon: bool = True) -> None:
        """Follow ``slurm_id`` in the shared poller, waking the job at each change of it: a
        job of ``uid`` (the one it was submitted as, if known; another uid's job that SLURM
        gave the id again is not this one)."""
        if slurm_id not in self._wakes:
            self._wakes[slurm_id] = lambda _: wake()
        self.poller.track(slurm_id, self._wakes[slurm_id], exit_code=True, soon=soon, uid=uid)

    def _unfollow(self, slurm_id: str) -> None:
        self._submitted.discard(slurm_id)
        listener = self._wakes.pop(slurm_id, None)
        if listener is not None:
            self.poller.untrack(slurm_id, listener)

    async def _find_by_name(self, launch: BatchLaunch) -> str | None:
        """The SLURM job of a hand-over whose id the hub never stored (it died right after
        ``sbatch``): the newest job with the job's name, of the account it runs as, that
        SLURM still knows. Any account may name its SLURM jobs as it likes (a job's name
        is in its environment, and job ids are counted up): another account's job named
        like this one is never taken for it, nor its outcome for this job's."""
        name = job_name(self.prefix, launch.job_id)
        account = self._account(launch)
        result = await self.poller.command(
            [*self.poller.squeue_cmd, "-h", "-t", "all", "-n", name, "-u", account.pw_name, "-o", "%i"]
        )
        if result.returncode != 0:
            raise RuntimeError(f"squeue failed looking for {name}: {result.stderr.strip()[:300]}")
        ids = [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]
        if not ids:
            return None
        launch.resource_uid = account.pw_uid  # (squeue looks the name's uid up)
        return max(ids, key=int)

    async def state(self, launch: BatchLaunch, resource_id: str | None, wake: Callable[[], None]) -> RunState:
        found = None
        if not resource_id:
            found = resource_id = await self._find_by_name(launch)
            if resource_id is None:
                return RunState("unstarted")
            self.log.warning("Batch job %s: found its SLURM job %s by name (adopted)", launch.job_id, resource_id)
        self._follow(resource_id, launch.resource_uid, wake, soon=resource_id not in self._submitted)
        state = self.poller.get(resource_id)
        if state is None and resource_id in self._submitted:
            # submitted by this process and not polled yet: queued on SLURM (``sbatch`` said
            # so); the poller's next cycle wakes the job with what SLURM says
            return RunState("queued")
        if state is None:
            await self.poller.refresh()
            state = self.poller.get(resource_id)
        self._submitted.discard(resource_id)
        if state is None:
            # SLURM does not answer: the job stays as it is (never ended by a guess)
            return RunState("queued", resource_id=found)
        if state.pending:
            why = f" ({state.reason})" if state.reason else ""
            return RunState("queued", reason=f"Pending in the SLURM queue{why}", resource_id=found)
        if not state.ended:
            return RunState("running", node=state.node or None, started_at=_local(state.start), resource_id=found)
        limit = f"{launch.time_limit_seconds:g} s" if launch.time_limit_seconds else ""
        outcome, reason = describe_batch_end(state, time_limit=limit, memory=launch.resources.get("memory") or "")
        code, sig = parse_exit_code(state.exit_code)
        self._unfollow(resource_id)
        return RunState(
            "ended",
            reason=reason,
            outcome=outcome,
            exit_code=code,
            exit_signal=sig,
            started_at=_local(state.start),
            ended_at=_local(state.end),
            node=state.node or None,
            resource_id=found,
        )

    # ---------------------------------------------------------------- stop, forget
    async def cancel(self, launch: BatchLaunch, resource_id: str | None) -> None:
        slurm_id = resource_id or await self._find_by_name(launch)
        if slurm_id is None:
            return
        self.log.info("Cancelling SLURM job %s of batch job %s", slurm_id, launch.job_id)
        argv = scancel_argv(self.settings.scancel_cmd, [slurm_id], launch.resource_uid)
        check_scancel(await self.poller.command(argv), [slurm_id])
        await self.poller.refresh()

    def forget(self, launch: BatchLaunch) -> None:
        # in the account's own folder, where it makes what it likes: a folder of that name
        # is the account's (it made the job's deletion fail for good)
        remove_output(self.log_path(launch), self.log)

    async def close(self) -> None:
        for slurm_id in list(self._wakes):
            self._unfollow(slurm_id)


def _local(value: str) -> datetime | None:
    """A time SLURM printed (its local time) as the hub stores times (naive UTC)."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None) if value else None
    except ValueError:
        return None
