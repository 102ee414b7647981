"""The services the handlers use, and the one place they are wired together.

:func:`build` makes every service from the hub's configuration, passing each
what it needs through its constructor (no service reaches into another to
change it), and :class:`Services` holds them for the handlers
(``settings['uws']``). :meth:`Services.start` hands the background work to
the app's :class:`~uws_hub.tasks.TaskPool`; services only expose coroutines.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jupyterhub.app import JupyterHub
from jupyterhub.user import User
from jupyterhub.utils import url_path_join

from . import scopes
from .accounts.system import SystemAccounts
from .events.bus import EventBus
from .events.notify import Notifier, SMTPSettings
from .filethreads import FileThreads
from .hubfolders import prepare_own_folder
from .jobs.batch import BatchSteps
from .jobs.destruction import DestructionSteps
from .jobs.launch import check_resource_limits
from .jobs.queue import QUEUE_KEY, QueueSteps
from .jobs.reconcile import JobSteps
from .jobs.servers import ServerControl
from .jobs.service import JobService, account_holder
from .jobs.types import JobType
from .metrics import LoopLagProbe, register_state_collector
from .models import workspace_model
from .orm import Workspace
from .quotas.limits import Limits
from .quotas.service import QuotaService
from .reconciler import Reconciler, waker
from .serverconfig import job_env
from .sharing.collaborate import ShareService
from .sharing.copies import CopyService, CopySteps
from .sharing.kills import GroupKills
from .slots import ReaderSlots
from .spawners.batch import BatchRunner
from .spawners.localbatch import LocalRunner
from .spawners.mixins import hub_id
from .states import JobStatus
from .tasks import TaskPool
from .tokenids import TokenIds
from .workqueue import WorkQueue
from .workspaces.former import FormerUsers
from .workspaces.reconcile import WorkspaceSteps
from .workspaces.service import WorkspaceService
from .workspaces.storage import WorkspaceStorage
from .workspaces.usage import UsageMeter


@dataclass
class Services:
    storage: WorkspaceStorage
    workspaces: WorkspaceService
    jobs: JobService
    events: EventBus
    job_types: dict[str, JobType]
    max_upload_bytes: int
    servers: ServerControl
    quotas: QuotaService
    sharing: ShareService
    copies: CopyService
    notifier: Notifier
    reconciler: Reconciler
    usage: UsageMeter
    tasks: TaskPool
    loop_lag: LoopLagProbe
    #: what deleted users leave on disk (``UWSHub.deleted_users_data``)
    former_users: FormerUsers
    #: who finds whom to share with (``UWSHub.share_search``, ``share_search_show_email``)
    share_search: str
    share_search_show_email: bool
    #: ``UWSHub.editors_run_code``: whether grantees may launch (see :func:`uws_hub.access.may_launch`)
    editors_run_code: bool = True
    #: ``UWSHub.zip_max_entries``
    zip_max_entries: int = 100_000
    #: ``UWSHub.folder_max_entries``
    folder_max_entries: int = 100_000
    #: zip downloads under way, by who reads them (``UWSHub.max_zip_downloads_per_user`` each)
    zip_downloads: ReaderSlots = field(default_factory=lambda: ReaderSlots(2))
    #: event streams, log follows and UWS waits held open, by who reads them
    #: (``UWSHub.max_streams_per_user`` each)
    streams: ReaderSlots = field(default_factory=lambda: ReaderSlots(20))
    #: requests' blocking file work (``UWSHub.file_operation_threads``, ``max_file_operations_per_user``)
    file_threads: FileThreads = field(default_factory=lambda: FileThreads(32, 4))
    #: ``UWSHub.stream_recheck_seconds``: how often a long request asks again who holds it open
    stream_recheck_seconds: float = 10.0
    #: the API handlers' token lookups (see :mod:`uws_hub.tokenids`)
    token_ids: TokenIds = field(default_factory=TokenIds)

    def workspace_models(self, items: list[Workspace]) -> list[dict[str, Any]]:
        """The API's models of these workspaces, with their unfinished and latest jobs (one query)."""
        active, latest = self.jobs.active_and_latest_jobs([ws.id for ws in items])
        return [workspace_model(ws, active.get(ws.id), latest.get(ws.id)) for ws in items]

    def waiting(self, user: User | None) -> dict[str, int] | None:
        """What waits for a user (invitations to accept, notifications to read): the
        count in every page's navigation (a JupyterHub ``template_vars`` callable)."""
        if user is None or getattr(user, "orm_user", None) is None:
            return None
        invitations = self.sharing.invitations_waiting(user.orm_user)
        unread = self.notifier.unread(user.orm_user)
        return {"invitations": invitations, "unread": unread, "total": invitations + unread}

    async def account_quotas(self) -> None:
        """The quota loop's body: account core-hours; stop the jobs of those over budget."""
        for job, reason in self.quotas.account():
            self.jobs.stop(job, "hub", reason, JobStatus.failed)

    def start(self, hub: JupyterHub) -> None:
        """Start every background task (the hub is listening)."""
        tasks = self.tasks
        tasks.run("loop-lag-probe", self.loop_lag.run)
        for i in range(self.reconciler.workers):
            tasks.run(f"reconciler-worker-{i}", self.reconciler.worker)
        tasks.every("reconciler-scan", self.reconciler.scan, hub.job_reconcile_interval)
        tasks.every("workspace-usage", self.usage.measure, hub.workspace_usage_interval)
        if hub.workspace_usage_interval > 0:
            # what a job wrote counts at its end, not at the next pass
            tasks.run("workspace-usage-after-jobs", lambda: self.usage.measure_ended_forever(tasks.guarded))
        tasks.every("quota-accounting", self.account_quotas, hub.quota_interval_seconds)
        # the roles and POSIX groups of shared workspaces: now, then every interval (0: once)
        if not tasks.every("share-sync", self.sharing.sync, hub.share_sync_interval_seconds):
            tasks.spawn(tasks.guarded("share-sync", self.sharing.sync), "share-sync")
        if self.sharing.posix_group_prefix is not None:
            tasks.run("posix-strays", self.sharing.kill_strays_worker)
        if self.notifier.smtp is not None:
            tasks.run("mail-sender", self.notifier.send_loop)
        for cls in set(self.servers.spawner_classes.values()):
            tasks.on_close(cls.close_shared)

    async def stop(self, stop_servers: bool) -> None:
        """Drain the background tasks; with ``stop_servers``, end every interactive job
        truthfully first (batch jobs run on, and are found again at the next start)."""
        self.reconciler.close()
        if stop_servers:
            # JupyterHub is about to stop every server: end their jobs truthfully
            await self.jobs.stop_all("The hub shut down and stopped its servers")
        await self.tasks.close()
        for runner in self.jobs.runners.values():
            await runner.close()


