"""Workspace jobs as SLURM batch jobs (entry point ``uws-slurm``).

Built on batchspawner's ``SlurmSpawner`` (its ``req_*`` traits, its state
keys and its stop loop), with what a hub needs on top, and fixes for what
does not suit JupyterHub 6 or a restartable hub:

- **One ``squeue`` per cycle for all jobs.** batchspawner runs ``squeue -j
  <id>`` per server per poll. Here every spawner reads a shared cache
  (:class:`~uws_hub.spawners.slurm.poller.SlurmPoller`) in ``poll()``.
- **No shell, timeouts.** batchspawner builds shell strings and waits forever;
  here every command is an argv list run with a timeout
  (:func:`~uws_hub.spawners.slurm.commands.run_command`).
- **Submission as the user without sudo.** With the hub as root and system
  users, ``sbatch`` runs as the job's owner (uid, gid and groups set by Popen,
  no ``sudo``, no sudoers entry); ``exec_prefix`` is empty by default.
- **The port, restart-safe.** batchspawner's ``batchspawner-singleuser``
  POSTs the port to a hub handler that ``setattr``s any spawner attribute
  from the request body and keeps it in memory only. Here the batch script
  picks a free port on its node and writes it into the job's own SLURM
  comment (``scontrol update JobId=$SLURM_JOB_ID Comment=uws-port=N``); the
  poller reads it with the job's state. It survives a hub restart, and the
  hub need not be up when the job starts. Then, in the background, the script
  *wakes* the hub (``POST /hub/api/jobs/{id}/wake`` with the job's own token):
  the poller reads the queue at once instead of at its next cycle. The wake
  carries nothing the hub uses (the port still comes from SLURM), and a wake
  that does not arrive costs only that wait
  (:meth:`WorkspaceSlurmSpawner.wake`). (batchspawner's handler, which
  importing batchspawner adds to JupyterHub's API handlers, is left out of
  the hub's routes: :meth:`WorkspaceSlurmSpawner.unwanted_hub_handlers`.)
- **Checkpoint and adoption.** JupyterHub saves spawner state only after
  ``start()`` returns. The SLURM job id is reported (``report("queued",
  resource_id=...)``) the moment ``sbatch`` returns, so the hub stores it; if
  the hub restarts while the job waits, the next start gets it as
  ``launch.previous_resource_id`` and adopts the job (no second ``sbatch``),
  reusing the API token its batch script carries (read back with ``scontrol
  write batch_script``). SLURM jobs of this hub that no job knows are
  cancelled (:meth:`WorkspaceSlurmSpawner.sweep_orphans`).
- **Why it ended.** Time limit, node failure, ``scancel`` outside the hub,
  a server that exits before it answers: each ends the job with SLURM's
  reason; the tail of the job's output file is copied to the hub's own log
  of the job, which only the job's owner and admins read (it may hold secrets).
- **No secrets in logs.** batchspawner logs the job's environment (with its
  API token) at debug level; this spawner never logs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import batchspawner.api as batchspawner_api
from batchspawner import JobStatus as BatchJobStatus
from batchspawner import SlurmSpawner
from jupyterhub import orm as hub_orm
from traitlets import Bool, Float, List, Unicode, default

from ..listening import ServerExited, wait_listening
from ..mixins import WorkspaceSpawnerMixin
from .batch import DEFAULT_BATCH_JOB_SCRIPT, SlurmBatchRunner
from .commands import as_account, check_scancel, scancel_argv
from .orphans import sweep
from .output import OUTPUT_TAIL_BYTES, keep_tail, make_account_folder, read_tail, server_output_path
from .parsing import (
    JobState,
    describe_end,
    job_name,
    parse_sbatch,
)
from .poller import SlurmPoller
from .script import (
    DEFAULT_BATCH_SCRIPT,
    WAKE_CODE,
    render_batch_script,
    script_job_id,
    submit_environment,
    token_from_script,
)

#: a job's wakes closer together than this start no cycle (one is all a start needs)
WAKE_MIN_INTERVAL_SECONDS = 1.0
#: how long a stop waits on the shared poller, in all, for SLURM to end the job it cancelled
#: (then batchspawner's stop loop asks every second, nine more times, before it gives up:
#: about as long as its ten 1 s sleeps were, without a blind second between two waits)
STOP_WAIT_SECONDS = 10.0


class WorkspaceSlurmSpawner(WorkspaceSpawnerMixin, SlurmSpawner):
    """Run a workspace job as a SLURM batch job (entry point ``uws-slurm``)."""

    #: the hub's stop of a running SLURM job is a ``scancel``: it ends ``cancelled``
    stopped_outcome = "cancelled"
    honoured_resources = ("cpus", "memory", "gpus", "time_limit", "partition")

    batch_script = Unicode(
        DEFAULT_BATCH_SCRIPT,
        config=True,
        help="""The sbatch script of a job: a Jinja2 template.

        Values: ``job_name`` (``<job_name_prefix>job-<id>``: keep it, the hub
        recognises its jobs by it), ``output`` (the output file, see
        ``output_dir``), ``workdir`` (the workspace), ``uws_job_id``,
        ``partition``, ``runtime`` (time limit), ``memory``, ``nprocs`` (CPUs),
        ``ngpus`` and ``gres`` (``gpu:N`` when GPUs are requested), each from
        the job's requested resources or else from the ``req_*`` option of the
        same name; ``account``, ``qos``, ``reservation``, ``options`` (one
        extra ``#SBATCH`` line), ``prologue``, ``epilogue``, ``srun`` (from
        ``req_account`` ...); ``username``, ``python`` (``node_python``),
        ``scontrol``; ``wake`` (Python code that wakes the hub once the port
        is in the comment, empty if ``wake_hub`` is off); ``exports``
        (``export NAME=value`` lines with the job's
        whole environment, values quoted; it must stay in the script: an
        interrupted start is adopted by reading it back) and ``cmd`` (the
        server's command, quoted). The ``quote`` filter shell-quotes a value.

        The script must start the server on a free port of its node and
        write that port into the job's comment (``scontrol update
        JobId="$SLURM_JOB_ID" Comment="uws-port=$port"``), setting
        ``JUPYTERHUB_SERVICE_URL`` to it, as the default does; see
        ``docs/slurm.md``. A script without the ``wake`` line works as well:
        its start is noticed at the poller's next cycle.

        .. versionadded:: 0.2
        """,
    )

    wake_hub = Bool(
        True,
        config=True,
        help="""Whether a job's batch script wakes the hub once its port is in its comment.

        The default script then runs ``node_python`` in the background to send
        one ``POST /hub/api/jobs/{id}/wake`` with the job's own API token to
        ``JUPYTERHUB_API_URL``; the hub's poller then reads SLURM's queue at
        once, instead of up to ``SlurmPoller.fast_poll_interval_seconds``
        later. The hub takes nothing from the request but the fact that it came
        (the port is read from SLURM as without it), answers any other token
        with 403, and a start whose wake never arrives completes at the next
        poll. Turn it off where compute nodes cannot reach the hub's API
        before their server runs.

        .. versionadded:: 0.4
        """,
    )

    batch_job_script = Unicode(
        DEFAULT_BATCH_JOB_SCRIPT,
        config=True,
        help="""The sbatch script of a batch job (a job type with ``interactive: false``):
        a Jinja2 template.

        A batch job runs its job type's command to an exit status: no server,
        no port. Values as for ``batch_script`` (``job_name``, ``output``,
        ``workdir``, ``uws_job_id``, ``partition``, ``runtime`` (the job's time
        limit as ``D-HH:MM:SS``), ``memory``, ``nprocs``, ``gres``,
        ``account``, ``qos``, ``reservation``, ``options``, ``prologue``,
        ``epilogue``, ``exports``) and ``cmd``: the command rendered from the
        job type's argv template, shell-quoted, so that every value is one
        argument. The default ``exec``s the command when there is no
        ``epilogue`` (so a signal that kills it is SLURM's ``ExitCode``), and
        keeps its exit status otherwise. See docs/batch-jobs.md.
        """,
    )

    batch_output_dir = Unicode(
        "{job_log_dir}/slurm/{username}",
        config=True,
        help="""Directory of batch jobs' output files (``job-<id>.log``): the job's log,
        which the hub serves to its owner and admins, and follows live.

        ``{job_log_dir}`` (the hub's ``job_log_dir``) and ``{username}`` (the
        job's account) are replaced. It must be on a filesystem the compute
        nodes share with the hub. The hub makes it, owned by the job's account
        with mode 0700, in folders of its own with mode 0711 (passable, not
        listable). Keep it outside the workspaces: the files API, which a
        workspace's collaborators use, then never reaches a log, which may
        hold what the command printed of the owner's secrets.
        """,
    )

    job_name_prefix = Unicode(
        "",
        config=True,
        help="""Prefix of this hub's SLURM job names (``<prefix>job-<id>``).

        Empty (the default) means ``uws-<hub id>-``, the hub id being a hash of
        the hub's database URL, so that several hubs can share a cluster: each
        cancels only its own orphaned jobs. Set it to keep names stable when
        the database URL changes.

        .. versionadded:: 0.2
        """,
    )

    output_dir = Unicode(
        "{job_log_dir}/slurm/{username}",
        config=True,
        help="""Directory of the servers' output files (``job-<id>-<SLURM id>.log``).

        ``{job_log_dir}`` (the hub's ``job_log_dir``), ``{workspace}`` (the
        workspace directory), ``{username}`` (the system account) and
        ``{job_id}`` are replaced. It must be writable by the job's account on
        the compute nodes and readable by the hub (a shared filesystem). Under
        ``{job_log_dir}`` the hub makes it as ``batch_output_dir``: the
        account's own (0700), in folders of the hub's (0711). Elsewhere the hub
        creates it as the job's account. When the job ends, the hub keeps a
        copy of the file's end, which the job's owner and admins read redacted
        (``GET /hub/api/jobs/{id}/output``). The file itself is not redacted,
        and servers print secrets (their token, whatever their code prints):
        keep it out of the workspace, where the workspace's editors, who may
        create the folder first and give themselves read access to what is
        written in it, would read the owner's server's output (the default
        in earlier versions was ``{workspace}/.uws-jobs``).

        .. versionadded:: 0.2
        """,
    )

    node_python = Unicode(
        "",
        config=True,
        help="""A Python interpreter on the compute nodes (absolute path), used by the
        batch script to pick a free port. Empty: the hub's own interpreter
        (``sys.executable``), right when nodes share the hub's software.

        Jobs inherit the hub's ``PATH``; a non-root account may not see the
        hub's own Python, so give an absolute path every job's account can run.

        .. versionadded:: 0.2
        """,
    )

    sbatch_cmd = List(
        Unicode(),
        ["sbatch", "--parsable"],
        config=True,
        help="""The command that submits a batch script (read from its stdin); argv list.

        Run as the job's account (see ``exec_prefix``). Must print the job id
        as ``--parsable`` does.

        .. versionadded:: 0.2
        """,
    )

    scancel_cmd = List(
        Unicode(),
        ["scancel"],
        config=True,
        help="""The command that cancels jobs (their ids are appended); argv list.

        Run as the hub's account: as root, or as a SLURM operator, it can
        cancel every user's job. The hub's own jobs are cancelled with ``-u
        <uid>`` (the uid each was submitted as) before their id: SLURM gives a
        forgotten job's id again, and another account's job of that id is left
        alone.

        .. versionadded:: 0.2
        """,
    )

    scontrol_cmd = List(
        Unicode(),
        ["scontrol"],
        config=True,
        help="""The ``scontrol`` command; argv list.

        The hub runs ``scontrol write batch_script <id> -`` to adopt a job after
        a restart; the batch script runs ``scontrol update`` (its first
        element) to report its port.

        .. versionadded:: 0.2
        """,
    )

    node_host_template = Unicode(
        "{node}",
        config=True,
        help="""The host the proxy reaches a job's server at, from its SLURM node name.

        E.g. ``"{node}.cluster.example.org"`` or ``"{node}-ib"``.

        .. versionadded:: 0.2
        """,
    )

    orphan_sweep_interval_seconds = Float(
        300.0,
        config=True,
        help="""Seconds between two sweeps for orphaned SLURM jobs (0: never).

        A sweep lists the cluster's queued and running jobs (one ``squeue``)
        and cancels those named like this hub's jobs that no unfinished job
        knows (a hub that died right after ``sbatch``, a job deleted from the
        database). The first sweep runs at the hub's first reconciler scan.

        .. versionadded:: 0.2
        """,
    )

    @default("exec_prefix")
    def _default_exec_prefix(self):
        # batchspawner's default is "sudo -E -u {username}" (needs sudoers):
        # as root, uws-hub switches to the user itself
        return ""

    @default("start_timeout")
    def _default_start_timeout(self):
        # the whole start, queue wait included; the hub's job_queued_timeout
        # is the limit users see
        return 24 * 3600

    @default("req_srun")
    def _default_req_srun(self):
        # batchspawner runs the server with srun; since SLURM 22.05 a step no
        # longer inherits --cpus-per-task, so the server would get one CPU of
        # its job: run it in the batch step itself, with all the job's resources
        return ""

    @default("http_timeout")
    def _default_http_timeout(self):
        # a server on a busy node with a shared filesystem starts slowly
        return 120

    # ---------------------------------------------------------------- state
    _starting = False
    #: (SLURM job id, the report of its end) once an end was seen
    _end_reported: tuple[str, asyncio.Future] | None = None
    _node: str | None = None
    _progress_note = "Submitting the job to SLURM"
    #: set (and replaced by a fresh one) when the note changes: wakes every progress() reader
    _progress_changed: asyncio.Event | None = None
    _poller: SlurmPoller | None = None
    #: when the job's last wake started a cycle (time.monotonic())
    _woken_at = float("-inf")
    _wake_deferred = False
    #: until when a stop waits for SLURM to end the job it cancelled (time.monotonic())
    _stop_deadline = float("-inf")

    @classmethod
    def unwanted_hub_handlers(cls) -> tuple[type, ...]:
        # importing batchspawner appends /api/batchspawner to JupyterHub's API handlers;
        # it sets any spawner attribute from a request body, and uws-hub does not use it
        return (batchspawner_api.BatchSpawnerAPIHandler,)

    @classmethod
    async def close_shared(cls) -> None:
        await SlurmPoller.close_all()

    @classmethod
    def batch_runner(cls, config, log_dir, log, hub_id):
        """Batch jobs are SLURM jobs of their command, followed by the shared poller
        (:mod:`.batch`)."""
        return SlurmBatchRunner(cls(config=config), log_dir, log, hub_id=hub_id)

    @property
    def poller(self) -> SlurmPoller:
        if self._poller is None:
            self._poller = SlurmPoller.shared(config=self.config, log=self.log)
        return self._poller

    @property
    def node(self) -> str | None:
        return self._node

    @property
    def name_prefix(self) -> str:
        return self.job_name_prefix or f"uws-{self.hub_id()}-"

    def load_state(self, state):
        super().load_state(state)
        if self.job_id:
            # a job restored after a hub restart: its state comes with the next cycle
            self._track(self.job_id, self._on_slurm_state)

    def clear_state(self):
        if self.job_id:
            self.poller.untrack(self.job_id, self._on_slurm_state)
        super().clear_state()
        self._end_reported = None
        self._node = None

    # ---------------------------------------------------------------- start
    async def start(self):
        launch = self.take_launch()
        self.job_id = ""
        self.job_status = ""
        self._end_reported = None
        self._node = None
        self.port = 0
        self._starting = True
        try:
            if launch.previous_resource_id:
                await self._adopt(launch.previous_resource_id)
            if not self.job_id:
                await self._submit()
            return await self._wait_for_server()
        finally:
            self._starting = False

    async def _adopt(self, slurm_id: str) -> None:
        """Take over the job an interrupted start submitted, if it still waits or runs."""
        launch = self.require_launch()
        self._track(slurm_id)
        state = await self.poller.wait(slurm_id, lambda s: True)
        if state.ended:
            self.log.info(
                "SLURM job %s of job %s already ended (%s); submitting anew", slurm_id, launch.job_id, state.state
            )
            self.poller.untrack(slurm_id)
            return
        result = await self.poller.command([*self.scontrol_cmd, "write", "batch_script", slurm_id, "-"])
        script = result.stdout if result.returncode == 0 else ""
        token = token_from_script(script)
        if (
            script_job_id(script) != launch.job_id
            or f"UWS_SLURM_JOB_NAME={self._job_name()}" not in script
            or not token
        ):
            self.log.warning(
                "SLURM job %s is not adoptable for job %s (%s); cancelling it",
                slurm_id,
                launch.job_id,
                result.stderr.strip()[:200] or "not its batch script",
            )
            await self._scancel([slurm_id])
            self.poller.untrack(slurm_id)
            return
        self._keep_token(token)
        self.job_id = slurm_id
        self._track(slurm_id, self._on_slurm_state)
        self.log.info("Adopted SLURM job %s of job %s (%s)", slurm_id, launch.job_id, state.state)
        self.report(
            "queued",
            resource_id=slurm_id,
            resource_uid=launch.resource_uid,
            reason=f"Adopted SLURM job {slurm_id} after a hub restart",
        )

    def _keep_token(self, token: str) -> None:
        """Keep the API token an adopted job's server has (read back from its batch script).

        JupyterHub keeps a spawner's own token instead of the one it made for
        the start; one it does not have (the hub revoked it with the start it
        interrupted) it adds, noted ``retrieved from spawner <name>``. JupyterHub
        counts a request with a token for its user's activity unless the token's
        note says ``Server at``, and the note is how uws-hub tells a server's
        token (an editor's server's, narrowed: docs/security.md): the token made
        for this start, with its note and scopes, becomes that token.
        """
        db = self.db
        made_for_start: str = getattr(self, "api_token", "")  # (JupyterHub's trait)
        if hub_orm.APIToken.find(db, token) is None and made_for_start:
            made = hub_orm.APIToken.find(db, made_for_start)
            if made is not None and made.user_id == self.user.id:
                made.generated = False  # hashed as JupyterHub hashes a token it did not make
                made.token = token
                db.commit()
        # the job's server has this token: JupyterHub keeps it instead of the new one
        self.api_token = token

    def wake(self) -> bool:
        """The job's batch script says its port is in its comment (``POST
        /hub/api/jobs/{id}/wake``, with this job's token): read SLURM's queue now
        (one cycle, shared with every other wake and poll that comes before it).
        Only while the start waits for its job (else False); a wake within
        ``WAKE_MIN_INTERVAL_SECONDS`` of the last one is put off until then (one
        at most), never dropped."""
        if not (self._starting and self.job_id):
            return False
        if self._wake_deferred:
            return True
        wait = self._woken_at + WAKE_MIN_INTERVAL_SECONDS - time.monotonic()
        if wait > 0:
            self._wake_deferred = True
            asyncio.get_running_loop().call_later(wait, self._deferred_wake)
            return True
        self._woken_at = time.monotonic()
        self.log.debug("SLURM job %s of %s woke the hub", self.job_id, self._log_name)
        self.poller.wake()
        return True

    def _deferred_wake(self) -> None:
        self._wake_deferred = False
        self.wake()

    def _job_name(self) -> str:
        return job_name(self.name_prefix, self.require_launch().job_id)

    def _account(self) -> pwd.struct_passwd | None:
        launch = self.require_launch()
        return pwd.getpwnam(launch.system_user) if launch.system_user else None

    def _track(self, slurm_id: str, listener: Callable[[JobState], None] | None = None) -> None:
        """Follow ``slurm_id`` in the shared poller as the job of the uid it was submitted
        as (:attr:`WorkspaceLaunch.resource_uid`): another uid's job that SLURM gave the id
        again is not this one."""
        uid = self.launch.resource_uid if self.launch is not None else None
        self.poller.track(slurm_id, listener, uid=uid)

    def _username(self) -> str:
        """The name of the account the job runs as (``{username}``): its launch's system
        account (checked by :class:`~uws_hub.accounts.system.SystemAccounts`), or in
        single-account mode the hub's own, as the batch runner's. Never the hub user's
        name: whoever makes hub users picks it, and ``sudo -E -u {username}`` would run
        ``sbatch`` as ``root`` for a hub user named so."""
        account = self._account()
        return account.pw_name if account else pwd.getpwuid(os.geteuid()).pw_name

    def output_path(self, slurm_id: str = "%j") -> str:
        """The job's output file (``%j``: SLURM's job id, until it is known)."""
        launch = self.require_launch()
        return server_output_path(
            self.output_dir,
            job_log_dir=self._job_log_dir(),
            workspace=launch.directory,
            username=self._username(),
            job_id=launch.job_id,
            slurm_id=slurm_id,
        )

    def _as_user(self) -> dict[str, Any]:
        """Popen arguments that run a command as the job's account (hub as root)."""
        account = self._account()
        if account is None or self.exec_prefix or os.geteuid() != 0:
            return {}
        return as_account(account, self.require_launch().group)

    def _prefix(self) -> list[str]:
        return [part.format(username=self._username()) for part in shlex.split(self.exec_prefix)]

    def batch_script_values(self) -> dict[str, Any]:
        """The template's values (see ``batch_script``), the job's resources first."""
        launch = self.require_launch()
        res = launch.resources
        gpus = res.get("gpus")
        gres = f"gpu:{gpus}" if gpus else self.req_gres
        return {
            "job_name": self._job_name(),
            "output": self.output_path(),
            "workdir": launch.directory,
            "uws_job_id": launch.job_id,
            "partition": res.get("partition") or self.req_partition,
            "runtime": res.get("time_limit") or self.req_runtime,
            "memory": res.get("memory") or self.req_memory,
            "nprocs": str(res.get("cpus") or self.req_nprocs or ""),
            "ngpus": str(gpus or self.req_ngpus or ""),
            "gres": gres,
            "account": self.req_account,
            "qos": self.req_qos,
            "reservation": self.req_reservation,
            "options": self.req_options,
            "prologue": self.req_prologue,
            "epilogue": self.req_epilogue,
            "srun": self.req_srun,
            "username": self._username(),
            "python": self.node_python or sys.executable,
            "scontrol": self.scontrol_cmd[0],
            "wake": WAKE_CODE if self.wake_hub else "",
        }

    async def _submit(self) -> None:
        launch = self.require_launch()
        env = self.get_env()
        env["UWS_SLURM_JOB_NAME"] = self._job_name()
        script = render_batch_script(
            self.batch_script, env=env, cmd=[*self.cmd, *self.get_args()], **self.batch_script_values()
        )
        await self._make_output_dir()
        self.log.info(
            "Submitting job %s of %s to SLURM as %s",
            launch.job_id,
            self._log_name,
            launch.system_user or "the hub's account",
        )
        account = self._account()
        home = account.pw_dir if account else (launch.home or "/")
        # the uid SLURM gives the job (sbatch's own, through _as_user or exec_prefix)
        launch.resource_uid = account.pw_uid if account else os.geteuid()
        result = await self.poller.command(
            [*self._prefix(), *self.sbatch_cmd],
            input=script,
            env=submit_environment({"HOME": home, "USER": self._username()}),
            cwd=launch.directory,
            **self._as_user(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed (exit status {result.returncode}): {result.stderr.strip()[:1000]}")
        self.job_id = parse_sbatch(result.stdout)
        # the checkpoint: the hub stores the id at once (JupyterHub saves our
        # state only when start() returns)
        self.report(
            "queued",
            resource_id=self.job_id,
            resource_uid=launch.resource_uid,
            reason=f"Submitted to SLURM as job {self.job_id}",
        )
        self._track(self.job_id, self._on_slurm_state)
        self.log.info("Job %s of %s is SLURM job %s", launch.job_id, self._log_name, self.job_id)

    def _job_log_dir(self) -> str:
        """The hub's job log directory (``{job_log_dir}``). A server started by an earlier
        version, found again in its state, names none: its log file (``job-<id>.log``) is
        in it."""
        launch = self.require_launch()
        directory = launch.job_log_dir or (os.path.dirname(launch.log_path) if launch.log_path else None)
        if directory is None:
            raise RuntimeError(f"Job {launch.job_id}: its launch names no job log directory")
        return os.path.abspath(directory)

    async def _make_output_dir(self) -> None:
        # (a hung disk holds a thread, not the hub)
        await asyncio.to_thread(self.require_launch().make_folders, self.log)
        directory = os.path.dirname(self.output_path())
        log_dir = self._job_log_dir()
        if directory.startswith(log_dir + os.sep):
            account = self._account() or pwd.getpwuid(os.geteuid())
            holder = self.require_launch().account_holder
            await asyncio.to_thread(make_account_folder, directory, log_dir, account, self.log, holder=holder)
        elif self._as_user() or self._prefix():
            # as the job's account: never create or chown in a user's directory as root
            result = await self.poller.command(
                [*self._prefix(), "mkdir", "-p", "-m", "700", directory], **self._as_user()
            )
            if result.returncode != 0:
                raise RuntimeError(f"Cannot create the job's output directory {directory}: {result.stderr.strip()}")
        else:
            await asyncio.to_thread(os.makedirs, directory, mode=0o700, exist_ok=True)

    async def _wait_for_server(self) -> tuple[str, int]:
        def serving_or_ended(s: JobState) -> bool:
            return s.ended or (s.running and s.port is not None)

        state = await self.poller.wait(self.job_id, serving_or_ended)
        if state.ended or state.port is None:
            outcome, reason = await self._end_report(state)
            raise RuntimeError(reason)
        self._node = state.node
        host = self.node_host_template.format(node=state.node)
        self.log.info("SLURM job %s of %s runs on %s, port %s", self.job_id, self._log_name, host, state.port)
        # the script reports its port before the server listens: return once it does, so
        # that JupyterHub's wait for the server (random backoff) succeeds at its first check
        try:
            await wait_listening(
                host, state.port, gone=self.poller.wait(self.job_id, lambda s: s.ended), timeout=self.http_timeout
            )
        except ServerExited:
            outcome, reason = await self._end_report(self.poller.get(self.job_id) or state)
            raise RuntimeError(reason) from None
        return host, state.port

    def _on_slurm_state(self, state: JobState) -> None:
        """The poller saw this job's state change."""
        if state.job_id != self.job_id:
            return
        if state.node:
            self._node = state.node
        if state.ended:
            self._end_report(state)
            return
        if not self._starting:
            return
        if state.pending:
            note = f"Pending in the SLURM queue ({state.reason})" if state.reason else "Pending in the SLURM queue"
        elif state.running:
            note = f"Running on node {state.node}; waiting for its server"
        else:
            note = f"SLURM job {state.job_id} is {state.state}"
        self._progress_note = f"SLURM job {state.job_id}: {note}"
        changed, self._progress_changed = self._progress_changed, None
        if changed is not None:
            changed.set()
        self.report("queued", resource_id=self.job_id, reason=note)

    async def progress(self):
        """Spawn progress for JupyterHub's progress API and the hub's events: on change only.

        Woken by the change itself, not by a timer: a thousand jobs waiting in
        SLURM's queue cost the hub nothing between two of their changes. Every
        reader (the hub's events, JupyterHub's progress API) waits on the same
        event, taken before it reads the note, so no change slips between the two.
        """
        last = None
        while True:
            if self._progress_changed is None:
                self._progress_changed = asyncio.Event()
            changed = self._progress_changed
            if self._progress_note != last:
                last = self._progress_note
                yield {"message": last}
                continue
            await changed.wait()

    # ---------------------------------------------------------------- poll
    async def poll(self):
        """None while the job is queued or runs; its exit status once SLURM ended it.

        Reads the shared poller's cache: no subprocess per call. A state never
        seen yet (right after a hub restart) waits for one cycle, shared by all
        spawners asking at the same time. Unknown (SLURM not answering) is
        "still running": a failing ``squeue`` never ends a job.
        """
        if not self.job_id:
            return None if self._starting else 0
        self._track(self.job_id, self._on_slurm_state)
        state = self.poller.get(self.job_id)
        if state is None:
            await self.poller.refresh()
            state = self.poller.get(self.job_id)
        if state is None or not state.ended:
            return None
        await self._end_report(state)
        return 0 if state.state == "COMPLETED" else 1

    def _end_report(self, state: JobState) -> asyncio.Future:
        """Tell the hub how SLURM ended the job: once, whoever notices first (the
        poller's listener, poll(), the start); all of them wait for the same report."""
        if self._end_reported is None or self._end_reported[0] != state.job_id:
            self._end_reported = (state.job_id, asyncio.ensure_future(self._report_end(state)))
        return asyncio.shield(self._end_reported[1])

    async def _report_end(self, state: JobState) -> tuple[str, str]:
        # a server that ends before it answered failed to start, whatever its exit status
        started = not (self._starting or self.pending == "spawn")
        outcome, reason = describe_end(state, started=started)
        if outcome == "failed":
            if not started:
                reason = f"The server failed to start: {reason}"
            try:
                # where the hub reads it for the job's owner (JupyterHub does not stop() a server that ended)
                await self._keep_output_tail()
            except Exception:
                self.log.exception("Reading the output of SLURM job %s failed", state.job_id)
        self.log.info("%s: %s", self._log_name, reason.splitlines()[0])
        self.report("ended", outcome=outcome, reason=reason)
        return outcome, reason

    # ---------------------------------------------------------------- stop
    async def query_job_status(self):
        """For batchspawner's stop loop: the job's status after a fresh (shared) poll."""
        if not self.job_id:
            return BatchJobStatus.NOTFOUND
        self._track(self.job_id, self._on_slurm_state)
        state = self.poller.get(self.job_id)
        if state is None or state.ended or state.pending or time.monotonic() >= self._stop_deadline:
            # (right after this stop's scancel of a job seen running, SLURM is known to be
            # ending it: no cycle for all jobs first, the follow-up below asks)
            await self.poller.refresh()
            state = self.poller.get(self.job_id)
        if state is None:
            return BatchJobStatus.UNKNOWN
        if not state.ended and not state.pending:
            # after scancel SLURM shows COMPLETING until the server has shut down: wait for
            # the end on the shared poller's follow-ups of the job (see ENDING_LATENESS), not
            # batchspawner's 1 s sleeps; until the stop's deadline, then one cycle a call
            try:
                async with asyncio.timeout(max(0.0, self._stop_deadline - time.monotonic())):
                    state = await self.poller.wait(self.job_id, lambda s: s.ended)
            except TimeoutError:
                pass
        self.job_status = state.state
        if state.ended:
            return BatchJobStatus.NOTFOUND
        return BatchJobStatus.PENDING if state.pending else BatchJobStatus.RUNNING

    async def cancel_batch_job(self):
        if not self.job_id:
            return
        state = self.poller.get(self.job_id)
        if state is not None and state.ended:
            return
        self.log.info("Cancelling SLURM job %s of %s", self.job_id, self._log_name)
        self._stop_deadline = time.monotonic() + STOP_WAIT_SECONDS
        await self._scancel([self.job_id])
        self.poller.ending(self.job_id)

    async def stop(self, now=False):
        # the mixin reports, batchspawner's stop cancels (cancel_batch_job) and
        # waits for the end (query_job_status); the job's end is recorded then (the
        # mixin's stopped_listener), and its output's tail kept after it: a stop asked
        # for puts no output in the job's reason, and the hub's log of the job has the
        # tail a few milliseconds after the end
        await super().stop(now=now)
        await self._keep_output_tail()

    async def _scancel(self, ids: list[str], uid: int | None = None) -> None:
        """``scancel`` of ``ids``, only of their jobs of ``uid`` (see :func:`.commands.scancel_argv`;
        default: the uid the launch's job was submitted as)."""
        if uid is None and self.launch is not None:
            uid = self.launch.resource_uid
        check_scancel(await self.poller.command([*self._prefix(), *scancel_argv(self.scancel_cmd, ids, uid)]), ids)

    async def release_leftover(self, job_id: int, resource_id: str, resource_uid: int | None = None) -> None:
        """Cancel the SLURM job of a start the hub lost track of (the job is to stop), if it
        is still of the uid it was submitted as."""
        self.log.warning("Cancelling SLURM job %s left by an interrupted start of job %s", resource_id, job_id)
        await self._scancel([resource_id], resource_uid)

    # ---------------------------------------------------------------- output
    async def output_tail(self, max_bytes: int = OUTPUT_TAIL_BYTES) -> str:
        """The end of the job's output file, read as the job's account (never as root:
        the file is in the user's directory, and may be a symlink to anything)."""
        if not self.job_id or self.launch is None:
            return ""
        return await read_tail(
            self.poller,
            self.output_path(self.job_id),
            as_user=self._as_user(),
            prefix=self._prefix(),
            max_bytes=max_bytes,
        )

    async def _keep_output_tail(self) -> None:
        """Copy the output's tail to the hub's own log file of the job (``launch.log_path``),
        where the hub reads a job's output for its owner."""
        launch = self.launch
        if launch is None or not launch.log_path or not self.job_id:
            return
        text = await self.output_tail()
        if text:
            keep_tail(launch.log_path, text, self.log)

    # ---------------------------------------------------------------- orphans
    @classmethod
    async def sweep_orphans(
        cls,
        known: Callable[[], dict[int, str | None]],
        *,
        hub_id: str,
        config: Any,
        log: logging.Logger,
    ) -> list[str]:
        """Cancel this hub's SLURM jobs that no unfinished job knows (:func:`.orphans.sweep`);
        return their ids. ``known()`` maps each unfinished job (on this class's resources)
        to its stored SLURM id, or None."""
        settings = cls(config=config)
        return await sweep(
            known,
            hub_id=hub_id,
            interval_seconds=settings.orphan_sweep_interval_seconds,
            prefix=settings.job_name_prefix or f"uws-{hub_id}-",
            scancel_cmd=settings.scancel_cmd,
            poller=SlurmPoller.shared(config=config, log=log),
            log=log,
        )
