"""The services in-process, on an in-memory database, with a fake server control:
jobs (launch, stop, the transition table), quotas (launch checks, accounting),
sharing (roles follow shares; copy invitations), and the reconciler's steps for
workspace deletions and copies on a real temporary directory."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import random
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import delete, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from uws_hub.accounts.system import SystemAccounts
from uws_hub.errors import Conflict, TooManyRequests
from uws_hub.events.bus import EventBus, event_model
from uws_hub.events.notify import Notifier
from uws_hub.jobs import queue as queue_module
from uws_hub.jobs.batch import BatchSteps
from uws_hub.jobs.launch import check_resource_limits
from uws_hub.jobs.queue import QueueSteps, Waiting
from uws_hub.jobs.reconcile import MIN_STARTS_WHEN_LATE, JobSteps
from uws_hub.jobs.service import JobService
from uws_hub.jobs.types import parse_job_types
from uws_hub.orm import EndedCoreUsage, Event, Job, Share, Usage, Workspace, utcnow
from uws_hub.quotas import service as quotas_module
from uws_hub.quotas.limits import Limits, period_start
from uws_hub.quotas.service import QuotaExceeded, QuotaService
from uws_hub.reconciler import waker
from uws_hub.sharing import collaborate
from uws_hub.sharing import copies as copies_module
from uws_hub.sharing.collaborate import ShareService, role_name, role_specs
from uws_hub.sharing.copies import CopyService, CopySteps
from uws_hub.spawners.batch import BatchLaunch, RunState
from uws_hub.states import IllegalTransition, JobStatus, WorkspaceStatus
from uws_hub.tasks import TaskPool
from uws_hub.workqueue import WorkQueue
from uws_hub.workspaces.reconcile import WorkspaceSteps
from uws_hub.workspaces.service import WorkspaceService
from uws_hub.workspaces.storage import WorkspaceStorage

from ..helpers import memory_database

log = logging.getLogger("test")
#: who holds which JupyterHub role (made by the shares' roles): cleared with the roles, or
#: a role of a test before, its id taken again, would hold this test's users already
ROLE_MAPS = [hub_orm.Base.metadata.tables[f"{entity}_role_map"] for entity in ("user", "group")]


class FakeServers:
    """The job service's view of JupyterHub's servers, without JupyterHub."""

    spawner_classes = {"local": SimpleNamespace(stopped_outcome="completed")}

    def __init__(self):
        self.revoked: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    def revoke_tokens(self, owner, server_name):
        self.revoked.append((owner.name, server_name))

    def user(self, owner):
        return SimpleNamespace(server_url=lambda name: f"/user/{owner.name}/{name}/")

    async def delete(self, owner, server_name):
        self.deleted.append((owner.name, server_name))


@pytest.fixture(scope="module")
def engine():
    engine = memory_database()
    yield engine
    engine.dispose()


@pytest.fixture
def hub(engine, tmp_path):
    """Every service, wired as services.build does, on a clean database."""
    db = Session(engine)
    for table in (
        EndedCoreUsage,
        Event,
        Share,
        Job,
        Workspace,
        *ROLE_MAPS,
        hub_orm.Role,
        hub_orm.user_group_map,
        hub_orm.Group,
        hub_orm.User,
    ):
        db.execute(delete(table))
    db.commit()
    queue: WorkQueue = WorkQueue()
    pool = TaskPool(log, db)
    events = EventBus(log)
    events.attach(db)
    notifier = Notifier(db, events, log, smtp=None, hub_url="http://hub.test/hub/")
    quotas = QuotaService(
        db, notifier, log, defaults=Limits(concurrent_jobs=2, core_seconds=3600), period="month", warning_fraction=0.8
    )
    accounts = SystemAccounts(False)
    root = tmp_path / "workspaces"
    root.mkdir()
    storage = WorkspaceStorage(str(root))
    woken: list[tuple[str, int]] = []

    def recording(kind):
        wake = waker(queue, kind)

        def put(object_id):
            woken.append((kind, object_id))
            wake(object_id)

        return put

    servers = FakeServers()
    workspaces = WorkspaceService(
        db, storage, accounts, events, log, quotas=quotas, max_seed_bytes=1024, wake=recording("workspace")
    )
    job_types = parse_job_types({"lab": {"display_name": "Lab", "default_url": "/lab"}}, ["local"])
    jobs = JobService(
        db,
        servers,
        workspaces,
        accounts,
        job_types,
        events,
        log,
        job_log_dir=str(tmp_path / "logs"),
        wake=recording("job"),
        launch_checks=[check_resource_limits, quotas.check_launch],
        record_end=quotas.record_job_end,
        keep_ended=quotas.keep_ended_usage,
        job_env=dict,
    )
    sharing = ShareService(db, accounts, notifier, events, log, posix_group_prefix=None, deletions=workspaces.deletions)
    copies = CopyService(db, sharing, accounts, quotas, notifier, wake=recording("copy"))
    users = {name: hub_orm.User(name=name) for name in ("ann", "ben")}
    db.add_all(users.values())
    db.commit()
    yield SimpleNamespace(
        db=db,
        queue=queue,
        pool=pool,
        events=events,
        quotas=quotas,
        storage=storage,
        servers=servers,
        workspaces=workspaces,
        jobs=jobs,
        sharing=sharing,
        copies=copies,
        woken=woken,
        users=users,
        root=root,
        steps=lambda: (
            WorkspaceSteps(
                workspaces, servers, queue, pool, log, forget=sharing.forget_workspace, forget_logs=jobs.forget_logs_in
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
                pool,
                log,
                max_attempts=2,
                retry_seconds=0.01,
            ),
        ),
    )
    db.close()


@pytest.mark.parametrize("name, uid", [("root", 0), ("daemon", 1), ("nobody", 65534)])
def test_system_accounts_are_never_a_users(name, uid):
    """Accounts below the minimum uid, and nobody, own no workspace and run no job."""
    assert pwd.getpwnam(name).pw_uid == uid
    accounts = SystemAccounts(True, min_uid=1000)
    for call in (accounts.owner, accounts.system_user):
        with pytest.raises(Conflict, match=f"uid {uid}; users' accounts start at"):
            call(name)
    assert SystemAccounts(False).system_user(name) is None  # single-account mode: the hub's own


def test_a_name_no_account_can_have_is_a_conflict():
    """getpwnam refuses a name with a NUL (ValueError, not KeyError): a 409, not a 500."""
    accounts = SystemAccounts(True)
    for call in (accounts.owner, accounts.system_user):
        with pytest.raises(Conflict, match="can have no system account"):
            call("alice\x00root")


def test_system_users_min_uid_is_the_admins_but_never_root():
    assert SystemAccounts(True, min_uid=1).owner("daemon").uid == 1
    with pytest.raises(Conflict, match="uid 0"):
        SystemAccounts(True, min_uid=0).owner("root")


def workspace(hub, owner="ann", slug="w1", files: dict[str, bytes] | None = None) -> Workspace:
    directory = hub.storage.directory_for(owner, slug)
    os.makedirs(directory)
    for name, data in (files or {}).items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    ws = Workspace(
        owner=hub.users[owner],
        slug=slug,
        name=slug,
        status="idle",
        directory=directory,
        disk_usage_bytes=sum(len(d) for d in (files or {}).values()),
    )
    hub.db.add(ws)
    hub.db.commit()
    return ws


# ---------------------------------------------------------------- jobs
def test_a_launch_records_the_job_and_wakes_the_reconciler(hub):
    ws = workspace(hub)
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    assert (job.status, job.target, job.server_name) == ("pending", "running", "w1")
    assert ws.status == "active"
    assert hub.woken == [("job", job.id)]
    with pytest.raises(Conflict, match="already has a pending job"):
        hub.jobs.launch(ws, "lab", None, {}, "ann")


def test_a_launch_stores_its_events_with_the_new_job_s_ids_in_one_commit(hub):
    """The job's row and its events are inserted in the launch's one commit: the stored
    and the published events name the job and its workspace."""
    ws = workspace(hub)
    sub = hub.events.subscribe(lambda e: True)
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    stored = hub.db.query(Event).filter(Event.kind == "job").all()
    assert [(e.job_id, e.workspace_id, e.status) for e in stored] == [(job.id, ws.id, "pending")]
    published = sub.queue.get_nowait()
    assert (published["job_id"], published["workspace_id"], published["id"]) == (job.id, ws.id, stored[0].id)
    assert ws.last_used_at == job.created_at is not None
    # a refused launch (the workspace's one unfinished job) leaves nothing behind
    with pytest.raises(Conflict, match="already has a pending job"):
        hub.jobs.launch(ws, "lab", None, {}, "ann")
    assert hub.db.query(Job).count() == 1 and hub.db.query(Event).filter(Event.kind == "job").count() == 1


def test_a_launch_writes_its_rows_with_statements_of_their_own_not_through_the_orm_flush(hub):
    """A launch is a request that comes in bursts (answered one after the other): its job,
    its events and its workspace's row are written by four statements of their own, not by
    the ORM's flush, which cost the hub's loop three times as much. What is stored, what
    the session holds and what is published are as they were: the job's event, then the
    workspace's (``idle`` -> ``active``), in the order of their ids."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    ws = workspace(hub)
    sub = hub.events.subscribe(lambda e: True)
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    statements: list[str] = []
    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", lambda c, cur, st, *_: statements.append(st.split()[0]))
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    assert flushes == []
    # after the checks' queries (the quota's): the job's INSERT (its row comes back, not
    # read again), its event's INSERT, the workspace's UPDATE and its event's INSERT
    assert statements[statements.index("INSERT") :] == ["INSERT", "INSERT", "UPDATE", "INSERT"]
    published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [(e["kind"], e["status"], e["previous"]) for e in published] == [
        ("job", "pending", None),
        ("workspace", "active", "idle"),
    ]
    assert published[0]["id"] < published[1]["id"] and published[1]["data"] == {"name": "w1", "slug": "w1"}
    assert (published[0]["job_id"], published[0]["actor"], published[0]["data"]) == (
        job.id,
        "ann",
        {"job_type": "lab", "resource": "local"},
    )
    # the session's workspace is the stored one, and nothing is left to flush
    assert not hub.db.dirty and not hub.db.new
    assert (ws.status, ws.status_reason, ws.last_used_at) == ("active", None, job.created_at)
    hub.db.expire(ws)
    assert (ws.status, ws.last_used_at, ws.updated_at) == ("active", job.created_at, job.created_at)
    stored = [(e.id, e.kind, e.status) for e in hub.db.query(Event).order_by(Event.id)]
    assert stored[-2:] == [(published[0]["id"], "job", "pending"), (published[1]["id"], "workspace", "active")]
    # the session's job is the stored row, with the columns' defaults
    assert hub.db.get(Job, job.id) is job and job not in hub.db.dirty
    assert (job.status, job.target, job.launcher, job.attempts, job.resources, job.url) == (
        "pending",
        "running",
        hub.users["ann"],
        0,
        {},
        None,
    )
    hub.db.expire(job)
    assert (job.status, job.attempts, job.workspace, job.created_at) == ("pending", 0, ws, ws.last_used_at)
    # the job ends (the workspace is idle again), and the next launch is the same
    hub.jobs.stop(job, "ann")
    hub.jobs.transition(job, JobStatus.cancelled)
    hub.db.commit()
    assert ws.status == "idle"
    sub.discard_queued()
    again = hub.jobs.launch(ws, "lab", None, {}, "ann")
    assert [e["kind"] for e in [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]] == ["job", "workspace"]
    assert ws.last_used_at == again.created_at