def batch_runners(hub: JupyterHub, log: logging.Logger, spawner_classes: dict) -> dict[str, BatchRunner]:
    """The batch runner of each resource whose spawner class runs batch jobs (one per class)."""
    by_class: dict[type, BatchRunner | None] = {}
    this_hub = hub_id(hub.db.get_bind().engine.url.render_as_string(hide_password=True))
    for cls in spawner_classes.values():
        if cls not in by_class:
            factory = getattr(cls, "batch_runner", None)
            by_class[cls] = factory(hub.config, os.path.abspath(hub.job_log_dir), log, this_hub) if factory else None
    return {resource: runner for resource, cls in spawner_classes.items() if (runner := by_class[cls]) is not None}


def build(hub: JupyterHub, log: logging.Logger, spawner_classes: dict, job_types: dict[str, JobType]) -> Services:
    """Every service of the hub, wired together from its configuration."""
    db = hub.db
    tasks = TaskPool(log, db)
    loop_lag = LoopLagProbe()
    queue: WorkQueue = WorkQueue()
    root = os.path.abspath(hub.workspaces_root)
    os.makedirs(root, mode=0o755, exist_ok=True)
    # the job logs' folder the hub's alone, or no start (:func:`prepare_own_folder`)
    prepare_own_folder(os.path.abspath(hub.job_log_dir), "The job log folder", "UWSHub.job_log_dir")
    storage = WorkspaceStorage(root)
    accounts = SystemAccounts(hub.system_users, hub.system_users_min_uid)
    servers = ServerControl(
        hub.users,
        hub.proxy,
        log,
        spawner_classes,
        tasks,
        # what jobs' Jupyter servers check to tell their launcher from readers; no hub API takes it
        # (a workspace scope here would let the server act on the hub as its visitors)
        client_scopes=lambda owner, server: [f"{scopes.WRITE_SERVERS}!server={owner}/{server}"],
    )
    events = EventBus(log, max_queue=hub.event_queue_size, stall_seconds=hub.event_stream_stall_seconds)
    events.attach(db)
    register_state_collector(db, events)
    notifier = Notifier(
        db,
        events,
        log,
        smtp=SMTPSettings(
            hub.smtp_host,
            hub.smtp_port,
            hub.smtp_from or f"uws-hub <uws-hub@{hub.smtp_host}>",
            hub.smtp_tls,
            hub.smtp_user,
            hub.smtp_password,
            hub.smtp_timeout_seconds,
        )
        if hub.smtp_host
        else None,
        hub_url=url_path_join(hub.public_url or hub.bind_url, hub.hub_prefix[len(hub.base_url) :]),
    )
    quotas = QuotaService(
        db,
        notifier,
        log,
        defaults=Limits(
            disk_bytes=hub.quota_disk_bytes,
            core_seconds=None if hub.quota_core_hours is None else round(hub.quota_core_hours * 3600),
            concurrent_jobs=hub.quota_concurrent_jobs,
            max_cpus=hub.quota_max_cpus,
            max_memory_bytes=hub.quota_max_memory_bytes,
            max_gpus=hub.quota_max_gpus,
        ),
        period=hub.quota_period,
        warning_fraction=hub.quota_warning_fraction,
    )
    # no write of an earlier run is still going: nothing is reserved before the hub listens
    quotas.clear_disk_reservations()
    workspaces = WorkspaceService(
        db,
        storage,
        accounts,
        events,
        log,
        quotas=quotas,
        max_seed_bytes=hub.max_seed_bytes,
        wake=waker(queue, WorkspaceSteps.kind),
    )
    usage = UsageMeter(
        workspaces,
        storage,
        quotas,
        log,
        full_scan_seconds=hub.workspace_usage_full_scan_seconds,
        isolated=hub.system_users,
    )
    runners = batch_runners(hub, log, spawner_classes)
    for job_type in job_types.values():
        missing = [] if job_type.interactive else [r for r in job_type.resources if r not in runners]
        if missing:
            raise ValueError(f"Job type {job_type.name!r} is a batch job type, but {missing} cannot run batch jobs")
    #: the share service's kills of workspaces' strays, which editors' job starts wait for
    group_kills = GroupKills()
    jobs = JobService(
        db,
        servers,
        workspaces,
        accounts,
        job_types,
        events,
        log,
        job_log_dir=os.path.abspath(hub.job_log_dir),
        active_server_limit=hub.active_server_limit,
        retry_after_seconds=hub.spawn_throttle_retry_range,
        max_unfinished_batch_jobs=hub.max_unfinished_batch_jobs_per_user,
        max_log_bytes=hub.max_job_log_bytes,
        wake=waker(queue, JobSteps.kind),
        # each job type's resource limits (cpus, memory, gpus, time, partitions), then quotas: 422 over them
        launch_checks=[check_resource_limits, quotas.check_launch],
        record_end=quotas.record_job_end,
        keep_ended=quotas.keep_ended_usage,
        job_env=lambda job_type: job_env(
            job_type.env,
            hub.server_auth_cache_seconds,
            None if job_type.app is None else job_type.app.model_dump(),
            jupyterlab_news=hub.jupyterlab_news,
        ),
        runners=runners,
        wake_queue=lambda: queue.put(QUEUE_KEY),
        wake_destruction=waker(queue, DestructionSteps.kind),
        job_ended=usage.job_ended,
        posix_group_prefix=hub.share_posix_group_prefix if hub.system_users else None,
        group_kills=group_kills,
    )
    jobs.attach(db)
    former_users = FormerUsers(
        storage,
        jobs.kept_log_path,
        account_holder,
        tasks,
        log,
        remove=hub.deleted_users_data == "remove",
        server_outputs=jobs.server_output_path,
    )
    former_users.attach(db)
    # what a hub stopped between a user's deletion and its set-aside left: before the hub listens
    former_users.finish_pending(db)
    sharing = ShareService(
        db,
        accounts,
        notifier,
        events,
        log,
        posix_group_prefix=hub.share_posix_group_prefix if hub.system_users else None,
        editors_lost=jobs.stop_launched_by,
        stopping_timeout=hub.job_stopping_timeout,
        group_kills=group_kills,
        deletions=workspaces.deletions,
    )
    sharing.attach(db)
    copies = CopyService(db, sharing, accounts, quotas, notifier, wake=waker(queue, CopySteps.kind))
    batch = BatchSteps(
        jobs,
        runners,
        tasks,
        log,
        max_attempts=hub.job_max_attempts,
        stopping_timeout=hub.job_stopping_timeout,
    )
    job_steps = JobSteps(
        jobs,
        servers,
        queue,
        tasks,
        log,
        batch=batch,
        pending_timeout=hub.job_pending_timeout,
        queued_timeout=hub.job_queued_timeout,
        stopping_timeout=hub.job_stopping_timeout,
        max_attempts=hub.job_max_attempts,
        concurrent_starts=hub.concurrent_spawn_limit,
        max_local_starts=4 * len(os.sched_getaffinity(0)) if hub.max_local_starts is None else hub.max_local_starts,
        start_poll_interval=hub.job_start_poll_interval,
        loop_lag=loop_lag.lag,
        max_loop_lag=hub.job_start_max_loop_lag_seconds,
    )
    # starts held back while the loop was late go ahead once it has caught up
    loop_lag.add_listener(job_steps.wake_start_line)
    reconciler = Reconciler(
        queue,
        [
            job_steps,
            QueueSteps(
                jobs,
                log,
                resources=list(runners),
                # local batch jobs share the hub's machine: at most max_running_batch_jobs at once
                hub_limits={
                    resource: hub.max_running_batch_jobs or os.cpu_count() or 1
                    for resource, runner in runners.items()
                    if isinstance(runner, LocalRunner)
                },
                user_limit=quotas.concurrent_limit,
                hand_over=batch.hand_over,
            ),
            DestructionSteps(jobs),
            WorkspaceSteps(
                workspaces, servers, queue, tasks, log, forget=sharing.forget_workspace, forget_logs=jobs.forget_logs_in
            ),
            CopySteps(
                db,
                storage,
                workspaces,
                sharing,
                accounts,
                quotas,
                notifier,
                queue,
                tasks,
                log,
                max_attempts=hub.copy_max_attempts,
                retry_seconds=hub.copy_retry_seconds,
            ),
        ],
        db,
        log,
        workers=hub.job_reconcile_workers,
        give_way=give_way(loop_lag, hub.job_start_max_loop_lag_seconds),
    )
    return Services(
        storage=storage,
        workspaces=workspaces,
        jobs=jobs,
        events=events,
        job_types=job_types,
        max_upload_bytes=hub.max_upload_bytes,
        servers=servers,
        former_users=former_users,
        quotas=quotas,
        sharing=sharing,
        copies=copies,
        notifier=notifier,
        reconciler=reconciler,
        usage=usage,
        tasks=tasks,
        loop_lag=loop_lag,
        share_search=hub.share_search,
        share_search_show_email=hub.share_search_show_email,
        editors_run_code=hub.editors_run_code,
        zip_downloads=ReaderSlots(hub.max_zip_downloads_per_user),
        streams=ReaderSlots(hub.max_streams_per_user),
        file_threads=FileThreads(hub.file_operation_threads, hub.max_file_operations_per_user),
        zip_max_entries=hub.zip_max_entries,
        folder_max_entries=hub.folder_max_entries,
        stream_recheck_seconds=hub.stream_recheck_seconds,
    )


def give_way(probe: LoopLagProbe, max_lag: float) -> Callable[[], Awaitable[None]]:
    """What a reconciler worker awaits between two steps: one turn of the event loop, or,
    while the loop runs later than ``max_lag``, until the lag probe has run again (the
    requests and events that were waiting have been served). Background steps then
    take the time that requests leave, as job starts do (``job_start_max_loop_lag_seconds``);
    each worker still takes a step every probe interval, however busy the hub is."""

    async def wait() -> None:
        if max_lag and probe.lag() > max_lag:
            await probe.next_probe()
        else:
            await asyncio.sleep(0)

    return wait
