"""The JupyterHub side of jobs (uws_hub.jobs.servers) on a real JupyterHub user and database:
a workspace's server gets its spawner as JupyterHub's ``get_or_create_spawner`` would give it,
without walking all the servers of a user who owns thousands."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from concurrent.futures import Future

import pytest
from jupyterhub import orm as hub_orm
from jupyterhub.user import User, UserDict
from sqlalchemy import event, inspect

from uws_hub.jobs.servers import ServerControl
from uws_hub.spawners.local import WorkspaceLocalProcessSpawner
from uws_hub.spawners.mixins import WorkspaceLaunch
from uws_hub.spawners.slurm.spawner import WorkspaceSlurmSpawner

SERVERS = 300


@pytest.fixture
def control():
    db = hub_orm.new_session_factory("sqlite:///:memory:")()
    orm_user = hub_orm.User(name="owner")
    db.add(orm_user)
    db.commit()
    for i in range(SERVERS):
        db.add(hub_orm.Spawner(name=f"ws-{i}", user=orm_user))
    db.commit()
    users = UserDict(lambda: db, {"allow_named_servers": True, "spawner_class": WorkspaceLocalProcessSpawner})
    users.add(orm_user)
    classes = {"local": WorkspaceLocalProcessSpawner, "slurm": WorkspaceSlurmSpawner}
    control = ServerControl(users, None, logging.getLogger("test"), classes, None, client_scopes=lambda o, s: [])
    # JupyterHub loads every user's servers at its start: the collection is loaded
    assert len(orm_user._orm_spawners) == SERVERS + 1  # and the default server
    yield control, db, orm_user
    db.close()


def test_a_new_server_is_added_without_flushing_the_users_collection(control):
    control, db, orm_user = control
    flushed_collections = []

    @event.listens_for(db, "before_flush")
    def before_flush(session, context, instances):
        flushed_collections.append(inspect(orm_user).attrs._orm_spawners.history.added)

    spawner = control.spawner(orm_user, "fresh", "slurm")
    # nothing of the user's thousands of servers is compared at the flush
    assert flushed_collections and not any(flushed_collections)
    assert type(spawner) is WorkspaceSlurmSpawner
    assert (spawner.name, spawner.orm_spawner.display_name, spawner.orm_spawner.user) == ("fresh", "fresh", orm_user)
    # JupyterHub sees it as its own: in the loaded collection, in the database, the wrapper kept
    assert orm_user.orm_spawners["fresh"] is spawner.orm_spawner
    assert control.user(orm_user).spawners["fresh"] is spawner
    db.expire(orm_user)
    assert set(orm_user.orm_spawners) == {"", "fresh", *(f"ws-{i}" for i in range(SERVERS))}
    # asked again: the same spawner
    assert control.spawner(orm_user, "fresh", "slurm") is spawner


def test_a_stored_server_gets_its_resources_class_and_a_failed_one_a_new_spawner(control):
    control, db, orm_user = control
    found = control.find(orm_user, "ws-7")
    assert type(found) is WorkspaceLocalProcessSpawner and found.orm_spawner is orm_user.orm_spawners["ws-7"]
    assert control.find(orm_user, "nothing") is None
    # another resource's class while it is stopped, on the same row
    slurm = control.spawner(orm_user, "ws-7", "slurm")
    assert type(slurm) is WorkspaceSlurmSpawner and slurm.orm_spawner is found.orm_spawner
    # as JupyterHub's replace_failed: a failed start's spawner is not reused
    failed_start: Future = Future()
    failed_start.set_exception(RuntimeError("it did not answer"))
    slurm._spawn_future = failed_start
    assert slurm._failed
    again = control.spawner(orm_user, "ws-7", "slurm")
    assert again is not slurm and again.orm_spawner is slurm.orm_spawner
    assert len(orm_user._orm_spawners) == SERVERS + 1
    # an invalid name is refused as JupyterHub refuses it
    with pytest.raises(ValueError, match="Invalid server_name"):
        control.spawner(orm_user, "Not a slug!", "local")


def test_the_users_servers_by_name_answer_as_jupyterhubs(control):
    """JupyterHub's own lookups (User.spawn's get_or_create_spawner, the REST API) read the
    wrapper's orm_spawners: one server at a time, the same rows as JupyterHub's dict."""
    control, db, orm_user = control
    user = control.user(orm_user)
    rows = user.orm_spawners
    assert rows is not orm_user.orm_spawners and dict(rows) == orm_user.orm_spawners
    assert len(rows) == SERVERS + 1 and set(rows) == set(orm_user.orm_spawners)
    assert rows.get("ws-3") is orm_user.orm_spawners["ws-3"] and "nothing" not in rows
    assert rows.get("nothing") is None
    spawner = control.spawner(orm_user, "ws-3", "local")
    assert rows["ws-3"] is spawner.orm_spawner
    # JupyterHub's spawn asks for the server's spawner this way: it gets the same one
    assert user.get_or_create_spawner("ws-3", "", replace_failed=True) is spawner
    fresh = user.get_or_create_spawner("fresh", "")
    assert fresh.orm_spawner is orm_user.orm_spawners["fresh"] is rows["fresh"]


def test_a_servers_spawner_is_made_with_one_query_of_its_row(control):
    """The row found (or made) for a server is handed to JupyterHub's ``_new_spawner``,
    which looked it up by name again: one query less on the way to every start (failed
    before: two SELECTs of the same row)."""
    control, db, orm_user = control
    selects: list[str] = []

    @event.listens_for(db.get_bind(), "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if statement.startswith("SELECT") and "FROM spawners" in statement:
            selects.append(statement)

    spawner = control.spawner(orm_user, "ws-11", "local")
    assert spawner.orm_spawner.name == "ws-11" and len(selects) == 1
    # outside that hand-over, the rows answer by name as before
    assert control.user(orm_user).orm_spawners["ws-12"].name == "ws-12"
    event.remove(db.get_bind(), "before_cursor_execute", count)


class RecordingProxy:
    """The proxy calls of a start, recorded (each answers at once)."""

    def __init__(self):
        self.routes: dict[str, str] = {}

    async def add_route(self, spec, target, data):
        self.routes[spec] = target

    async def add_user(self, user, server_name=""):
        self.routes[user.spawners[server_name].proxy_spec] = "added after the start"

    async def delete_user(self, user, server_name=""):
        self.routes.pop(user.spawners[server_name].proxy_spec, None)


async def test_a_start_that_listens_only_after_its_spawn_failed_gets_no_route(control, monkeypatch):
    """The route added once the server listens (uws_hub.jobs.servers) is added only while
    the spawn is pending: a start() that returns after JupyterHub's spawn gave up on it (its
    start_timeout; a stop's cancel start() let pass) must not leave a route behind, to a
    server that JupyterHub never recorded (nothing removes it; its port may be reused)."""
    from uws_hub.tasks import TaskPool

    control, db, orm_user = control
    control.proxy = proxy = RecordingProxy()
    control.pool = TaskPool(logging.getLogger("test"))
    gate = asyncio.Event()
    spawner = control.spawner(orm_user, "ws-1", "local")

    async def start():
        # as WorkspaceSpawnerMixin.take_launch, then a server that listens late
        spawner.start_task = asyncio.current_task()
        spawner.listening = False
        spawner.start_task.add_done_callback(spawner.start_listener)
        await gate.wait()
        spawner.listening = True
        return ("127.0.0.1", 40123)

    async def spawn(self, server_name="", options=None, handler=None):
        # as User.spawn at its start_timeout: it gives up, start() goes on
        asyncio.ensure_future(start())
        await asyncio.sleep(0)
        raise TimeoutError("Spawner failed to start [status=None]")

    monkeypatch.setattr(User, "spawn", spawn)
    launch = WorkspaceLaunch(job_id=1, workspace_id=1, directory="/tmp", cmd=[], launcher="owner")
    future = control.start(orm_user, "ws-1", "local", launch, None, lambda: None)
    with pytest.raises(TimeoutError):
        await future
    gate.set()
    await spawner.start_task
    for _ in range(10):
        await asyncio.sleep(0)
    await control.pool.close()
    assert proxy.routes == {}


async def test_a_stop_waits_on_the_servers_exit_watch_not_on_a_new_pidfd(control, monkeypatch):
    """A running local server's exit is watched with one pidfd (``start_polling``); a
    stop's wait after each signal waits on that watch instead of opening another pidfd
    (a server held three). A wait that times out leaves the watch as it was. Failed
    before: each wait opened a pidfd of its own."""
    from uws_hub.spawners import local
    from uws_hub.spawners.listening import process_exit

    control, db, orm_user = control
    spawner = control.spawner(orm_user, "ws-2", "local")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        spawner.proc, spawner.pid = proc, proc.pid
        spawner._exit_watch = watch = local.process_exit(proc.pid)  # as start_polling makes it
        assert watch is not None
        opened = []

        def counting_process_exit(pid):
            opened.append(pid)
            return process_exit(pid)

        monkeypatch.setattr(local, "process_exit", counting_process_exit)
        assert await spawner.wait_for_death(0.05) is False
        assert not watch.done()  # a timeout does not cancel the watch
        proc.terminate()
        assert await spawner.wait_for_death(5) is True
        assert opened == []
    finally:
        proc.kill()
        proc.wait()
    # a server without a watch (stopped while it started): a pidfd of the wait's own
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        spawner.proc, spawner.pid, spawner._exit_watch = proc, proc.pid, None
        proc.terminate()
        assert await spawner.wait_for_death(5) is True
        assert opened == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


async def test_a_stop_whose_commit_fails_leaves_the_session_usable(control, monkeypatch):
    """The commit that ends a stop (the owner's activity put back, what ``then`` records)
    fails: it is rolled back, as a ``then`` that fails is, so nothing of it stays in the
    session and the next user of the session can use it. Failed before: every later query
    of the session raised PendingRollbackError until something rolled it back."""
    from sqlalchemy import select, text
    from sqlalchemy.orm.exc import StaleDataError

    from uws_hub.tasks import TaskPool

    control, db, orm_user = control
    control.proxy = RecordingProxy()
    control.pool = TaskPool(logging.getLogger("test"))
    spawner = control.spawner(orm_user, "ws-1", "local")
    spawner.orm_spawner.server = hub_orm.Server()
    db.commit()

    async def stop(self, server_name=""):
        pass

    monkeypatch.setattr(User, "stop", stop)
    other = orm_user.orm_spawners["ws-2"]

    def then():
        # a row another process deleted meanwhile: its update matches none
        db.execute(text("DELETE FROM spawners WHERE id = :id"), {"id": other.id})
        other.name = "renamed"

    with pytest.raises(StaleDataError):
        await control.stop(orm_user, "ws-1", then=then)
    assert db.execute(select(hub_orm.User.name)).scalars().all() == ["owner"]
    await control.pool.close()


@pytest.fixture
async def running(control):
    """A server "ws-1" whose process runs (a real one), with its API token and OAuth
    client, as JupyterHub's spawn leaves them: (control, db, owner, spawner, process)."""
    from uws_hub.tasks import TaskPool

    control, db, orm_user = control
    control.proxy = RecordingProxy()
    control.pool = TaskPool(logging.getLogger("test"))
    spawner = control.spawner(orm_user, "ws-1", "local")
    spawner.orm_spawner.server = hub_orm.Server()
    if db.query(hub_orm.OAuthClient).filter_by(identifier="jupyterhub").first() is None:
        db.add(hub_orm.OAuthClient(identifier="jupyterhub"))  # (the hub's own, every token's default)
    spawner.api_token = orm_user.new_api_token(note="Server at /user/owner/ws-1/", scopes=["inherit"])
    spawner.orm_spawner.oauth_client = hub_orm.OAuthClient(identifier=spawner.oauth_client_id)  # as User.spawn
    db.commit()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spawner.proc, spawner.pid = proc, proc.pid
    try:
        yield control, db, orm_user, spawner, proc
    finally:
        proc.kill()
        proc.wait()
        await control.pool.close()


def _cleaned_up(db, spawner, token: str) -> bool:
    """Whether JupyterHub's cleanup of a stopped server went through: its token and OAuth
    client deleted, its server row gone."""
    return (
        hub_orm.APIToken.find(db, token) is None
        and db.query(hub_orm.OAuthClient).filter_by(identifier=spawner.oauth_client_id).first() is None
        and spawner.orm_spawner.server is None
    )


async def test_a_stop_records_the_end_once_the_process_exited_before_jupyterhubs_cleanup(running):
    """A stop's ``then`` (the job's end) runs and is committed as soon as the spawner's
    stop() knows the process exited, before JupyterHub's ``User.stop`` deletes the
    server's token and OAuth client (commits, ~10 ms a stop); the cleanup still follows,
    and ``then`` runs once. Failed before: ``then`` ran after the cleanup."""
    control, db, orm_user, spawner, proc = running
    token, seen = spawner.api_token, []

    def then():
        seen.append((proc.poll() is not None, _cleaned_up(db, spawner, token)))

    assert await control.stop(orm_user, "ws-1", then=then) is True
    # at the end's record: the process had exited, JupyterHub had not cleaned up yet
    assert seen == [(True, False)]
    assert _cleaned_up(db, spawner, token) and spawner.stopped_listener is None


async def test_no_request_after_a_stops_early_end_sees_the_users_activity_moved(running):
    """JupyterHub's ``User.stop`` sets the user's activity to now, which the hub puts back
    (a stop is no activity of the user's: an admin's, a time limit's). Since the job's end
    is recorded before that cleanup, a request answered between the cleanup and the put
    back (the API's ``last_activity`` right after a stop) saw it moved. Put back before
    anything else runs: every look from another task during the stop sees it as before.
    Failed before: the looks after JupyterHub's cleanup saw the stop's time."""
    control, db, orm_user, spawner, proc = running
    before = orm_user.last_activity
    seen, stopping = [], True

    async def look():
        while stopping:
            seen.append(orm_user.last_activity)
            await asyncio.sleep(0)

    looking = asyncio.ensure_future(look())
    assert await control.stop(orm_user, "ws-1", then=lambda: None) is True
    stopping = False
    await looking
    assert len(seen) > 1 and set(seen) == {before}
    assert orm_user.last_activity == before and spawner.stop_cleaned_listener is None


async def test_a_stop_that_cannot_tell_the_process_ended_records_the_end_after_it(running, monkeypatch):
    """A spawner's stop that gives up on the process (it did not die) records no end
    early: a job is never reported ended while its process may still run. The end is
    then recorded after JupyterHub's stop, as before (the reconciler's stopping timeout
    and orphan sweep deal with the process)."""
    from jupyterhub.spawner import LocalProcessSpawner

    control, db, orm_user, spawner, proc = running
    token, seen = spawner.api_token, []

    async def stop_that_gives_up(self, now=False):
        pass  # as LocalProcessSpawner's stop when the process "never died"

    monkeypatch.setattr(LocalProcessSpawner, "stop", stop_that_gives_up)

    def then():
        seen.append((proc.poll() is not None, _cleaned_up(db, spawner, token)))

    assert await control.stop(orm_user, "ws-1", then=then) is True
    assert seen == [(False, True)]


async def test_a_server_deleted_while_its_stop_cleans_up_is_deleted_once_that_is_through(control):
    """A stop records its job's end before JupyterHub's cleanup of the server: a workspace
    deleted right after (its server deleted) waits for that cleanup instead of finding
    the server still active. Failed before: the delete failed ("still active")."""
    control, db, orm_user = control
    spawner = control.spawner(orm_user, "ws-1", "local")
    spawner.orm_spawner.server = hub_orm.Server()
    db.commit()
    spawner._stop_pending = True
    spawner._stop_future = cleanup = asyncio.get_running_loop().create_future()
    deleting = asyncio.ensure_future(control.delete(orm_user, "ws-1"))
    await asyncio.sleep(0.01)
    assert not deleting.done()
    # as the end of JupyterHub's User.stop
    spawner.orm_spawner.server = None
    spawner._stop_pending = False
    control.user(orm_user).spawners.pop("ws-1")
    db.commit()
    cleanup.set_result(None)
    await asyncio.wait_for(deleting, 5)
    db.expire(orm_user)
    assert "ws-1" not in orm_user.orm_spawners


def test_revoking_a_servers_tokens_leaves_the_sessions_objects_as_the_database(control):
    """``revoke_tokens`` deletes with one statement a kind, not through the ORM: what the
    session had loaded follows all the same (the hub's session keeps its objects across
    commits). A visitor's lists of tokens and codes, loaded before, no longer hold what
    was issued to the server's OAuth client, and still hold their own token and what
    another server's client issued them; the server no longer names its client."""
    control, db, orm_user = control
    visitor = hub_orm.User(name="visitor")
    db.add_all([visitor, hub_orm.OAuthClient(identifier="jupyterhub")])
    rows = {name: control._orm_spawner(orm_user, name) for name in ("ws-1", "ws-2")}
    for name, row in rows.items():
        row.oauth_client = hub_orm.OAuthClient(identifier=f"jupyterhub-user-owner-{name}")
    db.commit()
    server_token = orm_user.new_api_token(note="Server at /user/owner/ws-1/")
    other_server_token = orm_user.new_api_token(note="Server at /user/owner/ws-2/")
    own = visitor.new_api_token(note="the visitor's own")
    for name in ("ws-1", "ws-2"):
        visitor.new_api_token(client_id=f"jupyterhub-user-owner-{name}", note=f"login into {name}")
        db.add(hub_orm.OAuthCode(client_id=f"jupyterhub-user-owner-{name}", user=visitor, code=f"code-{name}"))
    db.commit()
    # loaded, as the session has them after requests that read them
    assert len(visitor.api_tokens) == 3 and len(visitor.oauth_codes) == 2 and len(orm_user.api_tokens) == 2
    assert rows["ws-1"].oauth_client is not None

    control.revoke_tokens(orm_user, "ws-1")
    db.commit()

    assert sorted(t.note for t in visitor.api_tokens) == ["login into ws-2", "the visitor's own"]
    assert [c.code for c in visitor.oauth_codes] == ["code-ws-2"]
    assert [t.note for t in orm_user.api_tokens] == ["Server at /user/owner/ws-2/"]
    assert rows["ws-1"].oauth_client is None and rows["ws-1"].oauth_client_id is None
    assert rows["ws-2"].oauth_client.identifier == "jupyterhub-user-owner-ws-2"
    assert hub_orm.APIToken.find(db, server_token) is None
    assert hub_orm.APIToken.find(db, other_server_token) is not None and hub_orm.APIToken.find(db, own) is not None
    assert [c.identifier for c in db.query(hub_orm.OAuthClient).order_by(hub_orm.OAuthClient.identifier)] == [
        "jupyterhub",
        "jupyterhub-user-owner-ws-2",
    ]
    # nothing of it is left to flush, and the database says the same after a fresh read
    assert not db.dirty and not db.deleted
    db.expire_all()
    assert sorted(t.note for t in visitor.api_tokens) == ["login into ws-2", "the visitor's own"]
    assert rows["ws-1"].oauth_client_id is None


async def test_what_a_stops_early_end_woke_runs_before_jupyterhubs_cleanup(running):
    """The commit of the job's end wakes the event streams that send it (a callback in the
    loop's next turn): the stop gives them that turn before JupyterHub's cleanup of the
    server (its commits) runs. Failed before: the cleanup ran first, in the same turn."""
    control, db, orm_user, spawner, proc = running
    loop, woken = asyncio.get_running_loop(), []

    def then() -> None:
        control.revoke_tokens(orm_user, "ws-1")
        loop.call_soon(lambda: woken.append("cleaned up" if spawner.server is None else "before the cleanup"))

    assert await control.stop(orm_user, "ws-1", then=then) is True
    assert woken == ["before the cleanup"]
    assert spawner.orm_spawner.server is None  # (and the cleanup followed)


async def test_a_stops_early_end_commits_the_servers_tokens_gone_with_it(running):
    """Every end of a job deletes its server's tokens (``JobService.transition`` calls
    ``revoke_tokens``): recorded before JupyterHub's cleanup, the end's own commit has the
    server's API token and OAuth client gone. A hub that dies right after it (before the
    cleanup) leaves no token that works, only the server's row, which JupyterHub's startup
    drops (its process is gone)."""
    control, db, orm_user, spawner, proc = running
    token = spawner.api_token
    commit, after_commits = control._commit, []

    def commit_and_look() -> None:
        commit()
        after_commits.append(
            (
                hub_orm.APIToken.find(db, token) is None,
                db.query(hub_orm.OAuthClient).filter_by(identifier=spawner.oauth_client_id).first() is None,
                spawner.orm_spawner.server is None,
            )
        )

    control._commit = commit_and_look
    assert await control.stop(orm_user, "ws-1", then=lambda: control.revoke_tokens(orm_user, "ws-1")) is True
    # the end's commit: tokens gone, the server's row not yet (JupyterHub's cleanup follows)
    assert after_commits[0] == (True, True, False)


async def test_a_stop_starts_before_its_routes_removal_and_a_route_failure_still_comes_first(control, monkeypatch):
    """The stop of a routed server runs its route's removal beside it: the stop's task goes
    first (a SLURM job's ``scancel`` is not put behind the making of the proxy's request),
    and when both fail, the route's failure is the one raised, as when it went first.
    Failed before: the route's removal started first."""
    from uws_hub.tasks import TaskPool

    control, db, orm_user = control
    order: list[str] = []
    failing: set[str] = set()

    class Proxy(RecordingProxy):
        async def delete_user(self, user, server_name=""):
            order.append("route")
            if "route" in failing:
                raise RuntimeError("the proxy failed")

    async def stop(self, server_name=""):
        order.append("stop")
        if "stop" in failing:
            raise RuntimeError("the stop failed")
        self.spawners[server_name].orm_spawner.server = None

    control.proxy = Proxy()
    control.pool = TaskPool(logging.getLogger("test"))
    monkeypatch.setattr(User, "stop", stop)
    spawner = control.spawner(orm_user, "ws-1", "local")
    spawner.orm_spawner.server = hub_orm.Server()
    db.commit()
    assert spawner.ready
    await control.stop(orm_user, "ws-1")
    assert order == ["stop", "route"]

    order.clear()
    failing.update({"route", "stop"})
    spawner.orm_spawner.server = hub_orm.Server()
    db.commit()
    with pytest.raises(RuntimeError, match="the proxy failed"):
        await control.stop(orm_user, "ws-1")
    assert order == ["stop", "route"]
    await control.pool.close()


async def test_revoking_a_servers_tokens_reads_nothing_back_of_its_deleted_client(running):
    """The server's OAuth client is deleted by a statement; JupyterHub's listener of a
    deleted row then read every relationship of it that the session had not loaded (its
    service, tokens and codes: a SELECT each, every end of a job) to find them empty.
    They are known empty (the statements before, and the foreign keys, leave nothing that
    refers to a deleted client). Failed before: three SELECTs. The session follows as
    before: the server's row no longer links the client, whose delete is committed with
    its token's."""
    control, db, orm_user, spawner, proc = running
    token, client_id = spawner.api_token, spawner.oauth_client_id
    orm_spawner = spawner.orm_spawner
    assert orm_spawner.oauth_client is not None  # loaded, as JupyterHub's spawn leaves it
    selects: list[str] = []

    @event.listens_for(db.get_bind(), "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if statement.lstrip().startswith("SELECT") and statement.strip() != "SELECT 1":
            selects.append(statement)

    control.revoke_tokens(orm_user, "ws-1")
    event.remove(db.get_bind(), "before_cursor_execute", count)
    assert selects == []
    db.commit()
    assert orm_spawner.oauth_client_id is None and orm_spawner.oauth_client is None
    assert hub_orm.APIToken.find(db, token) is None
    assert db.query(hub_orm.OAuthClient).filter_by(identifier=client_id).first() is None
    # the hub's own client: kept
    assert db.query(hub_orm.OAuthClient).filter_by(identifier="jupyterhub").first() is not None


async def test_starts_give_the_server_token_the_server_roles_scopes_read_once(control, monkeypatch):
    """A server's token gets JupyterHub's ``server`` role's scopes when the config's
    ``Spawner.server_token_scopes`` asks for none (the default), as JupyterHub's spawn
    gives them; the role is read once, not by every start (a query and the role's load
    in each spawn's bookkeeping). Failed before: the starts handed the spawn no scopes,
    and JupyterHub looked the role up at each."""
    from uws_hub.tasks import TaskPool

    control, db, orm_user = control
    db.add(hub_orm.Role(name="server", scopes=["users:activity!user", "access:servers!server"]))
    db.commit()
    control.proxy = RecordingProxy()
    control.pool = TaskPool(logging.getLogger("test"))
    asked: list[list[str]] = []
    role_reads: list[str] = []

    async def spawn(self, server_name="", options=None, handler=None):
        asked.append(list(self.spawners[server_name].server_token_scopes))
        raise RuntimeError("the test's spawn goes no further")

    @event.listens_for(db.get_bind(), "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if statement.startswith("SELECT") and "FROM roles" in statement:
            role_reads.append(statement)

    monkeypatch.setattr(User, "spawn", spawn)
    try:
        for name in ("ws-1", "ws-2", "ws-1"):
            launch = WorkspaceLaunch(job_id=1, workspace_id=1, directory="/tmp", cmd=[], launcher="owner")
            with pytest.raises(RuntimeError):
                await control.start(orm_user, name, "local", launch, None, lambda: None)
    finally:
        event.remove(db.get_bind(), "before_cursor_execute", count)
        await control.pool.close()
    assert asked == [["users:activity!user", "access:servers!server"]] * 3
    assert len(role_reads) == 1