def test_a_status_set_at_once_is_the_change_the_orm_would_store(hub):
    """The launch's "idle -> active" (written by a statement of its own) was a copy of
    :meth:`set_status`'s rule: now one rule, written either way. Written at once, a status
    change is an UPDATE and its event's INSERT, nothing left to flush, and stores and
    publishes what the ORM's flush stores: the same rows, the same events; the same status
    changes only its reason, with no event; an illegal change writes nothing."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    through_orm, at_once = workspace(hub, slug="w1"), workspace(hub, slug="w2")
    sub = hub.events.subscribe(lambda e: True)
    statements: list[str] = []
    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", lambda c, cur, st, *_: statements.append(st.split()[0]))
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    changes = [
        (WorkspaceStatus.error, "disk gone", ["UPDATE", "INSERT"]),
        (WorkspaceStatus.error, "disk still gone", ["UPDATE"]),  # the same status: no event
        (WorkspaceStatus.idle, None, ["UPDATE", "INSERT"]),
    ]
    rows = {}
    for ws in (through_orm, at_once):
        published = []
        for status, reason, written in changes:
            statements.clear()
            flushes.clear()
            hub.workspaces.set_status(ws, status, reason, "ann", at_once=ws is at_once)
            if ws is at_once:
                assert statements == written and flushes == [] and not hub.db.dirty
            hub.db.commit()
            published += [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        with pytest.raises(IllegalTransition):
            hub.workspaces.set_status(ws, WorkspaceStatus.initializing, "no", "ann", at_once=ws is at_once)
        hub.db.rollback()
        hub.db.expire(ws)
        events = hub.db.query(Event).filter(Event.workspace_id == ws.id, Event.kind == "workspace").order_by(Event.id)
        rows[ws is at_once] = (
            (ws.status, ws.status_reason),
            [(e.status, e.previous, e.reason, e.actor) for e in events],
            [(e["status"], e["previous"], e["reason"]) for e in published],
        )
    assert rows[True] == rows[False]
    assert rows[True][0] == ("idle", None)
    assert rows[True][2] == [("error", "idle", "disk gone"), ("idle", "error", None)]


def test_a_launch_that_fails_after_its_insert_leaves_nothing_for_the_next_commit(hub, monkeypatch):
    """JupyterHub's session is shared by every request, and a handler's ``finish`` rolls it
    back only when it holds dirty objects: a launch's statements leave none, so a launch
    that fails after its job's INSERT rolls back itself. Otherwise the next request's
    commit would store the job (and its workspace left idle) and publish its event."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    ws = workspace(hub)
    sub = hub.events.subscribe(lambda e: True)

    def broken(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(hub.workspaces, "launched_in", broken)
    with pytest.raises(RuntimeError):
        hub.jobs.launch(ws, "lab", None, {}, "ann")
    if hub.db.dirty:  # what JupyterHub's BaseHandler.finish does
        hub.db.rollback()
    hub.db.commit()  # another request's
    assert hub.db.query(Job).count() == 0 and hub.db.query(Event).filter(Event.kind == "job").count() == 0
    assert sub.queue.qsize() == 0


def test_events_are_published_in_the_order_of_their_ids_however_they_were_stored(hub):
    """An event inserted at once (a launch's) may be stored after one the ORM flushed
    earlier in the same transaction and published before it: the streams resume after
    the last id they got, so the bus publishes in the order of the ids."""
    ws = workspace(hub)
    sub = hub.events.subscribe(lambda e: True)
    hub.workspaces.record(ws, "idle", None, "flushed first", "ann")
    hub.db.flush()
    hub.workspaces.record(ws, "idle", None, "inserted at once", "ann", at_once=True)
    hub.db.commit()
    published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [e["reason"] for e in published] == ["flushed first", "inserted at once"]
    assert published[0]["id"] < published[1]["id"]
    # a rollback publishes neither kind
    hub.workspaces.record(ws, "idle", None, "rolled back", "ann", at_once=True)
    hub.workspaces.record(ws, "idle", None, "rolled back too", "ann")
    hub.db.rollback()
    hub.db.commit()
    assert sub.queue.empty()
    assert not hub.db.query(Event).filter(Event.reason.like("rolled back%")).count()


def test_a_launch_makes_no_row_objects_through_the_orm_and_publishes_its_rows_as_stored(hub):
    """A launch request (200 of them in a burst are answered one after the other) makes its
    job's object as a load does and its events none: the ORM's constructor, with an
    attribute event for each column, cost the event loop as much as each statement. What
    it publishes and returns is the rows as stored."""
    hub.db.expire_on_commit = False  # as JupyterHub's session
    ws = workspace(hub)
    sub = hub.events.subscribe(lambda e: True)
    made = []

    def constructed(target, args, kwargs):
        made.append(target)

    for cls in (Job, Event):
        sa_event.listen(cls, "init", constructed)
    try:
        job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    finally:
        for cls in (Job, Event):
            sa_event.remove(cls, "init", constructed)
    assert made == []
    published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [(e["kind"], e["status"], e["previous"]) for e in published] == [
        ("job", "pending", None),
        ("workspace", "active", "idle"),
    ]
    assert job in hub.db and not hub.db.dirty and hub.db.get(Job, job.id) is job
    assert job.workspace is ws and job.status == "pending" and job.created_at == job.updated_at
    stored = {e.id: event_model(e) for e in hub.db.scalars(select(Event))}
    assert published == [stored[e["id"]] for e in published]


def test_a_list_reads_the_unfinished_and_latest_jobs_in_one_query_as_it_read_them_in_two(hub):
    ended_then_running, ended, running, none = (workspace(hub, slug=s) for s in ("a", "b", "c", "d"))
    first = hub.jobs.launch(ended_then_running, "lab", None, {}, "ann")
    hub.jobs.stop(first, "ann")
    hub.jobs.transition(first, JobStatus.cancelled)
    second = hub.jobs.launch(ended_then_running, "lab", None, {}, "ann")
    over = hub.jobs.launch(ended, "lab", None, {}, "ann")
    hub.jobs.stop(over, "ann")
    hub.jobs.transition(over, JobStatus.cancelled)
    third = hub.jobs.launch(running, "lab", None, {}, "ann")
    ids = [ws.id for ws in (ended_then_running, ended, running, none)]
    active, latest = hub.jobs.active_and_latest_jobs(ids)
    assert (active, latest) == (hub.jobs.active_jobs(ids), hub.jobs.latest_jobs(ids))
    assert active == {ended_then_running.id: second, running.id: third}
    assert latest == {ended_then_running.id: second, ended.id: over, running.id: third}
    assert hub.jobs.active_and_latest_jobs([]) == ({}, {})


def test_running_stores_where_the_job_answers_and_the_end_clears_it(hub):
    ws = workspace(hub)
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    hub.jobs.transition(job, JobStatus.running, node="node7")
    assert (job.url, job.node) == ("/user/ann/w1/lab", "node7")
    hub.jobs.stop(job, "ann")
    assert (job.status, job.target, job.outcome) == ("stopping", "stopped", "completed")
    hub.jobs.transition(job, JobStatus.completed)
    assert (job.url, job.node, ws.status) == (None, None, "idle")
    assert hub.servers.revoked == [("ann", "w1")]  # every end of a job revokes its tokens
    with pytest.raises(IllegalTransition):
        hub.jobs.transition(job, JobStatus.running)


async def test_the_end_of_a_job_is_sent_before_the_work_it_wakes_runs(hub):
    """A job's end wakes the batch queue (a slot may be free) and the usage worker (what
    the job wrote): the streams that the end's commit wakes send its event first, not
    after those (a stop's end to its event waited ~1.5 ms for them). Failed before: the
    queue's worker and the usage worker ran before the stream's reader."""
    ws = workspace(hub)
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    hub.jobs.transition(job, JobStatus.running)
    hub.jobs.stop(job, "ann")
    hub.db.commit()
    order: list[str] = []
    measured: list[int] = []
    ended = asyncio.Event()
    queue: WorkQueue = WorkQueue()
    hub.jobs.wake_queue = lambda: queue.put(("batch-queue", 0))

    def job_ended(workspace_id):
        measured.append(workspace_id)
        ended.set()

    hub.jobs.job_ended = job_ended
    sub = hub.events.subscribe(lambda event: event["status"] == "completed")

    async def stream():
        batch = await sub.next_batch(10)
        order.append(f"event {batch[0]['status']}")

    async def queue_worker():
        key = await queue.get()
        order.append(f"queue step {key[0]}")

    async def usage_worker():
        await ended.wait()
        order.append("usage step")

    tasks = [asyncio.ensure_future(f()) for f in (stream, queue_worker, usage_worker)]
    await asyncio.sleep(0)  # all three wait
    hub.jobs.transition(job, JobStatus.completed)
    hub.db.commit()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order[0] == "event completed"
    assert sorted(order[1:]) == ["queue step batch-queue", "usage step"] and measured == [ws.id]
    hub.events.unsubscribe(sub)


def batch_job(ws: Workspace, status: str) -> Job:
    """A batch job of ``ws`` (not added to the session)."""
    return Job(
        workspace=ws,
        workspace_id=ws.id,
        owner_id=ws.owner_id,
        job_type="lab",
        resource="local",
        interactive=False,
        status=status,
        target="running",
        server_name="w1",
        created_at=utcnow(),
    )


def test_a_batch_jobs_change_is_stored_at_once_and_its_events_keep_their_order(hub):
    """A batch job's steps each record a change and commit (three a job: a burst of short
    jobs is bounded by that): its event is inserted at once, not by the ORM's flush, which
    cost a fifth of such a step. An event that would come before one waiting for the
    flush (here the workspace's ``idle``) waits too: ids, the order the events are
    published and replayed in, stay the order of the changes."""
    hub.db.expire_on_commit = False
    ws = workspace(hub)
    ws.status = "active"
    job = batch_job(ws, "pending")
    hub.db.add(job)
    hub.db.commit()
    sub = hub.events.subscribe(lambda e: True)
    stored = select(Event.status).where(Event.job_id == job.id).order_by(Event.id)
    hub.jobs.transition(job, JobStatus.queued)
    hub.jobs.transition(job, JobStatus.running)
    assert hub.db.connection().execute(stored).scalars().all() == ["queued", "running"]  # no flush asked
    hub.db.commit()
    hub.jobs.transition(job, JobStatus.completed)
    hub.db.commit()
    published = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert [(e["kind"], e["status"]) for e in published] == [
        ("job", "queued"),
        ("job", "running"),
        ("workspace", "idle"),
        ("job", "completed"),
    ]
    assert [e["id"] for e in published] == sorted(e["id"] for e in published)


def test_the_end_of_a_job_idles_its_workspace_as_the_session_sees_its_other_jobs_and_flushes_nothing(hub):
    """Whether the workspace has another unfinished job is asked without a flush (the
    job's change and its event go out in the commit's one flush), and the workspace's
    jobs changed or added but not flushed yet count as the session has them."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    ws = workspace(hub)
    lab = hub.jobs.launch(ws, "lab", None, {}, "ann")

    other = batch_job(ws, "running")
    hub.db.add(other)
    hub.db.commit()
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    # another job runs: the workspace stays active
    hub.jobs.transition(lab, JobStatus.cancelled)
    assert (ws.status, flushes) == ("active", [])
    hub.db.commit()
    flushes.clear()
    # a third job added (not flushed) when the other ends: the workspace stays active
    third = batch_job(ws, "pending")
    hub.db.add(third)
    hub.jobs.transition(other, JobStatus.completed)
    assert (ws.status, flushes) == ("active", [])
    # the third ends in the same transaction (the other's end not flushed): the workspace idles
    hub.jobs.transition(third, JobStatus.cancelled)
    assert (ws.status, flushes) == ("idle", [])
    hub.db.commit()


class FakeRunner:
    """A batch runner whose jobs run as soon as handed over, until told they ended."""

    def __init__(self):
        self.submitted: list[BatchLaunch] = []
        self.ended: set[int] = set()

    def log_path(self, launch):
        return f"/runner/logs/{launch.job_id}.log"

    def granted_time_limit(self, seconds):
        return seconds

    async def submit(self, launch, wake, prepare):
        prepare()
        self.submitted.append(launch)
        return f"r{launch.job_id}"

    async def state(self, launch, resource_id, wake):
        if launch.job_id in self.ended:
            return RunState("ended", outcome="completed", exit_code=0, started_at=utcnow(), ended_at=utcnow())
        return RunState("running", started_at=utcnow())


def offer_true_batch_jobs(hub, runner: FakeRunner | None = None) -> FakeRunner:
    """The hub's one job type a ``true`` batch job ("run") on the resource ``local``,
    run by ``runner`` (a new one if none): the runner."""
    runner = runner or FakeRunner()
    hub.jobs.runners = {"local": runner}
    hub.jobs.job_types = parse_job_types({"run": {"interactive": False, "cmd": ["true"]}}, ["local"])
    return runner


def batch_queue(hub, runner: FakeRunner) -> tuple[BatchSteps, QueueSteps]:
    """The batch steps of ``runner`` (resource ``local``, 2 slots) and the queue that hands jobs over to it."""
    batch = BatchSteps(hub.jobs, {"local": runner}, hub.pool, log)
    queue = QueueSteps(
        hub.jobs,
        log,
        resources=["local"],
        hub_limits={"local": 2},
        user_limit=lambda user: None,
        hand_over=batch.hand_over,
    )
    return batch, queue


async def handed_over_batch_job(hub, runner: FakeRunner):
    """A ``true`` batch job of a new workspace, launched and handed over to ``runner``
    by the queue: its id, its workspace, and the batch and job steps that follow it."""
    offer_true_batch_jobs(hub, runner)
    ws = workspace(hub)
    job_id = hub.jobs.launch(ws, "run", None, {}, "ann").id
    batch, queue = batch_queue(hub, runner)
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    await queue.reconcile(0)
    await batch._submits[job_id]
    return job_id, ws, batch, steps


async def test_a_batch_job_is_stored_without_a_flush_and_its_rows_are_not_read_again_on_its_way(hub):
    """A batch launch inserts the job and its events with statements of their own, no
    ORM flush; its log file (the runner's, named by its id) is stored at the hand-over.
    From the hand-over to its end its row is held: the hand-over's end and its steps
    read no job row."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    job = hub.jobs.launch(ws, "run", None, {}, "ann")
    job_id = job.id
    assert (flushes, job.log_path, hub.jobs.log_path(job)) == ([], None, f"/runner/logs/{job_id}.log")
    batch, queue = batch_queue(hub, runner)
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    del job  # nothing else holds the row
    row_reads: list[str] = []  # a job's row looked up by its id

    def read(conn, cursor, statement, *_):
        if statement.startswith("SELECT uws_jobs.id, uws_jobs.workspace_id") and "WHERE uws_jobs.id = ?" in statement:
            row_reads.append(statement)

    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", read)
    await queue.reconcile(0)
    await batch._submits[job_id]  # the hand-over
    job = hub.db.get(Job, job_id)
    assert (job.status, job.resource_id, job.log_path) == ("running", f"r{job_id}", f"/runner/logs/{job_id}.log")
    assert runner.submitted[0].log_path == job.log_path
    runner.ended.add(job_id)
    del job
    await steps.reconcile(job_id)
    assert row_reads == []
    assert hub.db.get(Job, job_id).status == "completed" and ws.status == "idle"
    assert batch._rows == {}
    await hub.pool.close()


async def test_a_batch_job_that_completed_without_a_start_time_is_recorded_completed(hub):
    """A runner may say a job completed without saying when it started (a SLURM job that
    ended between two polls, its record without a start): the job went from ``queued``
    to ``completed``, a transition refused, and its step failed for as long as it was
    retried. It passes through ``running``, dated by its end."""

    class NoStartRunner(FakeRunner):
        async def state(self, launch, resource_id, wake):
            return RunState("ended", outcome="completed", exit_code=0, ended_at=utcnow())

    job_id, _, _, steps = await handed_over_batch_job(hub, NoStartRunner())
    await steps.reconcile(job_id)
    job = hub.db.get(Job, job_id)
    assert (job.status, job.exit_code) == ("completed", 0)
    assert job.running_at is not None and job.running_at <= job.finished_at
    await hub.pool.close()


async def test_a_batch_jobs_launch_is_made_once_from_its_hand_over_to_its_end(hub, monkeypatch):
    """The steps of a job handed over ask its runner about it with what the runner was
    handed: making it again (the account's look-up, the command's rendering) was a tenth
    of the step that records a short job's end. After a restart it is made again."""
    hub.db.expire_on_commit = False
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    made: list[int] = []
    batch_launch = hub.jobs.batch_launch
    monkeypatch.setattr(hub.jobs, "batch_launch", lambda job: made.append(job.id) or batch_launch(job))
    job_id = hub.jobs.launch(ws, "run", None, {}, "ann").id
    batch, queue = batch_queue(hub, runner)
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    await queue.reconcile(0)
    await batch._submits[job_id]
    await steps.reconcile(job_id)  # a step while it runs
    runner.ended.add(job_id)
    await steps.reconcile(job_id)
    assert made == [job_id] and hub.db.get(Job, job_id).status == "completed"
    assert batch._launches == {}
    # a job the steps never handed over (a restarted hub's): its launch is made
    other = hub.jobs.launch(workspace(hub, slug="w2"), "run", None, {}, "ann")
    other.submitted_at, other.attempts, other.status = utcnow(), 1, "queued"
    hub.db.commit()
    made.clear()
    await steps.reconcile(other.id)
    assert made == [other.id] and other.status == "running"
    await hub.pool.close()


async def test_the_queue_reads_the_slots_held_in_one_query_and_each_owners_last_start_once(hub):
    """A step of the queue (one at every end of a job in a burst) read the slots held twice
    (the hub's per resource, each owner's) and when each waiting owner last had a job
    started, a query of their whole history, at every step: now the slots held in one
    query, and each owner's last start once, when they first wait (only the queue starts
    jobs). The choices are the same: round-robin, ties to whoever started least
    recently; a restarted hub's queue reads the last starts again."""
    hub.db.expire_on_commit = False
    runner = offer_true_batch_jobs(hub)
    mine, bens = workspace(hub), workspace(hub, "ben", "w2")
    anns = [hub.jobs.launch(mine, "run", None, {}, "ann").id for _ in range(3)]
    ben_ids = [hub.jobs.launch(bens, "run", None, {}, "ben").id for _ in range(3)]
    batch, queue = batch_queue(hub, runner)  # 2 slots
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    statements: list[str] = []
    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", lambda c, cur, st, *_: statements.append(st))

    def reads(text: str) -> int:
        return sum(text in statement for statement in statements)

    def started() -> list[int]:
        return [launch.job_id for launch in runner.submitted]

    async def step() -> None:
        await queue.reconcile(0)
        for task in list(batch._submits.values()):
            await task

    async def end(job_id: int) -> None:
        runner.ended.add(job_id)
        await steps.reconcile(job_id)
        assert hub.db.get(Job, job_id).status == "completed"

    await step()
    assert started() == [anns[0], ben_ids[0]]
    # the two owners' last starts in one query (they wait for the first time)
    assert (reads("max(uws_jobs.submitted_at)"), reads("count(uws_jobs.id)")) == (1, 1)
    for job_id in (anns[0], ben_ids[0]):
        await end(job_id)
    statements.clear()
    await step()
    # both hold none: ann started least recently, then ben (who holds fewer)
    assert started()[2:] == [anns[1], ben_ids[1]]
    assert (reads("max(uws_jobs.submitted_at)"), reads("count(uws_jobs.id)")) == (0, 1)
    # a restarted hub's queue: the last starts read from the jobs, the same choice
    await end(anns[1])
    await end(ben_ids[1])
    _, queue = batch_queue(hub, runner)
    queue.hand_over = batch.hand_over
    statements.clear()
    await step()
    assert started()[4:] == [anns[2], ben_ids[2]]
    assert reads("max(uws_jobs.submitted_at)") == 1
    await hub.pool.close()


async def test_the_queue_counts_the_slots_held_without_reading_the_jobs_waiting(hub):
    """At each step of the fair queue (one at every end of a job in a burst) the slots
    held are counted: SQLite read every unfinished job through the index of their status,
    the jobs waiting (hundreds in a burst) with them. The jobs are indexed by status, kind
    and hand-over: the count reads the unfinished interactive jobs and the batch jobs
    handed over only."""
    runner = offer_true_batch_jobs(hub)
    hub.jobs.launch(workspace(hub), "run", None, {}, "ann")
    _, queue = batch_queue(hub, runner)
    asked: list[tuple[str, tuple]] = []

    def ask(conn, cursor, statement, parameters, *_):
        if "UNION ALL" in statement:
            asked.append((statement, parameters))

    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", ask)
    await queue.reconcile(0)
    sa_event.remove(hub.db.get_bind(), "before_cursor_execute", ask)
    [(statement, parameters)] = asked
    plan = [row[3] for row in hub.db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
    index = "USING INDEX ix_uws_jobs_status_interactive_submitted_at"
    assert [step for step in plan if step.startswith("SEARCH")] == [
        f"SEARCH uws_jobs {index} (status=? AND interactive=?)",
        f"SEARCH uws_jobs {index} (status=? AND interactive=? AND submitted_at>?)",
    ]
    await hub.pool.close()


def _whole_queue_plan(hub, plan, waiting, held, last_start, user_limit, room) -> list[int]:
    """What the queue chose when each of its steps read every waiting job (ranked by
    owner and resource, the first ``window`` of each and the fresh ones kept): ``plan``
    over those, with the same slots held, last starts, limits and room."""
    window = None if any(free is None for free in room.values()) else sum(room.values())
    columns = (Job.id, Job.owner_id, Job.resource, Job.status)
    where = (
        Job.interactive.is_(False),
        Job.submitted_at.is_(None),
        Job.target == "running",
        Job.status.in_(["pending", "queued"]),
    )
    rank = func.row_number().over(partition_by=(Job.owner_id, Job.resource), order_by=Job.id).label("rank")
    ranked = select(*columns, rank).where(*where).subquery()
    query = select(ranked.c.id, ranked.c.owner_id, ranked.c.resource).order_by(ranked.c.id)
    if window is not None:
        query = query.where((ranked.c.rank <= window) | (ranked.c.status == "pending"))
    rows = [Waiting(*row) for row in hub.db.execute(query)]
    return plan(rows, held, last_start, user_limit, room)


async def test_the_queue_chooses_as_when_it_read_every_waiting_job_at_each_step(hub, monkeypatch):
    """A step of the queue read every waiting job (a burst's hundreds, at each of its
    steps); it now keeps the jobs it marked queued and checks only the first of each
    owner and resource. On a mixed queue (two users, two resources with their limits, a
    user quota, held jobs let in late, jobs cancelled while they wait, a restart of the
    hub's queue) it chooses, at every step, what a read of the whole queue chose."""
    rng = random.Random(20261207)
    runners = {"local": FakeRunner(), "other": FakeRunner()}
    hub.jobs.runners = runners
    hub.jobs.job_types = parse_job_types(
        {"run": {"interactive": False, "cmd": ["true"], "resources": ["local", "other"]}}, ["local", "other"]
    )
    spaces = [workspace(hub), workspace(hub, "ben", "w2")]
    batch = BatchSteps(hub.jobs, runners, hub.pool, log)
    ann = hub.users["ann"].id

    def new_queue() -> QueueSteps:
        return QueueSteps(
            hub.jobs,
            log,
            resources=["local", "other"],
            hub_limits={"local": 3, "other": 2},
            user_limit=lambda user: 3 if user == ann else None,
            hand_over=batch.hand_over,
        )

    queue = new_queue()
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    plans: list[tuple[list[int], list[int]]] = []
    real_plan = queue_module.plan_starts

    def both_plans(*args):
        chosen = real_plan(*args)
        plans.append((chosen, _whole_queue_plan(hub, real_plan, *args)))
        return chosen

    monkeypatch.setattr(queue_module, "plan_starts", both_plans)

    def jobs_in(*statuses: str) -> list[Job]:
        return list(hub.db.scalars(select(Job).where(Job.status.in_(statuses)).order_by(Job.id)))

    async def step() -> None:
        await queue.reconcile(0)
        for task in list(batch._submits.values()):
            await task

    for turn in range(60):
        for _ in range(rng.randint(0, 4)):
            resource = rng.choice(["local", "local", "other"])
            hub.jobs.launch(rng.choice(spaces), "run", resource, {}, "ann", held=rng.random() < 0.2)
        held = [job for job in jobs_in("pending") if job.target == "held"]
        if held and rng.random() < 0.5:
            hub.jobs.run(rng.choice(held), "ann")
        waiting = [job for job in jobs_in("queued") if job.submitted_at is None]
        if waiting and rng.random() < 0.3:
            cancelled = rng.choice(waiting)
            hub.jobs.stop(cancelled, "ann")
            await steps.reconcile(cancelled.id)
        for job in rng.sample(jobs_in("running"), k=min(2, len(jobs_in("running")))):
            runners[job.resource].ended.add(job.id)
            await steps.reconcile(job.id)
        if turn == 30:
            queue = new_queue()  # a restarted hub's
        await step()
    while jobs_in("running", "queued", "pending"):
        for job in jobs_in("running"):
            runners[job.resource].ended.add(job.id)
            await steps.reconcile(job.id)
        for job in jobs_in("pending"):
            if job.target == "held":
                hub.jobs.run(job, "ann")
        await step()
    assert [chosen for chosen, _ in plans] == [whole for _, whole in plans]
    assert sum(len(chosen) for chosen, _ in plans) > 50 and jobs_in("cancelled")
    await hub.pool.close()


async def test_a_step_of_the_queue_does_no_more_work_for_a_longer_queue(hub):
    """At each step (one at every end of a job in a burst) the queue read and ranked every
    waiting job: a burst of N jobs cost the square of N. The work of a step that starts
    the next job (counted in SQLite's instructions) is now the same with 400 waiting as
    with 20 (without a core-hours quota: its check reads the owner's jobs of the period)."""
    hub.quotas.defaults = Limits(concurrent_jobs=2)
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    batch, queue = batch_queue(hub, runner)  # 2 slots
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    sqlite = hub.db.connection().connection.driver_connection

    async def step() -> None:
        await queue.reconcile(0)
        for task in list(batch._submits.values()):
            await task

    async def next_start() -> int:
        """End a running job; the instructions of the step that starts the next."""
        [ended, *_] = hub.db.scalars(select(Job.id).where(Job.status == "running").order_by(Job.id))
        runner.ended.add(ended)
        await steps.reconcile(ended)
        hub.db.commit()
        done = [0]
        sqlite.set_progress_handler(lambda: done.__setitem__(0, done[0] + 1), 1)
        before = len(runner.submitted)
        await step()
        sqlite.set_progress_handler(None, 1)
        assert len(runner.submitted) == before + 1
        return done[0]

    def launch(count: int) -> None:
        for _ in range(count):
            hub.jobs.launch(ws, "run", None, {}, "ann")

    launch(22)
    await step()  # two start, 20 wait
    short = await next_start()
    launch(400)
    await step()  # marks the new ones queued
    long = await next_start()
    assert long < 1.5 * short, (short, long)
    await hub.pool.close()


def test_a_batch_launch_counts_its_owners_unfinished_jobs_without_reading_their_history(hub):
    """Each batch launch counts its owner's unfinished batch jobs (against
    ``max_unfinished_batch_jobs_per_user``): SQLite read every job the owner ever had
    through the index of the owner alone, a burst of launches each costlier than the one
    before and an account's history making every launch slower. The jobs are indexed
    by owner, kind and status: the count is read in the index."""
    offer_true_batch_jobs(hub)
    hub.jobs.max_unfinished_batch_jobs = 3
    ws = workspace(hub)
    hub.db.add_all([batch_job(ws, "completed") for _ in range(3)])
    hub.db.commit()
    asked: list[tuple[str, tuple]] = []

    def ask(conn, cursor, statement, parameters, *_):
        if statement.startswith("SELECT count(uws_jobs.id)"):
            asked.append((statement, parameters))

    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", ask)
    for _ in range(3):
        hub.jobs.launch(ws, "run", None, {}, "ann")
    with pytest.raises(TooManyRequests):
        hub.jobs.launch(ws, "run", None, {}, "ann")
    sa_event.remove(hub.db.get_bind(), "before_cursor_execute", ask)
    statement, parameters = asked[-1]
    plan = [row[3] for row in hub.db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
    assert plan == [
        "SEARCH uws_jobs USING COVERING INDEX ix_uws_jobs_owner_id_interactive_status"
        " (owner_id=? AND interactive=? AND status=?)"
    ]


async def test_a_batch_jobs_start_and_end_write_its_row_without_the_orms_flush(hub):
    """The hand-over's end (the job ``running``, its id on its resource) and the step that
    records its end change the job's row only: it is written by an UPDATE of its own, not
    by the commit's flush (two thirds of those commits). What is stored is what the flush
    stored; the workspace still goes idle with its last job, through the flush."""
    hub.db.expire_on_commit = False
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    first, second = (hub.jobs.launch(ws, "run", None, {}, "ann").id for _ in range(2))
    batch, queue = batch_queue(hub, runner)
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    await queue.reconcile(0)
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    for task in [batch._submits[first], batch._submits[second]]:
        await task
    assert flushes == []
    runner.ended.add(first)
    await steps.reconcile(first)
    assert flushes == [] and not hub.db.dirty
    job = hub.db.get(Job, first)
    seen = {c: getattr(job, c) for c in ("status", "target", "resource_id", "exit_code", "running_at", "finished_at")}
    hub.db.expire(job)
    assert {c: getattr(job, c) for c in seen} == seen and seen["status"] == "completed"
    assert job.updated_at >= job.finished_at and ws.status == "active"
    runner.ended.add(second)
    await steps.reconcile(second)
    assert hub.db.get(Job, second).status == "completed" and ws.status == "idle"
    await hub.pool.close()


async def test_a_queue_step_writes_the_jobs_it_queues_and_starts_without_the_orms_flush(hub):
    """A step of the queue (one at every launch and every end of a job in a burst) marks
    the fresh jobs queued and the chosen ones handed over (their attempt, their log file):
    each job's row is written by an UPDATE of its own, not by the commit's flush (most of
    the step's commit). What is stored is what the flush stored."""
    hub.db.expire_on_commit = False
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    ids = [hub.jobs.launch(ws, "run", None, {}, "ann").id for _ in range(3)]
    _, queue = batch_queue(hub, runner)  # 2 slots
    flushes: list[int] = []
    sa_event.listen(hub.db, "after_flush", lambda *_: flushes.append(1))
    await queue.reconcile(0)
    assert flushes == [] and not hub.db.dirty
    columns = ("status", "reason", "queued_at", "submitted_at", "attempts", "log_path", "updated_at")
    seen = [{c: getattr(job, c) for c in columns} for job in (hub.db.get(Job, job_id) for job_id in ids)]
    hub.db.expire_all()
    assert [{c: getattr(hub.db.get(Job, job_id), c) for c in columns} for job_id in ids] == seen
    assert [(s["status"], s["attempts"], s["submitted_at"] is not None) for s in seen] == [
        ("queued", 1, True),
        ("queued", 1, True),
        ("queued", 0, False),
    ]
    assert (
        seen[2]["reason"] == "Waiting for its turn in the hub's queue"
        and seen[0]["log_path"] == f"/runner/logs/{ids[0]}.log"
    )
    await hub.pool.close()


async def test_a_queue_step_with_no_slot_free_reads_the_slots_held_and_the_fresh_jobs_only(hub):
    """In a burst every launch wakes the queue, with no slot free: the step marks the fresh
    jobs queued. It read them, then loaded them by their ids; they are read once, as the
    rows it changes: two queries (the slots held, the fresh jobs) and each job's event and
    row written."""
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    for _ in range(3):
        hub.jobs.launch(ws, "run", None, {}, "ann")
    _, queue = batch_queue(hub, runner)  # 2 slots
    await queue.reconcile(0)  # two start, one waits
    fresh = [hub.jobs.launch(ws, "run", None, {}, "ann").id for _ in range(2)]
    statements: list[str] = []
    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", lambda c, cur, st, *_: statements.append(st))
    await queue.reconcile(0)
    assert [st.split()[0] for st in statements] == ["SELECT", "SELECT", "INSERT", "INSERT", "UPDATE", "UPDATE"]
    assert "count(uws_jobs.id)" in statements[0]
    assert [hub.db.get(Job, job_id).status for job_id in fresh] == ["queued", "queued"]
    await hub.pool.close()


def test_a_workspaces_unfinished_jobs_are_found_without_reading_its_finished_ones(hub):
    """Every end of a job asks whether its workspace has another unfinished one: SQLite
    read the workspace's jobs one by one through the index of their workspace, the
    finished ones before an unfinished one (in a burst of batch jobs, each end longer than
    the one before). The jobs are indexed by workspace and status: the question reads
    the workspace's unfinished jobs only."""
    ws = workspace(hub)
    job = hub.jobs.launch(ws, "lab", None, {}, "ann")
    asked: list[tuple[str, tuple]] = []

    def ask(conn, cursor, statement, parameters, *_):
        if "uws_jobs.id NOT IN" in statement:
            asked.append((statement, parameters))

    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", ask)
    assert Job.any_unfinished_in(hub.db, ws.id, excluding=job) is False
    sa_event.remove(hub.db.get_bind(), "before_cursor_execute", ask)
    [(statement, parameters)] = asked
    plan = [row[3] for row in hub.db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
    assert plan == [
        "SEARCH uws_jobs USING COVERING INDEX ix_uws_jobs_workspace_id_status (workspace_id=? AND status=?)"
    ]


async def test_an_editors_batch_job_is_handed_over_after_a_kill_of_the_workspaces_strays(hub, monkeypatch):
    """As an editor's server (see test_an_editors_start_waits_for_a_kill_of_the_workspaces_strays_under_way):
    the hand-over of an editor's batch job, which gets the workspace's group, waits while a
    kill of the workspace's strays is under way; the owner's, in the same workspace, does not."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    monkeypatch.setattr(hub.jobs, "posix_group_prefix", "uws-ws-")
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    sharing.share(ws, "editor", "ann", user=hub.users["ben"])
    await sharing.apply_posix(ws)
    batch, queue = batch_queue(hub, runner)
    with hub.jobs.group_kills.under_way([ws.id]):
        owners = hub.jobs.launch(ws, "run", None, {}, "ann")
        editors = hub.jobs.launch(ws, "run", None, {}, "ben", launcher=hub.users["ben"])
        await queue.reconcile(0)
        await batch._submits[owners.id]  # (the editor's hand-over, spawned with it, had as long)
        assert [launch.job_id for launch in runner.submitted] == [owners.id]
        assert not batch._submits[editors.id].done()
    await batch._submits[editors.id]
    assert [launch.job_id for launch in runner.submitted] == [owners.id, editors.id]
    assert runner.submitted[1].group == f"uws-ws-{ws.id}"
    await hub.pool.close()


async def test_the_logs_of_all_running_jobs_are_looked_at_in_one_thread_call(hub, monkeypatch):
    """At each reconciler scan the running jobs whose logs take more than
    UWSHub.max_job_log_bytes of disk are stopped, failed, saying why: their logs are
    looked at in one thread call for all of them (a thread hop and two lookups per job
    before); a job asked to stop meanwhile is left to its stop."""
    hub.jobs.max_log_bytes = 1 << 20
    os.makedirs(hub.jobs.job_log_dir)
    jobs = {}
    for owner, slug, size in (("ann", "big", 2 << 20), ("ann", "small", 1000), ("ben", "stopping", 2 << 20)):
        job = jobs[slug] = hub.jobs.launch(workspace(hub, owner, slug), "lab", None, {}, owner)
        hub.jobs.transition(job, JobStatus.running)
        with open(hub.jobs.log_path(job), "wb") as f:
            f.write(b"x" * size)
    hub.db.commit()
    hub.jobs.stop(jobs["stopping"], "ben")
    calls = []
    to_thread = asyncio.to_thread

    def counted(func, *args):
        calls.append(func)
        return to_thread(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    assert await hub.jobs.stop_logs_too_large() == [jobs["big"].id]
    assert len(calls) == 1
    big = jobs["big"]
    assert (big.status, big.target, big.outcome) == ("stopping", "stopped", "failed")
    assert big.reason == f"The job's output took more than {1 << 20} bytes of the hub's disk (UWSHub.max_job_log_bytes)"
    assert (jobs["small"].status, jobs["stopping"].reason) == ("running", "Stopped on request")
    # none over: nothing stopped, in one call again
    assert await hub.jobs.stop_logs_too_large() == [] and len(calls) == 2


def test_a_link_at_a_jobs_log_is_not_followed(tmp_path):
    """A SLURM job's log lies in its account's own folder, where the job may put a link in
    its place: the hub (root) does not look at what it names (a path the job cannot
    reach, whose size the job learnt from its failure; a hung file system, which held
    the scan)."""
    from uws_hub.jobs.logs import logs_taking_more

    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    with open(hidden / "big", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 2 << 20)
    (tmp_path / "job-1.log").symlink_to(hidden / "big")
    (tmp_path / "job-2.log").write_bytes(b"x" * (2 << 20))
    paths = {job_id: str(tmp_path / f"job-{job_id}.log") for job_id in (1, 2, 3)}
    assert logs_taking_more(paths, 1 << 20) == [2]


def test_a_stop_before_the_job_ran_cancels_it(hub):
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    assert hub.jobs.stop(job, "ann").outcome == "cancelled"
    assert hub.jobs.stop(job, "ann") is job  # idempotent


# ---------------------------------------------------------------- quotas
def test_launch_checks_refuse_over_the_concurrent_jobs_quota(hub):
    for slug in ("a", "b"):
        hub.jobs.launch(workspace(hub, slug=slug), "lab", None, {}, "ann")
    with pytest.raises(QuotaExceeded, match="Concurrent job quota: ann's unfinished jobs would be 3"):
        hub.jobs.launch(workspace(hub, slug="c"), "lab", None, {}, "ann")


def test_a_user_s_override_counts_from_the_launch_after_it_is_set_and_until_it_is_removed(hub):
    """The quota service remembers who has an override (no query for anyone else's
    launch): setting one and removing it take effect at once."""
    ann = hub.users["ann"]
    hub.jobs.launch(workspace(hub, slug="a"), "lab", None, {}, "ann")
    assert hub.quotas.limits_for(ann).concurrent_jobs == 2  # the default (read: no override)
    hub.quotas.set_override(Limits(concurrent_jobs=1), "admin", user=ann)
    with pytest.raises(QuotaExceeded, match="Concurrent job quota"):
        hub.jobs.launch(workspace(hub, slug="b"), "lab", None, {}, "ann")
    hub.quotas.set_override(Limits(concurrent_jobs=5), "admin", user=ann)
    assert hub.quotas.limits_for(ann).concurrent_jobs == 5
    hub.quotas.set_override(Limits(), "admin", user=ann)  # removed
    assert hub.quotas.override_for(user=ann) is None and hub.quotas.limits_for(ann).concurrent_jobs == 2
    hub.jobs.launch(workspace(hub, slug="c"), "lab", None, {}, "ann")


def test_accounting_returns_the_jobs_over_budget(hub):
    job = hub.jobs.launch(workspace(hub), "lab", None, {"cpus": 2}, "ann")
    hub.jobs.transition(job, JobStatus.running)
    job.running_at = utcnow() - timedelta(hours=1)  # 2 core-hours of a 1 core-hour quota
    hub.db.commit()
    [(over, reason)] = hub.quotas.account()
    assert over is job and reason.startswith("Core-hour quota used up: ann's jobs used 2")


def test_a_core_hour_quota_of_zero_is_accounted_as_used_up(hub):
    """An admin's quota of 0 core-hours (no compute) for a user with a kept sum of the
    period: the accounting loop divided by the limit to say how much was used and failed
    there, for every user after them too (their jobs over budget ran on)."""
    ann = hub.users["ann"]
    hub.db.execute(delete(Usage))  # (not warned yet this period: the fixture keeps these rows)
    run_batch_job(hub, workspace(hub), seconds=0)
    hub.quotas.set_override(Limits(core_seconds=0), "admin", user=ann)
    try:
        assert hub.quotas.account() == []
    finally:
        hub.quotas.set_override(Limits(), "admin", user=ann)  # (the fixture keeps overrides)
    [notice] = hub.db.scalars(select(Event).where(Event.kind == "notification", Event.owner_id == ann.id))
    assert notice.data["subject"] == "Core-hour quota used up" and "(100%)" in notice.reason


async def test_deleting_finished_jobs_gives_no_core_hours_back(hub):
    """A user over their core-hours deleted their finished jobs, and the check summed the
    jobs left: the run time of the deleted ones was given back and they launched again.
    Compute consumed is consumed: the launch's check, the user's usage and the accounting
    loop (the admin's usage page) all still count the deleted jobs, also when the deletion
    came before any kept sum of the period (a hub upgraded in the middle of it)."""
    ann = hub.users["ann"]
    ws = workspace(hub)
    first = run_batch_job(hub, ws, seconds=2400)
    second = run_batch_job(hub, ws, seconds=1800)  # 4200 core-seconds of a quota of 3600
    hub.db.execute(delete(EndedCoreUsage))  # (no kept sum yet)
    hub.db.commit()
    await hub.jobs.delete(first, "ann")
    assert hub.quotas.usage_of(ann).core_seconds == 4200
    await hub.jobs.delete(second, "ann")
    assert hub.db.scalar(select(func.count(Job.id))) == 0
    assert hub.quotas.usage_of(ann).core_seconds == 4200
    with pytest.raises(QuotaExceeded, match="Core-hour quota: ann's jobs used 1.167 core-hours"):
        hub.jobs.launch(workspace(hub, slug="w2"), "lab", None, {}, "ann")
    hub.quotas.account()
    [row], _ = hub.quotas.usage_list(hub_orm.User.id == ann.id, "name", False, 0, 10)
    assert row["core_hours"] == 4200 / 3600, row


def core_microseconds_of_jobs(hub, user_id: int, now, period: str, deleted: list[Job] = ()) -> int:
    """What a core-hour check should answer, in core-microseconds: every job of the user
    there is or was (``deleted``), its cpus × the part of its real run time in the period."""
    start = period_start(now, period)
    total = 0
    jobs = [*hub.db.scalars(select(Job).where(Job.owner_id == user_id, Job.running_at.is_not(None))), *deleted]
    for job in (job for job in jobs if job.owner_id == user_id and job.running_at is not None):
        ran = min(job.finished_at or now, now) - max(job.running_at, start)
        total += max(0, int((job.resources or {}).get("cpus") or 1) * (ran // timedelta(microseconds=1)))
    return total


@pytest.mark.parametrize("seed", range(4))
async def test_the_core_hour_check_answers_the_jobs_real_run_time(hub, monkeypatch, seed):
    """A launch's core-hour check read every job of its owner's period (a burst of N jobs
    read N² rows); it reads a sum kept as jobs end, and the running jobs. Through random
    starts and ends (some begun before the period, some told late, as after a hub's
    absence), rolled-back ends, deleted jobs, a changed period and a new quota service
    (a restart), its answer (and the accounting loop's) stays the real run time × cpus of
    the jobs there are and of the jobs deleted: a deletion gives no core-hours back."""
    rng = random.Random(seed)
    # the checks' clock an hour on (past every end the hub stamps at its own time)
    real_start = utcnow()
    now = real_start + timedelta(hours=1)
    monkeypatch.setattr(quotas_module, "utcnow", lambda: now)
    hub.quotas.period = "day"
    start = period_start(now, "day")
    ann = hub.users["ann"]
    ws = workspace(hub)
    ben_ws = workspace(hub, owner="ben", slug="b1")

    def moment(after):
        """A random time from ``after`` to the test's start, microseconds included."""
        return after + timedelta(microseconds=rng.randrange(max(1, (real_start - after) // timedelta(microseconds=1))))

    deleted: list[SimpleNamespace] = []  # (what the jobs deleted were: their run time stays used)

    def check() -> None:
        every_user = hub.quotas.core_seconds_by_user(now)  # (the accounting loop's reading)
        for user, _ in ((ann, ws), (hub.users["ben"], ben_ws)):
            expected = core_microseconds_of_jobs(hub, user.id, now, hub.quotas.period, deleted) // 1_000_000
            assert hub.quotas.core_seconds_used(user.id) == expected, (seed, user.name)
            assert every_user.get(user.id, 0) == expected, (seed, user.name)

    for _ in range(80):
        running = [j for j in hub.db.scalars(select(Job).where(Job.status == "running"))]
        ended = [j for j in hub.db.scalars(select(Job).where(Job.finished_at.is_not(None)))]
        action = rng.choice(
            ["start", "start", "start", "end", "end", "end", "cancel", "delete", "rollback", "period", "restart"]
        )
        if action == "start":
            job = batch_job(rng.choice([ws, ben_ws]), "pending")
            job.resources = {"cpus": rng.choice([1, 2, 4])}
            hub.db.add(job)
            hub.db.commit()
            hub.jobs.transition(job, JobStatus.running, at=moment(start - timedelta(hours=5)))
        elif action in ("end", "rollback") and running:
            job = rng.choice(running)
            outcome = rng.choice([JobStatus.completed, JobStatus.failed, JobStatus.cancelled])
            if rng.random() < 0.3:
                hub.jobs.transition(job, JobStatus.stopping)
            hub.jobs.transition(job, outcome, at=moment(job.running_at) if rng.random() < 0.7 else None)
            if action == "rollback":
                hub.db.rollback()
        elif action == "cancel":
            job = batch_job(rng.choice([ws, ben_ws]), "pending")
            hub.db.add(job)
            hub.db.commit()
            hub.jobs.transition(job, JobStatus.cancelled)
        elif action == "delete" and ended:
            job = rng.choice(ended)
            columns = ("owner_id", "running_at", "finished_at", "resources")
            deleted.append(SimpleNamespace(**{name: getattr(job, name) for name in columns}))
            await hub.jobs.delete(job, "ann")
        elif action == "period" and not deleted:
            # (a changed quota_period counts again from the jobs there are: the kept sums
            # are of the period they were kept for)
            hub.quotas.period = rng.choice(["day", "week", "month", "all"])
        elif action == "restart":
            hub.db.commit()
            hub.quotas = QuotaService(
                hub.db,
                hub.quotas.notifier,
                log,
                defaults=hub.quotas.defaults,
                period=hub.quotas.period,
                warning_fraction=0.8,
            )
            hub.jobs.record_end, hub.jobs.keep_ended = hub.quotas.record_job_end, hub.quotas.keep_ended_usage
        if rng.random() < 0.5:
            hub.db.commit()
        check()
    assert hub.db.scalar(select(func.count(Job.id)).where(Job.finished_at.is_not(None))), "no job ended"


def run_batch_job(hub, ws: Workspace, *, seconds: float) -> Job:
    """A batch job of ``ws`` that ran for ``seconds`` until now, committed."""
    job = batch_job(ws, "pending")
    hub.db.add(job)
    hub.db.commit()
    hub.jobs.transition(job, JobStatus.running, at=utcnow() - timedelta(seconds=seconds))
    hub.jobs.transition(job, JobStatus.completed)
    hub.db.commit()
    return job


def kept_sum(hub, user_id: int):
    return hub.db.execute(
        select(EndedCoreUsage.period_start, EndedCoreUsage.core_microseconds).where(EndedCoreUsage.user_id == user_id)
    ).one()


def test_a_sum_made_meanwhile_by_another_transaction_is_added_to_not_replaced(hub, monkeypatch):
    """The period's first end makes its owner's kept sum from their other ended jobs. A sum
    of the period made between its update (which found none) and its insert (another hub
    process on PostgreSQL, whose end this transaction cannot see) was replaced, and the
    core-hours that sum counted were lost: it is added to."""
    ann = hub.users["ann"]
    ws = workspace(hub)
    hub.db.execute(delete(EndedCoreUsage))
    hub.db.commit()
    sum_ended = hub.quotas._sum_ended

    def another_end_meanwhile(rows, start):
        hub.db.connection().execute(
            EndedCoreUsage.__table__.insert().values(
                user_id=ann.id, period=hub.quotas.period, period_start=start, core_microseconds=7_000_000
            )
        )
        return sum_ended(rows, start)

    monkeypatch.setattr(hub.quotas, "_sum_ended", another_end_meanwhile)
    run_batch_job(hub, ws, seconds=60)
    assert kept_sum(hub, ann.id).core_microseconds // 1_000_000 in (67, 68)


def test_a_clock_stepped_back_across_a_periods_start_leaves_the_new_periods_sum(hub, monkeypatch):
    """An end stamped in the previous period (the clock stepped back across the period's
    start) made the sum of that period, replacing the current period's sum and losing the
    core-hours it counted (deleted jobs' included)."""
    ann = hub.users["ann"]
    run_batch_job(hub, workspace(hub), seconds=90)
    before = kept_sum(hub, ann.id)
    earlier = period_start(utcnow(), hub.quotas.period) - timedelta(days=1)
    monkeypatch.setattr(quotas_module, "utcnow", lambda: earlier)
    job = batch_job(workspace(hub, slug="b"), "pending")
    hub.db.add(job)
    hub.db.commit()
    hub.jobs.transition(job, JobStatus.running, at=earlier - timedelta(seconds=30))
    hub.jobs.transition(job, JobStatus.completed, at=earlier)
    hub.db.commit()
    assert kept_sum(hub, ann.id) == before


def test_a_core_hour_check_only_reads(hub):
    """A check (a page's usage, a launch's) of a user whose kept sum is missing sums their
    jobs and writes nothing: a write would hold the database's write lock (SQLite) until
    the session's next commit, which a page that only reads never makes; a login's write
    on another connection then failed with "database is locked"."""
    run_batch_job(hub, workspace(hub), seconds=90)
    hub.db.execute(delete(EndedCoreUsage))  # (as a hub upgraded in the middle of a period leaves it)
    hub.db.commit()
    statements: list[str] = []
    sa_event.listen(hub.db.get_bind(), "before_cursor_execute", lambda c, cur, st, *_: statements.append(st.split()[0]))
    assert hub.quotas.usage_of(hub.users["ann"]).core_seconds == 90
    assert set(statements) == {"SELECT"}, statements


def test_the_core_hour_check_does_no_more_work_for_a_longer_history(hub):
    """The check before each start summed the run time of every job of the owner's period:
    a burst of N jobs read N² rows, a long month made every start slower. Its work (counted
    in SQLite's instructions) is now the same after 400 ended jobs as after 20."""
    ws = workspace(hub)
    ann = hub.users["ann"]
    sqlite = hub.db.connection().connection.driver_connection

    def run(count: int) -> None:
        for _ in range(count):
            run_batch_job(hub, ws, seconds=2)

    def check() -> int:
        done = [0]
        sqlite.set_progress_handler(lambda: done.__setitem__(0, done[0] + 1), 1)
        used = hub.quotas.core_seconds_used(ann.id)
        sqlite.set_progress_handler(None, 1)
        hub.db.commit()
        assert used == core_microseconds_of_jobs(hub, ann.id, utcnow(), "month") // 1_000_000
        return done[0]

    run(20)
    short = check()
    run(380)
    long = check()
    assert long < 1.5 * short, (short, long)


# ---------------------------------------------------------------- sharing
def test_roles_follow_collaborate_shares(hub):
    ws = workspace(hub)
    share, created = hub.sharing.share(ws, "editor", "ann", user=hub.users["ben"])
    role = hub_orm.Role.find(hub.db, role_name(ws.id, "editor"))
    assert created and [u.name for u in role.users] == ["ben"]
    assert {"custom:uws:write:workspaces!server=ann/w1", "custom:uws:write:servers!server=ann/w1"} <= set(role.scopes)
    hub.sharing.revoke(share, "ann")
    assert hub_orm.Role.find(hub.db, role_name(ws.id, "editor")) is None


def roles_held(hub) -> dict[str, tuple[list[str], list[str], list[str], str]]:
    """uws-hub's roles: name -> (users, hub groups, scopes, description)."""
    roles = hub.db.scalars(select(hub_orm.Role).where(hub_orm.Role.name.startswith("uws-ws-")))
    return {
        r.name: (sorted(u.name for u in r.users), sorted(g.name for g in r.groups), r.scopes, r.description)
        for r in roles
    }


def shared_workspaces(hub, slugs) -> list[Workspace]:
    """Workspaces of ann's shared with ben (editor), and the odd ones with hub group team (viewer)."""
    team = hub.db.scalar(select(hub_orm.Group).where(hub_orm.Group.name == "team"))
    if team is None:
        team = hub_orm.Group(name="team", users=[hub.users["ben"]])
        hub.db.add(team)
    made = []
    for i, slug in enumerate(slugs):
        ws = workspace(hub, slug=slug)
        hub.sharing.share(ws, "editor", "ann", user=hub.users["ben"])
        if i % 2:
            hub.sharing.share(ws, "viewer", "ann", group=team)
        made.append(ws)
    return made


def test_the_roles_declared_at_startup_are_those_the_shares_made(hub):
    """JupyterHub deletes at startup every role missing from ``load_roles``: the hub
    declares its shares' roles there (``role_specs``), and they must be the very roles
    its shares made, users and hub groups included, or a restart would change who may
    reach a shared workspace."""
    shared_workspaces(hub, ["w1", "w2", "w3"])
    declared = {
        spec["name"]: (spec["users"], spec["groups"], spec["scopes"], spec["description"])
        for spec in role_specs(hub.db)
    }
    assert declared == roles_held(hub)
    assert declared[role_name(hub.db.scalar(select(Workspace.id).where(Workspace.slug == "w2")), "viewer")][1] == [
        "team"
    ]


def test_a_share_sync_with_nothing_to_change_writes_nothing_in_a_few_statements(hub):
    """The share sync re-made every shared workspace's roles, one by one, every time
    (7 statements a workspace: a thousand took the hub's event loop for seconds), though
    nothing had changed. Now it reads every role's scopes and members in a few statements,
    as many for 6 workspaces as for 3, and writes (or flushes) nothing."""
    statements, flushed = [], []

    def count(conn, cursor, sql, *args):
        statements.append(sql.lstrip().split(None, 1)[0].upper())

    def flush(session, context, instances):
        flushed.extend([*session.new, *session.dirty, *session.deleted])

    engine = hub.db.get_bind()
    sa_event.listen(engine, "before_cursor_execute", count)
    sa_event.listen(hub.db, "before_flush", flush)
    try:
        counted = []
        for slugs in (["w1", "w2", "w3"], ["w4", "w5", "w6"]):
            shared_workspaces(hub, slugs)
            asyncio.run(hub.sharing.sync())  # (nothing to change: the shares made the roles)
            before = roles_held(hub)
            statements.clear(), flushed.clear()
            asyncio.run(hub.sharing.sync())
            counted.append(len(statements))
            assert [s for s in statements if s in ("INSERT", "UPDATE", "DELETE")] == [] and flushed == []
            assert roles_held(hub) == before
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
        sa_event.remove(hub.db, "before_flush", flush)
    assert counted[0] == counted[1] < 10


def test_the_share_sync_repairs_the_roles_changed_by_hand(hub):
    """The sync writes only what differs from what the shares say, and repairs whatever
    differs: scopes and description edited, a member removed or added (a user, a hub
    group), a role deleted, a role of uws-hub's named for no shared workspace."""
    w1, w2 = shared_workspaces(hub, ["w1", "w2"])
    want = roles_held(hub)
    assert want[role_name(w2.id, "viewer")][:2] == ([], ["team"])
    cat = hub_orm.User(name="cat")
    other = hub_orm.Group(name="other")
    hub.db.add_all([cat, other])
    editor = hub_orm.Role.find(hub.db, role_name(w1.id, "editor"))
    editor.scopes = ["admin:users"]
    editor.description = "mine now"
    editor.users = [cat]  # ben removed, cat added
    editor.groups = [other]
    viewer = hub_orm.Role.find(hub.db, role_name(w2.id, "viewer"))
    viewer.groups = []  # team removed
    hub.db.delete(hub_orm.Role.find(hub.db, role_name(w2.id, "editor")))
    for name in ("uws-ws-9999-editor", "uws-ws-made-by-hand"):
        hub.db.add(hub_orm.Role(name=name, scopes=["read:users"], users=[cat]))
    hub.db.commit()
    asyncio.run(hub.sharing.sync())
    assert roles_held(hub) == want
    # (and the users' roles, in the hub's session, say so: JupyterHub reads them there)
    assert sorted(r.name for r in hub.users["ben"].roles) == sorted(role_name(ws.id, "editor") for ws in (w1, w2))
    assert [r.name for r in cat.roles] == []


def test_the_share_sync_leaves_the_shares_changed_between_its_chunks_as_they_are(hub, monkeypatch):
    """The sync compares the roles with the shares a chunk of workspaces at a time and
    gives the event loop back between chunks, where the hub may share and revoke: each
    chunk reads the shares and roles as they are then, so a change made meanwhile (in a
    chunk done or to come) is never undone from a view read before it."""
    monkeypatch.setattr(collaborate, "ROLES_CHUNK", 1)
    w1, w2, w3 = shared_workspaces(hub, ["w1", "w2", "w3"])
    w4 = workspace(hub, slug="w4")
    sync_roles_of = hub.sharing._sync_roles_of
    chunks: list[list[int]] = []
    changing = []  # (the changes' own calls are no chunks)

    def between_chunks(ws_ids, *strays):
        changed = sync_roles_of(ws_ids, *strays)
        if changing:
            return changed
        chunks.append(list(ws_ids))
        if len(chunks) == 2:  # w1 and w2 done, w3 to come
            changing.append(True)
            hub.sharing.share(w1, "viewer", "ann", user=hub.users["ben"])  # done: editor -> viewer
            hub.sharing.revoke(hub.sharing.for_workspace(w3)[0], "ann")  # to come: ben revoked
            hub.sharing.share(w4, "editor", "ann", user=hub.users["ben"])  # not listed: newly shared
            changing.clear()
        return changed

    monkeypatch.setattr(hub.sharing, "_sync_roles_of", between_chunks)
    asyncio.run(hub.sharing.sync())
    assert chunks == [[w1.id], [w2.id], [w3.id]]
    held = {name: users for name, (users, _, _, _) in roles_held(hub).items()}
    assert held == {
        role_name(w1.id, "viewer"): ["ben"],
        role_name(w2.id, "editor"): ["ben"],
        role_name(w2.id, "viewer"): [],  # (team's)
        role_name(w4.id, "editor"): ["ben"],
    }


#: the system accounts' uids of the users of the POSIX groups' tests
UIDS = {"ann": 10001, "ben": 10002, "cat": 10003, "dan": 10004}


class PosixFakes:
    """The system's side of POSIX groups for the share sync, in memory: groups by name,
    accounts with uids, and what each call was asked (the kill's holders)."""

    def __init__(self, monkeypatch, groups: dict[str, int]):
        from uws_hub.sharing import posixgroups

        self.groups = groups
        self.listed = 0
        self.looked_up: list[str] = []
        #: the threads the accounts were looked up in
        self.looked_up_in: set[int] = set()
        self.killed: list[dict[int, set[int]]] = []
        #: group name -> its members' names (none unless a test gives some)
        self.members: dict[str, list[str]] = {}
        #: the groups looked up by name (a getgrnam each): gid_of, ensure_group, clear_members
        self.named: list[str] = []
        monkeypatch.setattr(posixgroups, "gid_of", lambda name: self.named.append(name) or groups.get(name))
        monkeypatch.setattr(posixgroups, "ensure_group", self.ensure_group)
        monkeypatch.setattr(posixgroups, "groups_with_prefix", self.list_groups)
        monkeypatch.setattr(posixgroups, "clear_members", self.clear_members)
        monkeypatch.setattr(posixgroups, "is_shared", lambda directory, gid: True)
        monkeypatch.setattr(posixgroups, "kill_strays", lambda holders: self.killed.append(holders) or 0)
        monkeypatch.setattr(posixgroups, "delete_group", lambda name: groups.pop(name, None))

    def list_groups(self, prefix):
        self.listed += 1
        return {
            name: SimpleNamespace(gr_gid=gid, gr_mem=self.members.get(name, []))
            for name, gid in self.groups.items()
            if name.startswith(prefix)
        }

    def ensure_group(self, name):
        self.named.append(name)
        return self.groups.setdefault(name, 5000 + len(self.groups))

    def clear_members(self, name):
        self.named.append(name)
        return bool(self.members.pop(name, None))

    def owner(self, name):  # SystemAccounts.owner: every user has an account (UIDS)
        self.looked_up.append(name)
        self.looked_up_in.add(threading.get_ident())
        return SimpleNamespace(uid=UIDS[name])


def posix_sharing(hub, monkeypatch, groups: dict[str, int]) -> tuple[ShareService, PosixFakes]:
    fakes = PosixFakes(monkeypatch, groups)
    sharing = ShareService(
        hub.db,
        fakes,
        hub.sharing.notifier,
        hub.events,
        log,
        posix_group_prefix="uws-ws-",
        group_kills=hub.jobs.group_kills,  # (as services.build shares them)
    )
    for name in ("cat", "dan"):
        hub.users[name] = hub_orm.User(name=name)
        hub.db.add(hub.users[name])
    hub.db.commit()
    return sharing, fakes


def test_the_share_sync_plans_each_workspace_once_and_lists_the_groups_once(hub, monkeypatch):
    """The share sync worked out who may hold each workspace's group twice (a query of
    its shares and a look-up of each account, once to apply the group and once to kill
    the processes that hold it unallowed), and listed the system's groups twice: one
    plan a workspace, for both, each account looked up once, one listing. The kill
    gets what it got: the owner's and the editors' accounts, through hub groups too, and
    the owner's alone for a group whose workspace is no longer shared."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {"uws-ws-999": 4999})
    w1, w2, w3 = (workspace(hub, slug=f"w{i}") for i in (1, 2, 3))
    team = hub_orm.Group(name="team", users=[hub.users["ben"], hub.users["cat"]])
    hub.db.add(team)
    sharing.share(w1, "editor", "ann", user=hub.users["ben"])
    sharing.share(w2, "editor", "ann", group=team)
    sharing.share(w2, "viewer", "ann", user=hub.users["dan"])
    fakes.groups[f"uws-ws-{w3.id}"] = 4003  # shared once, no longer
    fakes.looked_up.clear()
    asyncio.run(sharing.sync())
    assert fakes.listed == 1
    assert sorted(fakes.looked_up) == ["ann", "ben", "cat"]
    gid = {ws: fakes.groups[f"uws-ws-{ws.id}"] for ws in (w1, w2, w3)}
    # the group of no workspace is deleted, and whoever holds it killed; then the others' strays
    assert fakes.killed == [{4999: set()}, {gid[w1]: {10001, 10002}, gid[w2]: {10001, 10002, 10003}, gid[w3]: {10001}}]
    assert "uws-ws-999" not in fakes.groups


def test_the_share_sync_looks_up_the_accounts_off_the_event_loop(hub, monkeypatch):
    """Each account the share sync plans for is a ``getpwnam``, which asks the directory
    service where accounts live in one (LDAP): on the event loop, a sync of a thousand
    shared workspaces' accounts froze the hub for as many round trips. They are looked up
    in a thread, once each, all of them (owners, editors, through hub groups too); and
    the plans are the same."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    w1, w2 = (workspace(hub, slug=f"w{i}") for i in (1, 2))
    team = hub_orm.Group(name="team", users=[hub.users["cat"]])
    hub.db.add(team)
    sharing.share(w1, "editor", "ann", user=hub.users["ben"])
    sharing.share(w2, "editor", "ann", group=team)
    fakes.looked_up.clear(), fakes.looked_up_in.clear()
    asyncio.run(sharing.sync())
    assert sorted(fakes.looked_up) == ["ann", "ben", "cat"]
    assert threading.get_ident() not in fakes.looked_up_in
    gid = {ws: fakes.groups[f"uws-ws-{ws.id}"] for ws in (w1, w2)}
    assert fakes.killed[-1] == {gid[w1]: {10001, 10002}, gid[w2]: {10001, 10003}}


def test_the_share_sync_looks_up_no_group_it_listed(hub, monkeypatch):
    """The share sync listed the workspace groups, then looked each up by name three
    times (its apply, the members' check, its kill: a getgrnam each, which reads the
    whole group file again on a real hub). It reads their gids and members in its
    listing, and looks up by name only a group with members (to empty it), and one made
    or deleted since the listing: one deleted then made again under the POSIX lock (here
    the first apply's) has a gid of its own, which the kill gets."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    w1, w2, w3 = (workspace(hub, slug=f"w{i}") for i in (1, 2, 3))
    for ws in (w1, w2, w3):
        sharing.share(ws, "editor", "ann", user=hub.users["ben"])
    asyncio.run(sharing.sync())  # (the groups made)
    name = {ws: f"uws-ws-{ws.id}" for ws in (w1, w2, w3)}
    fakes.members[name[w2]] = ["ben"]  # made a member by hand
    fakes.named.clear(), fakes.killed.clear()
    apply = sharing.apply_posix

    async def applying(ws, *plan):
        if ws.id == w1.id:  # w3's group deleted and made again (a new gid) meanwhile
            await sharing._delete_group(name[w3], "a test")
            fakes.groups[name[w3]] = 7003
        await apply(ws, *plan)

    monkeypatch.setattr(sharing, "apply_posix", applying)
    asyncio.run(sharing.sync())
    # w2's members emptied; w3's group looked up by its delete, its apply (made, emptied), the kill
    assert sorted(fakes.named) == [name[w2], *[name[w3]] * 4]
    assert fakes.members == {}
    gid = {ws: fakes.groups[name[ws]] for ws in (w1, w2)}
    assert fakes.killed[-1] == {gid[w1]: {10001, 10002}, gid[w2]: {10001, 10002}, 7003: {10001, 10002}}


def test_the_share_sync_s_posix_part_reads_the_workspaces_in_a_few_statements(hub, monkeypatch):
    """The POSIX groups' part read its workspaces one by one: a query each that the session
    no longer held (the hub's session holds them weakly). A few hundred to a query: as
    many statements for 6 workspaces as for 3."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    statements = []
    engine = hub.db.get_bind()

    def count(conn, cursor, sql, *args):
        statements.append(sql)

    counted = []
    for slugs in (["w1", "w2", "w3"], ["w4", "w5", "w6"]):
        for slug in slugs:
            sharing.share(workspace(hub, slug=slug), "editor", "ann", user=hub.users["ben"])
        asyncio.run(sharing.sync())
        for obj in [obj for obj in hub.db.identity_map.values() if isinstance(obj, (Workspace, Share))]:
            hub.db.expunge(obj)  # (as the garbage collector leaves them)
        sa_event.listen(engine, "before_cursor_execute", count)
        try:
            asyncio.run(sharing.sync())
        finally:
            sa_event.remove(engine, "before_cursor_execute", count)
        counted.append(len(statements))
        statements.clear()
    assert counted[0] == counted[1]


def test_the_share_sync_s_kill_allows_the_editors_of_its_end_not_of_its_start(hub, monkeypatch):
    """The share sync plans who may hold each group once, before its awaits (it applies
    group after group), and kills the processes that hold a group unallowed at its end.
    A user made an editor meanwhile (shared with, or added to a hub group that is an
    editor) may have launched a job there, that holds the group: it lives. An editor
    revoked meanwhile is no longer allowed: their leftovers go. The kill reads the editors
    again under the POSIX lock, and plans again the workspaces whose owner or editors
    changed (used as they were, the plans killed the new editors' jobs and spared the
    revoked editor's processes)."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    w1, w2 = workspace(hub, slug="w1"), workspace(hub, slug="w2")
    team = hub_orm.Group(name="team", users=[hub.users["ben"]])
    hub.db.add(team)
    revoked, _ = sharing.share(w1, "editor", "ann", user=hub.users["ben"])
    sharing.share(w2, "editor", "ann", group=team)
    apply = sharing.apply_posix
    changed = []

    async def applying(ws, *plan):
        if not changed:  # at the first apply, after the plans
            sharing.share(w1, "editor", "ann", user=hub.users["cat"])
            sharing.revoke(revoked, "ann")
            team.users.append(hub.users["dan"])
            hub.db.commit()
            changed.append(1)
        await apply(ws, *plan)

    monkeypatch.setattr(sharing, "apply_posix", applying)
    asyncio.run(sharing.sync())
    gid = {ws: fakes.groups[f"uws-ws-{ws.id}"] for ws in (w1, w2)}
    assert fakes.killed == [{gid[w1]: {10001, 10003}, gid[w2]: {10001, 10002, 10004}}]


def editor_job(hub, ws: Workspace, launcher: str) -> Job:
    """A job an editor launched in ``ws``, running (as their account, with its group)."""
    job = Job(
        workspace=ws,
        owner_id=ws.owner_id,
        launcher_id=hub.users[launcher].id,
        job_type="lab",
        resource="local",
        interactive=False,
        status="running",
        target="running",
        server_name=ws.slug,
        created_at=utcnow(),
    )
    hub.db.add(job)
    hub.db.commit()
    return job


@pytest.mark.parametrize("interactive", [False, True], ids=["batch", "interactive"])
@pytest.mark.parametrize("whose", ["owned", "launched in another's workspace"])
@pytest.mark.parametrize(
    ("status", "target", "refused"),
    [
        ("pending", "held", False),
        ("pending", "running", True),
        ("queued", "running", True),
        ("running", "running", True),
        ("stopping", "stopped", True),
        ("completed", "running", False),
        ("failed", "running", False),
        ("cancelled", "stopped", False),
    ],
)
def test_a_user_with_a_job_under_way_is_not_deleted(hub, interactive, whose, status, target, refused):
    """Deleting a user took their jobs' rows (``ON DELETE CASCADE``) while their processes
    or SLURM jobs ran on, unseen by the hub, into folders the deletion had set aside: any
    job of theirs (owned or launched) that may exist outside its row refuses the delete.
    A held batch job (never asked to run) does not; an ended one does not."""
    ws = workspace(hub, owner="ben" if whose != "owned" else "ann")
    job = Job(
        workspace=ws,
        owner_id=ws.owner_id,
        launcher_id=hub.users["ann"].id,
        job_type="lab",
        resource="local",
        interactive=interactive,
        status=status,
        target=target,
        server_name=ws.slug,
        created_at=utcnow(),
    )
    hub.db.add(job)
    hub.db.commit()
    if refused:
        with pytest.raises(Conflict) as e:
            hub.jobs.check_user_deletable(hub.users["ann"])
        assert str(e.value) == (
            f"ann's jobs that have not ended: 1 (ids {job.id}); stop or cancel them first, then delete the user."
        )
    else:
        hub.jobs.check_user_deletable(hub.users["ann"])


def test_the_refusal_counts_the_users_jobs_under_way_and_no_one_elses(hub):
    ws = workspace(hub)
    jobs = [batch_job(ws, status) for status in ("running", "queued", "completed")]
    hub.db.add_all(jobs)
    hub.db.commit()
    with pytest.raises(Conflict, match=rf"^ann's jobs that have not ended: 2 \(ids {jobs[0].id}, {jobs[1].id}\);"):
        hub.jobs.check_user_deletable(hub.users["ann"])
    hub.jobs.check_user_deletable(hub.users["ben"])


async def test_nothing_is_made_for_a_user_being_deleted(hub):
    """A user's delete awaits JupyterHub's (server stops, the authenticator) between its check
    of their jobs and its commit: a job launched then ran on untracked, a workspace made
    then was left on disk. Till the delete has finished, every launch in their workspaces
    or as them, and every workspace or file of theirs, is a 409; others' go on."""
    ann, ben = hub.users["ann"], hub.users["ben"]
    mine, bens = workspace(hub), workspace(hub, owner="ben", slug="w2")
    being_deleted = "^ann is being deleted$"
    with hub.workspaces.deletions.deleting(ann):
        with pytest.raises(Conflict, match=being_deleted):
            hub.jobs.launch(mine, "lab", None, {}, "ann")
        with pytest.raises(Conflict, match=being_deleted):  # an editor's, in their workspace
            hub.jobs.launch(mine, "lab", None, {}, "ben", launcher=ben)
        with pytest.raises(Conflict, match=being_deleted):  # as an editor, in another's
            hub.jobs.launch(bens, "lab", None, {}, "ann", launcher=ann)
        with pytest.raises(Conflict, match=being_deleted):
            await hub.workspaces.create(ann, "new", "", [])
        with pytest.raises(Conflict, match=being_deleted):
            await hub.workspaces.write_file(mine, "data.txt", b"results")
        with pytest.raises(Conflict, match=being_deleted):  # a second delete
            with hub.workspaces.deletions.deleting(ann):
                pass
        assert hub.db.scalar(select(func.count(Job.id))) == 0
        assert hub.db.scalar(select(func.count(Workspace.id))) == 2
        assert os.listdir(hub.root / "ann") == ["w1"]
        hub.jobs.launch(bens, "lab", None, {}, "ben")
    # a delete that failed: the user is theirs again
    with pytest.raises(RuntimeError), hub.workspaces.deletions.deleting(ann):
        raise RuntimeError("the authenticator failed")
    assert hub.jobs.launch(mine, "lab", None, {}, "ann").owner_id == ann.id


def test_a_held_job_of_a_user_being_deleted_is_not_let_run(hub):
    """A held batch job does not hold its owner's delete back (it goes with them, or is
    cancelled if it is in another's workspace): let run meanwhile (UWS's PHASE=RUN), it
    was handed over and ran on untracked once its row went with them. Till the delete has
    finished, a 409, as the owner's or as the launcher's; once it failed, it runs."""
    offer_true_batch_jobs(hub)
    ann, ben = hub.users["ann"], hub.users["ben"]
    mine, bens = workspace(hub), workspace(hub, owner="ben", slug="w2")
    own = hub.jobs.launch(mine, "run", None, {}, "ann", held=True)
    launched = hub.jobs.launch(bens, "run", None, {}, "ann", launcher=ann, held=True)  # as an editor
    with hub.workspaces.deletions.deleting(ann):
        for job in (own, launched):
            with pytest.raises(Conflict, match="^ann is being deleted$"):
                hub.jobs.run(job, "ann")
            assert job.target == "held"
    with hub.workspaces.deletions.deleting(ben):  # the owner of the workspace being deleted
        with pytest.raises(Conflict, match="^ben is being deleted$"):
            hub.jobs.run(launched, "ann")
    assert hub.jobs.run(own, "ann").target == "running"


def test_no_share_is_made_to_or_by_a_user_being_deleted(hub):
    """A share made while its owner or recipient was being deleted went with them, but its
    roles and POSIX group member were made for them meanwhile; a copy sent then was made
    in a folder being set aside. Till the delete has finished, each is a 409."""
    ann, ben = hub.users["ann"], hub.users["ben"]
    mine, bens = workspace(hub), workspace(hub, owner="ben", slug="w2")
    with hub.workspaces.deletions.deleting(ann):
        for make in (
            lambda: hub.sharing.share(mine, "viewer", "ann", user=ben),  # by them
            lambda: hub.sharing.share(bens, "editor", "ben", user=ann),  # to them
            lambda: hub.copies.invite_copy(mine, ben, None, "ann"),
            lambda: hub.copies.invite_copy(bens, ann, None, "ben"),
        ):
            with pytest.raises(Conflict, match="^ann is being deleted$"):
                make()
        assert hub.db.scalar(select(func.count(Share.id))) == 0
    assert hub.sharing.share(bens, "editor", "ben", user=ann)[1]


def test_no_share_is_made_to_a_group_of_a_user_being_deleted(hub):
    """A share with a group gives each member the workspace's roles (and, as editors, its
    POSIX group): one made while a member was being deleted made them for that member
    meanwhile, as a share with them did. Like that share, it is a 409 that names them."""
    ben = hub.users["ben"]
    team = hub_orm.Group(name="team")
    team.users.append(ben)
    hub.db.add(team)
    hub.db.commit()
    mine = workspace(hub)
    with hub.workspaces.deletions.deleting(ben):
        with pytest.raises(Conflict, match="^ben is being deleted$"):
            hub.sharing.share(mine, "editor", "ann", group=team)
        assert hub.db.scalar(select(func.count(Share.id))) == 0
    assert hub.sharing.share(mine, "editor", "ann", group=team)[1]


async def test_a_users_name_is_held_till_their_delete_has_finished_not_their_id(hub):
    """What a deletion lists under the user's name (their jobs' HOME) is set aside after its
    commit: a new user given the name meanwhile is held as the former one was. Their id
    is not held: on SQLite it is the next new user's, whatever their name (who was refused
    as "being deleted" till the set-aside had finished)."""
    ben = hub.users.pop("ben")
    with hub.workspaces.deletions.deleting(ben):
        hub.db.delete(ben)
        hub.db.commit()
        cid, new_ben = hub_orm.User(name="cid"), hub_orm.User(name="ben")
        hub.db.add(cid)
        hub.db.commit()
        hub.db.add(new_ben)
        hub.db.commit()
        assert cid.id == ben.id  # (SQLite's next id)
        assert (await hub.workspaces.create(cid, "new", "", [])).owner_id == cid.id
        with pytest.raises(Conflict, match="^ben is being deleted$"):
            await hub.workspaces.create(new_ben, "new", "", [])
    assert (await hub.workspaces.create(new_ben, "new", "", [])).owner_id == new_ben.id


async def test_a_user_is_not_deleted_while_a_workspace_of_theirs_is_being_made(hub, monkeypatch):
    """A workspace's row is committed before its folder is made (in a thread): a delete
    between the two set aside a folder that was not there yet, and the folder made next
    was left in place, of the user's uid. The delete is a 409 till the workspace is made."""
    ann = hub.users["ann"]
    folder_made, go_on = threading.Event(), threading.Event()
    make = hub.workspaces._make_directory

    def slow_make(*args):
        folder_made.set()
        go_on.wait(10)
        return make(*args)

    monkeypatch.setattr(hub.workspaces, "_make_directory", slow_make)
    creating = asyncio.ensure_future(hub.workspaces.create(ann, "new", "", []))
    await asyncio.to_thread(folder_made.wait, 10)
    with pytest.raises(Conflict, match="^A workspace of ann's is being made: delete the user once it is done$"):
        with hub.workspaces.deletions.deleting(ann):
            pass
    go_on.set()
    assert (await creating).status == "idle"
    with hub.workspaces.deletions.deleting(ann):
        pass


@pytest.mark.parametrize("killer", ["sync", "worker"])
def test_an_editor_revoked_while_a_kill_waits_for_the_posix_lock_is_stopped_not_killed(hub, monkeypatch, killer):
    """A former editor's running job is stopped (its end a stop, not a failure), and the
    kill of their leftovers waits for that end (:meth:`ShareService.kill_strays_worker`).
    The share sync's kill and the worker's read which workspaces have such jobs before
    they waited for the POSIX lock, and who may hold the groups after: an editor revoked
    while they waited (another workspace's group being applied, say) had the job being
    stopped SIGKILLed by a kill that allowed them no longer and did not know of the job.
    Both read the two together, under the lock."""
    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    ws = workspace(hub)
    share, _ = sharing.share(ws, "editor", "ann", user=hub.users["ben"])
    editor_job(hub, ws, "ben")
    asyncio.run(sharing.apply_posix(ws))
    gid = fakes.groups[f"uws-ws-{ws.id}"]
    apply = sharing.apply_posix
    held = asyncio.Event()

    async def applying(ws, *plan):
        await apply(ws, *plan)
        await sharing._posix_lock.acquire()  # then held: another group being applied, say
        held.set()

    monkeypatch.setattr(sharing, "apply_posix", applying)

    async def scenario():
        if killer == "sync":
            kill = asyncio.ensure_future(sharing.sync())
        else:
            sharing._strays.add(ws.id)  # (whoever lost the group before: their jobs ended)
            kill = asyncio.ensure_future(sharing._kill_strays_round("uws-ws-", {}))
            await sharing._posix_lock.acquire()
            held.set()
        await asyncio.wait_for(held.wait(), 30)
        for _ in range(3):  # the kill runs on until it waits for the lock
            await asyncio.sleep(0)
        assert not kill.done()
        sharing.revoke(share, "ann")  # ben's job is being stopped (editors_lost)
        sharing._posix_lock.release()
        await asyncio.wait_for(kill, 30)

    asyncio.run(scenario())
    # ben's running job holds the group: it is left to its stop, to the worker's kill after
    assert all(gid not in holders for holders in fakes.killed), fakes.killed


async def test_an_editors_start_waits_for_a_kill_of_the_workspaces_strays_under_way(hub, monkeypatch):
    """A kill of a workspace's strays reads who may hold its group (under the POSIX lock),
    then scans /proc in a thread. An editor added between the two whose job started before
    the scan's end had that new job's processes killed: the kill did not allow them. The
    start of an editor's job there waits for the scan's end (woken then); the owner's does
    not. Before, the job started at once, its server's processes in the scan's way."""
    from uws_hub.sharing import posixgroups

    sharing, fakes = posix_sharing(hub, monkeypatch, {})
    monkeypatch.setattr(hub.jobs, "posix_group_prefix", "uws-ws-")
    steps, servers = job_steps(hub, "ok")
    ws = workspace(hub)
    sharing.share(ws, "editor", "ann", user=hub.users["ben"])
    await sharing.apply_posix(ws)
    gid = fakes.groups[f"uws-ws-{ws.id}"]
    scanning, release = threading.Event(), threading.Event()

    def held_scan(holders):
        fakes.killed.append(holders)
        scanning.set()
        release.wait(30)
        return 0

    monkeypatch.setattr(posixgroups, "kill_strays", held_scan)
    sharing._strays.add(ws.id)  # (ben lost the group before: the worker's kill is due)
    kill = asyncio.ensure_future(sharing._kill_strays_round("uws-ws-", {}))
    try:
        async with asyncio.timeout(30):
            while not scanning.is_set():
                await asyncio.sleep(0.01)
        # the scan runs: cat is made an editor, and launches
        sharing.share(ws, "editor", "ann", user=hub.users["cat"])
        job = hub.jobs.launch(ws, "lab", None, {}, "cat", launcher=hub.users["cat"])
        await steps.reconcile(job.id)
        assert servers.spawners == {} and job.status == "pending", job.status
        assert not hub.jobs.start_waits_for_group_kill(editor_job(hub, workspace(hub, slug="w2"), "ben"))
        assert not hub.jobs.start_waits_for_group_kill(editor_job(hub, ws, "ann"))  # the owner's
    finally:
        release.set()
    await asyncio.wait_for(kill, 30)
    assert fakes.killed == [{gid: {10001, 10002}}]  # (cat's job was not there)
    assert ("job", job.id) in hub.woken
    await settle(steps, job, {"running"})
    assert servers.spawners[job.server_name].launch.group == f"uws-ws-{ws.id}"
    await hub.pool.close()


def test_a_copy_invitation_is_answered_once(hub):
    ws = workspace(hub)
    share = hub.copies.invite_copy(ws, hub.users["ben"], None, "ann")
    share = hub.copies.accept(share, hub.users["ben"])
    assert (share.status, share.copy_state) == ("accepted", "queued")
    assert hub.woken == [("copy", share.id)]
    with pytest.raises(Conflict, match="This invitation was accepted"):
        hub.copies.decline(share, hub.users["ben"])


# ---------------------------------------------------------------- reconciler steps
async def test_a_deletion_is_reconciled_to_the_end(hub):
    ws = workspace(hub, files={"data.txt": b"x" * 10})
    hub.sharing.share(ws, "viewer", "ann", user=hub.users["ben"])
    hub.workspaces.delete(ws, "ann")
    assert (ws.status, ws.target) == ("deleting", "deleted")
    with pytest.raises(Conflict, match="is being deleted"):
        hub.workspaces.check_writable(ws)
    ws_id, directory = ws.id, ws.directory
    steps, _ = hub.steps()
    assert steps.unfinished() == [ws_id]
    await steps.reconcile(ws_id)
    await asyncio.wait_for(steps._deleting[ws_id], 5)
    assert hub.db.get(Workspace, ws_id) is None and not os.path.exists(directory)
    assert hub.servers.deleted == [("ann", "w1")]
    assert hub_orm.Role.find(hub.db, role_name(ws_id, "viewer")) is None  # sharing forgot it
    assert steps.unfinished() == []
    await hub.pool.close()


def test_a_workspace_with_an_unfinished_job_is_not_deleted(hub):
    ws = workspace(hub)
    hub.jobs.launch(ws, "lab", None, {}, "ann")
    with pytest.raises(Conflict, match="stop it before deleting"):
        hub.workspaces.delete(ws, "ann")


async def test_a_copy_is_reconciled_into_a_workspace_of_the_recipient(hub):
    ws = workspace(hub, files={"a.txt": b"hello"})
    share = hub.copies.accept(hub.copies.invite_copy(ws, hub.users["ben"], "Mine", "ann"), hub.users["ben"])
    _, steps = hub.steps()
    assert steps.unfinished() == [share.id]
    await steps.reconcile(share.id)
    await asyncio.wait_for(steps._copies[share.id], 5)
    assert share.copy_state == "done"
    copy = hub.db.get(Workspace, share.copy_workspace_id)
    assert (copy.owner.name, copy.name, copy.disk_usage_bytes) == ("ben", "Mine", 5)
    with open(os.path.join(copy.directory, "a.txt"), "rb") as f:
        assert f.read() == b"hello"
    await hub.pool.close()


async def test_a_copy_interrupted_by_a_restart_is_made_again(hub):
    ws = workspace(hub, files={"a.txt": b"hello"})
    share = hub.copies.accept(hub.copies.invite_copy(ws, hub.users["ben"], None, "ann"), hub.users["ben"])
    share.copy_state = "copying"  # as a hub that died mid-copy left it
    hub.db.commit()
    leftover = hub.root / "ben" / f".uws-copy-{share.id}-dead"
    leftover.mkdir(parents=True)
    _, steps = hub.steps()
    await steps.reconcile(share.id)  # no copy under way here: recover
    assert share.copy_state == "queued" and not leftover.exists()
    await steps.reconcile(share.id)
    await asyncio.wait_for(steps._copies[share.id], 5)
    assert share.copy_state == "done"
    await hub.pool.close()


async def test_no_copy_is_made_for_a_recipient_being_deleted(hub):
    """A copy is made in its recipient's folder, then made their workspace: one made while
    they were being deleted was left there, of their uid. It fails instead (their share
    goes with them); and a recipient is not deleted while a copy for them is being made."""
    ws = workspace(hub, files={"a.txt": b"hello"})
    ben = hub.users["ben"]
    share = hub.copies.accept(hub.copies.invite_copy(ws, ben, None, "ann"), ben)
    _, steps = hub.steps()
    with hub.workspaces.deletions.deleting(ben):
        await steps.reconcile(share.id)
        await asyncio.wait_for(steps._copies[share.id], 5)
    assert (share.copy_state, share.copy_error) == ("failed", "ben is being deleted")
    assert not (hub.root / "ben").exists()
    assert hub.db.scalar(select(func.count(Workspace.id)).where(Workspace.owner_id == ben.id)) == 0
    await hub.pool.close()


async def test_an_owner_is_not_deleted_while_a_copy_of_their_workspace_is_being_made(hub, monkeypatch):
    """A copy reads its source workspace's folder while it runs (in a thread): the owner's
    delete meanwhile set that folder aside under it, and the copy was of what was left. The
    delete is a 409 till the copy is made."""
    ws = workspace(hub, files={"a.txt": b"hello"})
    ann, ben = hub.users["ann"], hub.users["ben"]
    share = hub.copies.accept(hub.copies.invite_copy(ws, ben, None, "ann"), ben)
    copying, go_on = threading.Event(), threading.Event()
    copy = copies_module.copy_tree

    def slow_copy(*args):
        copying.set()
        go_on.wait(10)
        return copy(*args)

    monkeypatch.setattr(copies_module, "copy_tree", slow_copy)
    _, steps = hub.steps()
    await steps.reconcile(share.id)
    await asyncio.to_thread(copying.wait, 10)
    with pytest.raises(
        Conflict, match="^A copy of ann's workspace 'w1' is being made: delete the user once it is done$"
    ):
        with hub.workspaces.deletions.deleting(ann):
            pass
    go_on.set()
    await asyncio.wait_for(steps._copies[share.id], 5)
    assert share.copy_state == "done"
    with hub.workspaces.deletions.deleting(ann):
        pass
    await hub.pool.close()


# ---------------------------------------------------------------- the job reconciler
class FakeSpawner:
    """What the job reconciler reads of a spawner (JupyterHub's names)."""

    _log_name = "fake"
    node = None

    def __init__(self):
        self.ready = False
        self.pending: str | None = None
        self.server: object | None = None
        self._waiting_for_response = False
        self.lifecycle_listener = None
        self.launch = None

    @property
    def active(self) -> bool:
        return self.ready or bool(self.pending)

    async def poll(self):
        return None if self.active else 0


class StartingServers(FakeServers):
    """Server control whose starts work, are slow, never answer, or fail."""

    def __init__(self, behaviour: str):
        super().__init__()
        self.behaviour = behaviour
        self.spawners: dict[str, FakeSpawner] = {}
        self.release = asyncio.Event()
        self.stopped: list[str] = []

    def find(self, owner, server_name):
        return self.spawners.get(server_name)

    live = find

    def start(self, owner, server_name, resource, launch, listener, on_poll_stopped, *, then=None):
        spawner = self.spawners.setdefault(server_name, FakeSpawner())
        spawner.launch, spawner.pending = launch, "spawn"

        async def run():
            try:
                if self.behaviour == "fail":
                    raise RuntimeError("the batch system refused it")
                if self.behaviour == "never":
                    await asyncio.Event().wait()
                if self.behaviour == "slow":
                    await self.release.wait()
                spawner.ready, spawner.server = True, object()
                if then is not None:
                    # as ServerControl.start: in the commit that ends the start
                    then()
                    self.db.commit()
            finally:
                spawner.pending = None

        return asyncio.ensure_future(run())

    async def stop(self, owner, server_name, *, then=None):
        spawner = self.spawners.get(server_name)
        running = spawner is not None and (spawner.active or spawner.server is not None)
        if spawner is not None:
            spawner.ready, spawner.server, spawner.pending = False, None, None
        self.stopped.append(server_name)
        if running and then is not None:
            # as ServerControl.stop: in the commit that ends the stop
            then()
            self.db.commit()
            return True
        return False

    async def progress(self, spawner, future):
        await asyncio.wait([future])
        return
        yield


def job_steps(hub, behaviour: str, **options):
    servers = hub.jobs.servers = StartingServers(behaviour)
    servers.db = hub.db
    batch = BatchSteps(hub.jobs, {}, hub.pool, log)
    return JobSteps(
        hub.jobs, servers, hub.queue, hub.pool, log, batch=batch, start_poll_interval=0.01, **options
    ), servers


async def settle(steps, job, statuses: set[str], seconds: float = 5.0) -> None:
    """Take steps (as the workers would, when woken) until the job is in one of ``statuses``."""
    async with asyncio.timeout(seconds):
        while job.status not in statuses:
            await steps.reconcile(job.id)
            await asyncio.sleep(0.01)


async def test_a_start_that_works_runs_the_job(hub):
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"running"})
    assert (job.attempts, job.url) == (1, "/user/ann/w1/lab")
    await hub.pool.close()


async def test_the_step_after_a_stop_ends_the_job_without_making_a_spawner(hub):
    """JupyterHub drops a stopped server's spawner. The step that records the job's end
    needs none and does not look one up: ``servers.find`` would make a new one, on the
    way from the server's exit to the job's end."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"running"})
    found: list[str] = []
    find, stop = servers.find, servers.stop
    finds_at_stop: list[int] = []

    def counting_find(owner, server_name):
        found.append(server_name)
        return find(owner, server_name)

    async def stop_and_drop(owner, server_name, *, then=None):
        servers.spawners[server_name].server = None
        servers.spawners.pop(server_name)  # as JupyterHub's User.stop does
        finds_at_stop.append(len(found))
        return await stop(owner, server_name, then=then)

    servers.find, servers.stop = counting_find, stop_and_drop
    hub.jobs.stop(job, "ann")
    await settle(steps, job, {"completed"})
    assert finds_at_stop and len(found) == finds_at_stop[0]
    await hub.pool.close()


async def test_a_start_records_that_the_job_runs_itself_not_a_step_after_it(hub):
    """A start that worked records the job running in the commit that ends it, not by
    one more step of the reconciler after its end woke the job. Failed before: the job
    was still queued once its start had ended."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)  # the step that starts it
    start = steps._starts[job.id].future
    await asyncio.wait_for(start, 5)
    assert job.status == "running" and job.url == "/user/ann/w1/lab"
    assert job.id not in steps._starts
    with Session(hub.db.get_bind()) as other:
        assert other.get(Job, job.id).status == "running"
    await hub.pool.close()


async def test_a_start_that_ends_after_its_job_was_stopped_records_nothing(hub):
    """A start that works after its job was asked to stop leaves the job to the stop."""
    steps, servers = job_steps(hub, "slow")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)
    start = steps._starts[job.id].future
    hub.jobs.stop(job, "ann")
    servers.release.set()
    await asyncio.wait_for(start, 5)
    assert job.status != "running" and job.target == "stopped"
    await hub.pool.close()


async def test_a_stop_records_the_jobs_end_itself_not_a_step_after_it(hub):
    """The end of a stopped job is recorded by its stop, in the commit that ends it (with
    the owner's activity put back), not by one more step of the reconciler after the
    stop woke the job: that trip through the queue cost a stop ~3 ms. Failed before:
    the job was still stopping once its server had stopped."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"running"})
    hub.jobs.stop(job, "ann")
    await steps.reconcile(job.id)  # the step that starts the stop
    assert job.status == "stopping"
    await asyncio.wait_for(steps._stops[job.id], 5)
    assert job.status == "completed" and servers.stopped == [job.server_name]
    assert not steps._stops and job.id not in steps._starts
    # committed: what another session reads
    with Session(hub.db.get_bind()) as other:
        assert other.get(Job, job.id).status == "completed"
    # a step that comes after all the same finds nothing to do
    await steps.reconcile(job.id)
    assert job.status == "completed" and servers.stopped == [job.server_name]
    await hub.pool.close()


async def test_a_launch_while_the_last_jobs_server_is_still_stopping_starts_once_it_stopped(hub):
    """A stop records its job's end before JupyterHub's cleanup of the server (its token,
    OAuth client, commits): a job launched in the workspace right then finds the server
    still stopping, waits, and is woken when the stop is through, not at the next scan.
    Failed before: it was not woken."""
    steps, servers = job_steps(hub, "ok")
    stopping = servers.spawners["w1"] = FakeSpawner()
    stopping.pending, stopping._stop_future = "stop", asyncio.get_running_loop().create_future()
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)
    assert job.attempts == 0 and job.id not in steps._starts  # it waits for the stop
    hub.queue._queue.clear(), hub.queue._queued.clear()  # (the launch's wake: taken)
    stopping.pending = None
    stopping._stop_future.set_result(None)
    await asyncio.sleep(0)
    assert list(hub.queue._queue) == [("job", job.id)]
    await settle(steps, job, {"running"})
    await hub.pool.close()


def _commit_fails(hub, then):
    """A start's or stop's ``then`` whose commit (ServerControl's, after it) fails: rolled back."""

    def recorded_then_lost():
        then()
        hub.db.rollback()  # as ServerControl does when the commit that ends a start or stop fails
        raise RuntimeError("the database went away")

    return recorded_then_lost


@pytest.mark.parametrize("failure", ["stop", "commit"])
async def test_a_stop_that_did_not_record_the_end_wakes_the_job(hub, failure):
    """A stop that failed (or waited for someone else's) leaves the end to the job's
    next step, as before: it is woken. So does one whose ``then`` recorded the end but
    whose commit of it then failed (the database went away): its next step records the
    end. Failed before (commit): it was not woken, and stayed stopping until the next scan."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"running"})
    stop = servers.stop

    async def failing_stop(owner, server_name, *, then=None):
        if failure == "commit":
            return await stop(owner, server_name, then=_commit_fails(hub, then))
        raise RuntimeError("the proxy is down")

    servers.stop = failing_stop
    hub.jobs.stop(job, "ann")
    await steps.reconcile(job.id)
    hub.queue._queue.clear(), hub.queue._queued.clear()  # (the stop request's wake: taken)
    await asyncio.wait([steps._stops[job.id]], timeout=5)
    await asyncio.sleep(0)
    assert list(hub.queue._queue) == [("job", job.id)] and job.status == "stopping"
    await steps.reconcile(job.id)
    if failure == "commit":
        assert job.status == "completed"
    else:
        assert job.status == "failed" and "the proxy is down" in job.reason
    await hub.pool.close()


async def test_a_start_whose_commit_failed_after_it_recorded_the_job_running_wakes_the_job(hub):
    """The same for a start: the job's next step finds the server running and records it.
    Failed before: the job was not woken, and stayed queued until the next scan."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    start = servers.start

    def start_whose_commit_fails(*args, then=None):
        return start(*args, then=_commit_fails(hub, then))

    servers.start = start_whose_commit_fails
    await steps.reconcile(job.id)
    hub.queue._queue.clear(), hub.queue._queued.clear()
    await asyncio.wait([steps._starts[job.id].future], timeout=5)
    await asyncio.sleep(0)
    assert ("job", job.id) in hub.queue._queue and job.status != "running"
    await steps.reconcile(job.id)
    assert job.status == "running"
    await hub.pool.close()


async def test_a_job_whose_start_began_before_a_restart_adopts_its_server(hub):
    """A job with a start behind it (attempts 1, the hub restarted since) takes its server
    from the database, not only from what this process has loaded: a server that came up
    meanwhile makes the job running, it is not started a second time."""
    steps, servers = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    job.attempts = 1
    hub.db.commit()
    up = FakeSpawner()
    up.ready, up.server = True, object()
    servers.spawners[job.server_name] = up
    servers.live = lambda owner, server_name: None  # this process has not loaded it
    await steps.reconcile(job.id)
    assert (job.status, job.attempts) == ("running", 1)
    await hub.pool.close()


async def woken_jobs(hub) -> list[int]:
    """The ids of the jobs woken since last asked (taken off the queue, as a worker would)."""
    keys = []
    while len(hub.queue):
        keys.append(await hub.queue.get())
        hub.queue.task_done(keys[-1])
    return [job_id for _, job_id in keys]


async def test_starts_wait_while_the_event_loop_is_late_and_go_once_it_caught_up(hub):
    """While the hub's loop runs later than ``max_loop_lag``, no more than
    MIN_STARTS_WHEN_LATE starts are in their bookkeeping (until their resource has
    taken the job); the others wait in launch order, and start when one of those
    is taken (a batch job held in its queue does not hold a slot) or when the loop
    has caught up (the probe wakes the line)."""
    lag = [1.0]
    steps, servers = job_steps(hub, "slow", loop_lag=lambda: lag[0], max_loop_lag=0.1)
    owners = ["ann", "ann", "ben", "ben"]  # each may run two jobs
    jobs = [hub.jobs.launch(workspace(hub, owner, f"w{i}"), "lab", None, {}, owner) for i, owner in enumerate(owners)]
    for job in jobs:
        await steps.reconcile(job.id)
    assert MIN_STARTS_WHEN_LATE == 2 and sorted(servers.spawners) == ["w0", "w1"]  # started

    await woken_jobs(hub)  # the launches' wake-ups
    steps.wake_start_line()
    assert await woken_jobs(hub) == []  # still late: nobody is woken
    # the first start's resource took the job (a process, a batch job in its queue): the next goes
    steps._on_report(servers.spawners["w0"], "queued", {"resource_id": "1"})
    assert jobs[0].status == "queued"
    assert await woken_jobs(hub) == [jobs[2].id]
    await steps.reconcile(jobs[2].id)
    assert sorted(servers.spawners) == ["w0", "w1", "w2"]
    # the loop caught up: the probe wakes the line, the last one starts
    lag[0] = 0.0
    steps.wake_start_line()
    assert await woken_jobs(hub) == [jobs[3].id]
    await steps.reconcile(jobs[3].id)
    assert sorted(servers.spawners) == ["w0", "w1", "w2", "w3"]
    servers.release.set()
    await hub.pool.close()


@pytest.mark.parametrize("on_hub_machine", [True, False])
async def test_max_local_starts_counts_a_start_until_it_ends_unless_its_resource_is_elsewhere(hub, on_hub_machine):
    """``max_local_starts`` counts a start in its bookkeeping; a local server's until its
    start ends (it listens), one handed to a resource elsewhere (a job in SLURM's queue)
    no longer once the resource took it. A launch that waits says so, once."""
    steps, servers = job_steps(hub, "slow", max_local_starts=1)
    servers.spawner_classes = {
        "local": SimpleNamespace(stopped_outcome="completed", runs_on_hub_machine=on_hub_machine)
    }
    said: list[tuple[int, str]] = []
    hub.jobs.progress = lambda job, event: said.append((job.id, event["message"]))
    first, second = (hub.jobs.launch(workspace(hub, "ann", f"w{i}"), "lab", None, {}, "ann") for i in range(2))
    await steps.reconcile(first.id)
    await steps.reconcile(second.id)
    assert sorted(servers.spawners) == ["w0"]  # the first start's bookkeeping holds the slot
    assert said == [(second.id, "Waiting for a start slot: 0 launches ahead of it")]

    await woken_jobs(hub)  # the launches' wake-ups
    # the first start's resource took the job: a process here still holds the slot, a job
    # waiting in SLURM's queue does not
    steps._on_report(servers.spawners["w0"], "queued", {"resource_id": "1"})
    if on_hub_machine:
        assert await woken_jobs(hub) == []
        await steps.reconcile(second.id)
        assert sorted(servers.spawners) == ["w0"]
        servers.release.set()  # the server listens: its start ends, the next goes
        await settle(steps, first, {"running"})
        assert second.id in await woken_jobs(hub)
    else:
        assert await woken_jobs(hub) == [second.id]
    await steps.reconcile(second.id)
    assert sorted(servers.spawners) == ["w0", "w1"]
    assert len(said) == 1  # (a job told once, when it joined the line)
    servers.release.set()
    await hub.pool.close()


@pytest.mark.parametrize("on_hub_machine", [True, False])
async def test_a_queued_report_after_a_start_ended_leaves_max_local_starts_as_it_was(hub, on_hub_machine):
    """A ``queued`` report that comes after the start's future ended (before the step
    that records the end) is not the start's any more: it must not mark the job
    submitted or elsewhere for good, one more start past the cap each time.
    (JupyterHub 6 awaits a cancelled ``start()``, so no spawner here reports that
    late; a spawner that reports from a task of its own could.)"""
    steps, servers = job_steps(hub, "slow", max_local_starts=1)
    servers.spawner_classes = {
        "local": SimpleNamespace(stopped_outcome="completed", runs_on_hub_machine=on_hub_machine)
    }
    first = hub.jobs.launch(workspace(hub, "ann", "w0"), "lab", None, {}, "ann")
    await steps.reconcile(first.id)
    steps._starts[first.id].future.cancel()  # (the start ends: a stop, a timeout)
    for _ in range(3):
        await asyncio.sleep(0)  # its end's callbacks: the slot is free again
    steps._on_report(servers.spawners["w0"], "queued", {"resource_id": "1"})  # the late report
    await settle(steps, first, {"failed"})
    second, third = (hub.jobs.launch(workspace(hub, "ann", f"w{i}"), "lab", None, {}, "ann") for i in (1, 2))
    await steps.reconcile(second.id)
    await steps.reconcile(third.id)
    assert sorted(servers.spawners) == ["w0", "w1"]  # one start at a time, as before
    servers.release.set()
    await hub.pool.close()


def free_start_slots(steps) -> list[int]:
    """The start slots free under each cap alone: ``concurrent_starts`` 5,
    ``max_local_starts`` 5, the event loop late (MIN_STARTS_WHEN_LATE in bookkeeping)."""
    free = []
    for concurrent, local, late in [(5, 0, False), (0, 5, False), (0, 0, True)]:
        steps.concurrent_starts, steps.max_local_starts = concurrent, local
        steps.loop_lag, steps.max_loop_lag = (lambda: 1.0, 0.1) if late else (None, 0)
        free.append(steps._free_start_slots())
    return free


@pytest.mark.parametrize("on_hub_machine", [True, False])
@pytest.mark.parametrize(
    "end", ["worked", "failed", "cancelled", "stopped", "submitted-then-stopped", "late-report", "job-finished"]
)
async def test_a_start_frees_its_slot_once_whichever_way_it_ends(hub, on_hub_machine, end):
    """A start holds one slot under each cap (``concurrent_spawn_limit``,
    ``max_local_starts``, the late loop's bookkeeping) until its future is done, and
    frees exactly that, whichever way it ends: it worked, failed, was cancelled (a
    timeout, the watch), its job was stopped (before or after its resource took it),
    a ``queued`` report came after its end, or its job finished meanwhile. Its record
    is gone once its end is taken. (What a start is counted as comes from its record,
    counted in and out in one place.)"""
    steps, servers = job_steps(hub, "fail" if end == "failed" else "slow")
    servers.spawner_classes = {
        "local": SimpleNamespace(stopped_outcome="completed", runs_on_hub_machine=on_hub_machine)
    }
    assert free_start_slots(steps) == [5, 5, MIN_STARTS_WHEN_LATE]
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)
    start = steps._starts[job.id].future
    assert free_start_slots(steps) == [4, 4, MIN_STARTS_WHEN_LATE - 1]  # in its bookkeeping
    if end == "submitted-then-stopped":
        steps._on_report(servers.spawners["w1"], "queued", {"resource_id": "1"})
        assert free_start_slots(steps) == [4, 4 if on_hub_machine else 5, MIN_STARTS_WHEN_LATE]
    if end in ("stopped", "submitted-then-stopped"):
        hub.jobs.stop(job, "ann")
        await steps.reconcile(job.id)  # the step that cancels the start: it ends in its own time
        assert job.id not in steps._starts and not start.done() and free_start_slots(steps)[0] == 4
    elif end in ("cancelled", "late-report"):
        start.cancel()
    elif end == "job-finished":
        hub.jobs.transition(job, JobStatus.failed, "ended elsewhere")
        hub.db.commit()
        await steps.reconcile(job.id)  # the step that forgets it: its start goes on
        assert job.id not in steps._starts and free_start_slots(steps)[0] == 4
    servers.release.set()
    await asyncio.wait([start], timeout=5)
    for _ in range(3):
        await asyncio.sleep(0)  # its end's callbacks
    if end == "late-report":
        steps._on_report(servers.spawners["w1"], "queued", {"resource_id": "1"})
    await settle(steps, job, {"running", "failed", "cancelled"})
    assert job.status == {"worked": "running", "stopped": "cancelled", "submitted-then-stopped": "cancelled"}.get(
        end, "failed"
    )
    assert free_start_slots(steps) == [5, 5, MIN_STARTS_WHEN_LATE]
    assert not steps._starts and not steps._watched
    await hub.pool.close()


async def test_the_scan_leaves_starts_under_way_to_themselves_until_their_deadline(hub, monkeypatch):
    """A job whose start is under way (a batch job held in SLURM's queue, for hours) is
    not looked at by every scan: its start wakes it. Past its deadline it is again."""
    steps, servers = job_steps(hub, "never", pending_timeout=60)
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)
    assert job.status == "pending" and "w1" in servers.spawners  # starting
    assert steps.unfinished() == []
    later = utcnow() + timedelta(seconds=61)
    monkeypatch.setattr("uws_hub.jobs.reconcile.utcnow", lambda: later)  # the start's 61 s later
    assert steps.unfinished() == [job.id]
    await steps.reconcile(job.id)
    assert job.status == "stopping" and job.reason == "The job did not start within 60 s"
    await hub.pool.close()


async def test_the_pending_deadline_times_the_start_not_the_wait_for_a_start_slot(hub):
    """A launch that waited for a start slot (``max_local_starts``, a long burst) for
    longer than ``job_pending_timeout`` is neither failed while it waits nor as soon as
    its start begins: the deadline counts from the start."""
    steps, servers = job_steps(hub, "slow", pending_timeout=60, max_local_starts=1)
    servers.spawner_classes = {"local": SimpleNamespace(stopped_outcome="completed", runs_on_hub_machine=True)}
    first, second = (hub.jobs.launch(workspace(hub, "ann", f"w{i}"), "lab", None, {}, "ann") for i in range(2))
    await steps.reconcile(first.id)
    await steps.reconcile(second.id)
    assert sorted(servers.spawners) == ["w0"]  # the second waits for the slot
    second.created_at = utcnow() - timedelta(seconds=61)  # ... longer than its deadline
    assert second.id not in steps.unfinished()  # the scan leaves it to the line
    await steps.reconcile(second.id)
    assert second.status == "pending"
    hub.jobs.stop(first, "ann")  # the slot frees
    await settle(steps, first, {"cancelled"})
    await steps.reconcile(second.id)
    assert sorted(servers.spawners) == ["w0", "w1"] and servers.spawners["w1"].pending == "spawn"
    await steps.reconcile(second.id)  # a step while its start is under way
    assert second.status == "pending", second.reason
    servers.release.set()
    await settle(steps, second, {"running"})
    await hub.pool.close()


async def test_a_start_that_fails_fails_the_job_with_its_reason(hub):
    steps, servers = job_steps(hub, "fail")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"failed"})
    assert job.reason == "The server failed to start: the batch system refused it"
    assert servers.stopped == ["w1"]
    await hub.pool.close()


async def test_a_start_that_never_answers_fails_at_its_deadline(hub):
    steps, servers = job_steps(hub, "never", pending_timeout=0.05)
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await settle(steps, job, {"failed"})
    assert job.reason == "The job did not start within 0.05 s"
    assert servers.stopped == ["w1"] and not servers.spawners["w1"].active
    await hub.pool.close()


async def test_a_stop_during_a_slow_start_cancels_the_job(hub):
    steps, servers = job_steps(hub, "slow")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    await steps.reconcile(job.id)
    assert servers.spawners["w1"].pending == "spawn"
    hub.jobs.stop(job, "ann")
    await settle(steps, job, {"cancelled"})
    assert servers.stopped == ["w1"] and job.running_at is None
    await hub.pool.close()


async def test_a_start_refused_by_a_quota_while_it_waited_fails(hub):
    steps, _ = job_steps(hub, "ok")
    job = hub.jobs.launch(workspace(hub), "lab", None, {}, "ann")
    hub.quotas.defaults = Limits(concurrent_jobs=0)  # lowered while the job waited
    await settle(steps, job, {"failed"})
    assert job.reason.startswith("The launch was refused: Concurrent job quota")
    await hub.pool.close()


async def test_a_held_batch_job_whose_owner_is_deleted_ends_without_a_failed_step(hub):
    """The rows of batch jobs under way are held (BatchSteps): one whose row the database
    deleted meanwhile (its owner deleted: ON DELETE CASCADE) is found gone at its next
    step, as an unheld row is, not written to (a failed commit, a step retried)."""
    hub.db.expire_on_commit = False  # as JupyterHub's session (a commit reloads nothing)
    hub.jobs.attach(hub.db)  # as services.build
    runner = FakeRunner()
    job_id, ws, batch, steps = await handed_over_batch_job(hub, runner)
    assert hub.db.get(Job, job_id).status == "running"
    del ws
    # the owner deleted, as JupyterHub deletes a user: the database deletes the rest (as
    # JupyterHub's engine, with SQLite's foreign keys on)
    hub.db.connection().exec_driver_sql("PRAGMA foreign_keys=ON")
    hub.db.delete(hub.users.pop("ann"))
    hub.db.commit()
    runner.ended.add(job_id)
    await steps.reconcile(job_id)  # raised StaleDataError (an UPDATE of no row)
    assert batch._rows == {}
    await hub.pool.close()


async def test_the_output_of_a_batch_job_never_handed_over_is_empty_without_rendering_its_launch(hub):
    """A batch job's log file is stored at its hand-over to its runner: before it (queued,
    refused, cancelled while waiting) it printed nothing. Asking for its output renders no
    launch (its job type may be gone from the configuration since; no HOME is made)."""
    offer_true_batch_jobs(hub)
    job = hub.jobs.launch(workspace(hub), "run", None, {}, "ann")
    assert job.log_path is None
    hub.jobs.job_types = {}  # the hub restarted without it
    assert await hub.jobs.output(job) == ""  # raised KeyError: 'run'


async def test_a_batch_job_whose_account_went_away_while_it_waited_is_refused_alone(hub, monkeypatch):
    """What the runner is handed is rendered in the queue's transaction (its log file is
    stored with the attempt): a refusal there (the launcher's system account gone while
    the job waited) fails that job, as the launch checks' refusals do; the queue's step
    hands the others over (it raised: every step of the queue failed, for everyone)."""
    runner = offer_true_batch_jobs(hub)
    anns = hub.jobs.launch(workspace(hub), "run", None, {}, "ann")
    bens = hub.jobs.launch(workspace(hub, "ben", "w2"), "run", None, {}, "ben")
    system_user = hub.jobs.accounts.system_user

    def gone(name):
        if name == "ann":
            raise Conflict(f"User {name!r} has no system account on the hub's machine")
        return system_user(name)

    monkeypatch.setattr(hub.jobs.accounts, "system_user", gone)
    batch, queue = batch_queue(hub, runner)
    await queue.reconcile(0)
    await batch._submits[bens.id]
    assert (bens.status, anns.status) == ("running", "failed")
    assert anns.reason.startswith("The launch was refused: User 'ann' has no system account"), anns.reason
    assert [launch.job_id for launch in runner.submitted] == [bens.id]
    await hub.pool.close()


async def test_a_waiting_job_whose_type_is_no_longer_offered_fails_and_the_queue_goes_on(hub):
    """A job type removed from the configuration (and the hub restarted) while a job of it
    waited: the queue chose it, and its hand-over's check looked the type up by its name,
    a KeyError, so the queue's step failed at each retry, for every user's job. The job
    fails, saying why, and the others start."""
    runner = FakeRunner()
    hub.jobs.runners = {"local": runner}
    hub.jobs.job_types = parse_job_types(
        {"run": {"interactive": False, "cmd": ["true"]}, "old": {"interactive": False, "cmd": ["true"]}}, ["local"]
    )
    gone = hub.jobs.launch(workspace(hub), "old", None, {}, "ann").id
    other = hub.jobs.launch(workspace(hub, "ben", "w2"), "run", None, {}, "ann").id
    hub.jobs.job_types = {name: jt for name, jt in hub.jobs.job_types.items() if name != "old"}
    batch, queue = batch_queue(hub, runner)
    await queue.reconcile(0)
    await batch._submits[other]
    job = hub.db.get(Job, gone)
    assert job.status == "failed" and "'old'" in job.reason
    assert hub.db.get(Job, other).status == "running"
    await hub.pool.close()


async def test_a_waiting_job_of_a_resource_no_longer_run_fails_and_can_be_cancelled(hub):
    """A resource taken out of the configuration (and the hub restarted) while batch jobs
    waited for it: the queue gave them no slot, for ever ("Waiting for its turn"), and a
    cancel of one failed its step at each retry (its runner looked up first), the job
    ``stopping`` for ever and its workspace undeletable. The queue refuses them, as a
    hand-over refuses a job the hub no longer offers, and one cancelled first ends."""
    runners = {"local": FakeRunner(), "other": FakeRunner()}
    hub.jobs.runners = runners
    hub.jobs.job_types = parse_job_types(
        {"run": {"interactive": False, "cmd": ["true"], "resources": ["local", "other"]}}, ["local", "other"]
    )
    ws = workspace(hub)
    waiting = [hub.jobs.launch(ws, "run", "other", {}, "ann").id for _ in range(2)]
    cancelled = hub.jobs.launch(ws, "run", "other", {}, "ann")
    local = hub.jobs.launch(ws, "run", "local", {}, "ann").id
    # the hub restarted without "other"
    offer_true_batch_jobs(hub, runners["local"])
    batch, queue = batch_queue(hub, runners["local"])
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    hub.jobs.stop(cancelled, "ann")
    await steps.reconcile(cancelled.id)
    assert hub.db.get(Job, cancelled.id).status == "cancelled"
    await queue.reconcile(0)
    await batch._submits[local]
    for job_id in waiting:
        job = hub.db.get(Job, job_id)
        assert (job.status, job.reason) == (
            "failed",
            "The launch was refused: the hub no longer runs batch jobs on 'other'",
        )
    assert hub.db.get(Job, local).status == "running"
    await hub.pool.close()


async def test_a_workspace_with_a_batch_job_waiting_or_running_is_not_deleted(hub):
    """Deleting a workspace is refused (409) while a job of it is unfinished; only its
    interactive job was looked for: with a batch job waiting or running the status
    change raised (a 500), and a workspace in ``error`` went to ``deleting`` under it."""
    offer_true_batch_jobs(hub)
    ws = workspace(hub)
    job = hub.jobs.launch(ws, "run", None, {}, "ann")
    for status in ("active", "error"):
        ws.status = status
        hub.db.commit()
        with pytest.raises(Conflict, match=f"has a pending job \\(id {job.id}\\)"):
            hub.workspaces.delete(ws, "ann")
        hub.db.rollback()
        assert (ws.target, ws.status) == ("ready", status)
    await hub.pool.close()


async def test_a_job_queued_in_a_step_whose_commit_raised_starts_after_the_next_scan(hub, monkeypatch):
    """The queue keeps the jobs it marked queued once its commit returned. A commit that
    went through and raised all the same (the connection lost on its answer) left a job
    queued that the queue did not know of: it never started, slots free, until a restart.
    Each scan of the reconciler has the queue's next step read the whole queue again."""
    runner = offer_true_batch_jobs(hub)
    ws = workspace(hub)
    running = [hub.jobs.launch(ws, "run", None, {}, "ann").id for _ in range(2)]
    batch, queue = batch_queue(hub, runner)  # 2 slots
    steps = JobSteps(hub.jobs, hub.servers, hub.queue, hub.pool, log, batch=batch)
    await queue.reconcile(0)
    for task in list(batch._submits.values()):
        await task
    late = hub.jobs.launch(ws, "run", None, {}, "ann").id
    commit = hub.db.commit

    def commit_then_raise():
        commit()
        monkeypatch.setattr(hub.db, "commit", commit)
        raise OSError("connection lost")

    monkeypatch.setattr(hub.db, "commit", commit_then_raise)
    with pytest.raises(OSError):
        await queue.reconcile(0)
    hub.db.rollback()  # as the reconciler does
    assert hub.db.get(Job, late).status == "queued"
    for job_id in running:
        runner.ended.add(job_id)
        await steps.reconcile(job_id)
    await queue.reconcile(0)
    await queue.after_scan()
    await queue.reconcile(0)
    await batch._submits[late]
    assert hub.db.get(Job, late).status == "running"
    await hub.pool.close()
