"""The JupyterHub side of jobs: each interactive job is a named server of its owner.

The reconciler starts and stops servers outside any request, so this module
does what JupyterHub's ``BaseHandler.spawn_single_user`` and
``stop_single_user`` do for a request (they are methods of a request
handler): it runs ``User.spawn``/``User.stop``, adds and removes the proxy
route, and keeps the spawner's ``_spawn_pending``/``_spawn_future``/
``_stop_pending`` flags as JupyterHub expects them, so JupyterHub's own spawn
progress API, server API and admin panel see these servers as their own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote

from jupyterhub import orm as hub_orm
from jupyterhub.metrics import SERVER_SPAWN_DURATION_SECONDS, ServerSpawnStatus
from jupyterhub.slugs import is_valid_safe_slug
from jupyterhub.spawner import Spawner
from jupyterhub.user import User, UserDict
from jupyterhub.utils import iterate_until, safe_log, url_escape_path, url_path_join
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.collections import collection_adapter
from traitlets.utils.importstring import import_item

from ..scopes import taken_by_hub
from ..spawners.mixins import LifecycleListener, WorkspaceLaunch, WorkspaceSpawnerMixin
from ..tasks import TaskPool


class ServerControl:
    def __init__(
        self,
        users: UserDict,
        proxy,
        log: logging.Logger,
        spawner_classes: dict[str, type[Spawner]],
        pool: TaskPool,
        *,
        client_scopes: Callable[[str, str], list[str]],
        refused_client_scopes: Callable[[str], bool] = taken_by_hub,
    ):
        self.users = users
        self.proxy = proxy
        self.log = log
        #: the spawner class of each resource ("local", "slurm", ...)
        self.spawner_classes = spawner_classes
        #: runs starts and stops (JupyterHub's spawn and stop futures)
        self.pool = pool
        #: scopes added to what the OAuth tokens of a server's client may carry:
        #: (owner name, server name) -> scopes (``custom:uws:write:servers``, which the
        #: job's Jupyter server checks to tell its launcher from readers)
        self.client_scopes = client_scopes
        #: whether a scope the config allows a server's OAuth client (any form) is left
        #: out: its process holds every visitor's token (see add_client_scopes). By
        #: default everything that acts on the hub's API: a ServerControl made without
        #: saying is closed, not open
        self.refused_client_scopes = refused_client_scopes
        #: the spawners whose start failed or was cancelled after JupyterHub recorded
        #: their server, which has no route then (a cancelled spawn leaves it recorded,
        #: and ready to JupyterHub, until it is stopped)
        self._unrouted: weakref.WeakSet[Spawner] = weakref.WeakSet()
        #: JupyterHub's ``server`` role's scopes, once read (see server_role_scopes)
        self._server_role_scopes: list[str] | None = None

    def server_role_scopes(self) -> list[str] | None:
        """The scopes of JupyterHub's ``server`` role: what ``User.spawn`` gives a server's
        token when ``Spawner.server_token_scopes`` asks for none (the default), read once.
        ``User.spawn`` would look the role up at every start (a query and its role's
        load, the largest piece of its bookkeeping after its commits); roles are
        JupyterHub's ``load_roles``, stored at the hub's start and not changed while it
        runs (uws-hub's own roles are others'). None if there is no such role:
        ``User.spawn`` then looks, as before."""
        if self._server_role_scopes is None:
            role = hub_orm.Role.find(self.users.db, "server")
            if role is not None:
                self._server_role_scopes = list(role.scopes)
        return self._server_role_scopes

    @property
    def config(self):
        """The hub's traitlets config (the spawners' too)."""
        return self.users.settings.get("config")

    def user(self, orm_user: hub_orm.User) -> User:
        user = self.users[orm_user]
        if "orm_spawners" not in user.__dict__:
            # (see ServerRows) an attribute of the wrapper's own comes before its
            # delegation to the row, for JupyterHub's code and ours alike
            user.__dict__["orm_spawners"] = ServerRows(user)
        return user

    def live(self, orm_user: hub_orm.User, server_name: str) -> Spawner | None:
        """The named server's spawner if this process has it loaded (every server that
        starts, runs or stops does), else None: no database lookup."""
        return dict.get(self.user(orm_user).spawners, server_name)

    def find(self, orm_user: hub_orm.User, server_name: str) -> Spawner | None:
        """The named server's spawner, or None if JupyterHub has no such server."""
        spawner = self.live(orm_user, server_name)
        if spawner is not None:
            return spawner
        orm_spawner = self._orm_spawner(orm_user, server_name)
        if orm_spawner is None:
            return None
        spawner = self._new_spawner(orm_user, orm_spawner)
        self.user(orm_user).spawners[server_name] = spawner
        return spawner

    def spawner(self, orm_user: hub_orm.User, server_name: str, resource: str) -> Spawner:
        """The named server's spawner, of ``resource``'s spawner class, created if needed.

        JupyterHub has one ``spawner_class``; a workspace's server runs its jobs on
        the resource each job asks for, so the spawner object is swapped for one
        of the right class while the server is stopped. What JupyterHub's
        ``User.get_or_create_spawner(name, replace_failed=True)`` does, without its
        walks of all the user's servers (see :meth:`_new_spawner`).
        """
        user = self.user(orm_user)
        cls = self.spawner_classes[resource]
        spawner = dict.get(user.spawners, server_name)
        if spawner is not None and spawner._failed:
            # as JupyterHub: a failed start's spawner is replaced by a new one
            self.log.debug("Discarding failed spawner %s", spawner._log_name)
            spawner = None
        if spawner is not None and type(spawner) is not cls:
            if spawner.active:
                raise RuntimeError(f"{spawner._log_name} is active on another resource")
            spawner = None
        if spawner is None:
            orm_spawner = self._orm_spawner(orm_user, server_name) or self._new_orm_spawner(orm_user, server_name)
            spawner = self._new_spawner(orm_user, orm_spawner, cls)
        # JupyterHub replaces the spawner of a failed start (one that did not answer in
        # time) with a new one it does not keep: keep it, or the start that follows asks
        # for the server's spawner again and gets yet another, without the launch
        user.spawners[server_name] = spawner
        return spawner

    def restore_class(self, orm_user: hub_orm.User, server_name: str, resource: str) -> None:
        """Before JupyterHub re-adopts servers at startup, give this one its resource's class.

        Otherwise JupyterHub would poll, say, a SLURM job's server with the
        default (local) spawner, find no process and forget it.
        """
        user = self.user(orm_user)
        if dict.get(user.spawners, server_name) is None:
            orm_spawner = self._orm_spawner(orm_user, server_name)
            if orm_spawner is not None:
                user.spawners[server_name] = self._new_spawner(orm_user, orm_spawner, self.spawner_classes[resource])

    # JupyterHub's User keeps a user's servers in one collection (orm.User._orm_spawners),
    # and a new server's row, added through it, makes the flush compare the whole
    # collection (12 ms a new server for a user with 5,000). Here a server's row is
    # found by one query and added by its user id, and the collection, when loaded,
    # learns of it without a change to flush.
    def _orm_spawner(self, orm_user: hub_orm.User, server_name: str) -> hub_orm.Spawner | None:
        return self.user(orm_user).orm_spawners.get(server_name)

    def _new_orm_spawner(self, orm_user: hub_orm.User, server_name: str) -> hub_orm.Spawner:
        """A named server's row, as JupyterHub's ``User._new_orm_spawner`` makes it (committed)."""
        if server_name and not is_valid_safe_slug(server_name):
            raise ValueError(f"Invalid server_name: {safe_log(server_name)}")
        db = self.users.db
        orm_spawner = hub_orm.Spawner(name=server_name, display_name=server_name, user_id=orm_user.id)
        db.add(orm_spawner)
        db.commit()
        if "_orm_spawners" in sa_inspect(orm_user).dict:
            # the loaded collection, as if it had been read after this commit
            collection_adapter(orm_user._orm_spawners).append_without_event(orm_spawner)
        return orm_spawner

    def _new_spawner(
        self, orm_user: hub_orm.User, orm_spawner: hub_orm.Spawner, spawner_class: type[Spawner] | None = None
    ) -> Spawner:
        """JupyterHub's ``User._new_spawner`` for this row (it finds the row through
        :class:`ServerRows`, handed the row: not queried again)."""
        user = self.user(orm_user)
        with user.orm_spawners.given(orm_spawner):
            return user._new_spawner(orm_spawner.name, spawner_class=spawner_class)

    # ---------------------------------------------------------------- start
    def start(
        self,
        orm_user: hub_orm.User,
        server_name: str,
        resource: str,
        launch: WorkspaceLaunch,
        listener: LifecycleListener,
        on_poll_stopped: Callable[[], None],
        *,
        then: Callable[[], None] | None = None,
    ) -> asyncio.Future:
        """Start the named server for ``launch``; returns the spawn's future.

        The future resolves once the server answers and its proxy route is in,
        and raises if the start fails (the server is then stopped).
        ``on_poll_stopped`` is called when JupyterHub's own polling finds the
        server gone. ``then`` (synchronous) is called once the start has worked,
        before the future resolves: what it changes in the session goes into the
        commit that puts the user's activity back (see :meth:`_restore_activity`).
        """
        user = self.user(orm_user)
        spawner = self.spawner(orm_user, server_name, resource)
        spawner.next_launch = launch
        spawner.lifecycle_listener = listener
        add_client_scopes(spawner, self.client_scopes(orm_user.name, server_name), self.refused_client_scopes)
        set_server_token_scopes(
            spawner, own=launch.launcher in (None, orm_user.name), server_role_scopes=self.server_role_scopes()
        )
        started = time.perf_counter()
        #: the proxy route adds of this start (the early one, the one after the spawn),
        #: each resolving to the target it added (None: none). A cancel of the start
        #: does not cut them short (an add cut short may still reach the proxy, and its
        #: route would stay with nothing to take it out): the start awaits them shielded,
        #: and takes out again what they added if it fails
        adds: list[asyncio.Task[str | None]] = []
        ended = False

        def listening(start: asyncio.Task) -> None:
            # start() returned: while JupyterHub records the server and makes its own
            # HTTP check, the proxy (another process) adds its route. Only while the spawn
            # is pending: a start() that returns after the spawn ended (JupyterHub's
            # start_timeout, a cancel start() let pass) would leave a route that nothing
            # takes out, to a server JupyterHub never recorded (finish() below takes out
            # only a route added while it runs)
            if ended or self.pool.closed or start.cancelled() or start.exception() is not None:
                return
            if getattr(spawner, "listening", False):
                adds.append(self.pool.spawn(self._add_route_early(user, server_name, spawner, start.result())))

        if isinstance(spawner, WorkspaceSpawnerMixin):
            spawner.start_listener = listening
        self._unrouted.discard(spawner)
        spawn = user.spawn(server_name)
        spawner._spawn_pending = True

        async def finish() -> None:
            nonlocal ended
            # (see _restore_activity: one commit for the activity put back and what
            # ``then`` records, once the route is in)
            before = orm_user.last_activity
            try:
                await spawn
                SERVER_SPAWN_DURATION_SECONDS.labels(status=ServerSpawnStatus.success, reason="none").observe(
                    time.perf_counter() - started
                )
                spawner._proxy_pending = True
                try:
                    # the route added early is the one JupyterHub's own would add (its target
                    # is the address the spawn recorded), or it is added now
                    early = await asyncio.shield(adds[0]) if adds else None
                    if early is None or spawner.server is None or early != spawner.server.host:
                        adds.append(self.pool.spawn(self._add_route(user, server_name, spawner)))
                        await asyncio.shield(adds[-1])
                except Exception as e:
                    self.log.exception("Failed to add %s to the proxy; stopping it", spawner._log_name)
                    await user.stop(server_name)
                    raise RuntimeError(f"The server started but could not be added to the proxy: {e}") from e
                finally:
                    spawner._proxy_pending = False
                spawner.add_poll_callback(on_poll_stopped)
                if self._restore_activity(orm_user, spawner, before) | self._then(then):
                    self._commit()
            except BaseException:
                self._unrouted.add(spawner)
                SERVER_SPAWN_DURATION_SECONDS.labels(status=ServerSpawnStatus.failure, reason="error").observe(
                    time.perf_counter() - started
                )
                if self._restore_activity(orm_user, spawner, before):
                    self._commit()
                if adds and not self.pool.closed:
                    # the start failed or was cancelled after a route went in: take it out
                    # again (the stop that follows leaves the route alone: see _unrouted)
                    await asyncio.shield(self.pool.spawn(self._remove_added_route(user, server_name, adds)))
                raise
            finally:
                # cleared here, not in a done callback: whoever sees the future
                # done must also see the spawn no longer pending (callbacks run
                # later, after other ready tasks)
                spawner._spawn_pending = False
                ended = True
                if isinstance(spawner, WorkspaceSpawnerMixin):
                    spawner.start_listener = None

        future = spawner._spawn_future = self.pool.spawn(finish())

        def done(f: asyncio.Future) -> None:
            # as JupyterHub: keep a failed future, so the failure can be reported
            if f.cancelled() or f.exception() is None:
                spawner._spawn_future = None

        future.add_done_callback(done)
        return future

    async def _add_route_early(self, user: User, server_name: str, spawner: Spawner, url: Any) -> str | None:
        """Add the route of a server whose start() returned once it listened, to the
        address start() returned, as JupyterHub's ``User.spawn`` is about to record
        it (two commits, then its own HTTP check). Returns the target added (None:
        none; the route is then added after the spawn, as before)."""
        if not isinstance(url, tuple) or user.settings.get("internal_ssl") or url[0] in ("", "0.0.0.0", "::"):
            return None  # (JupyterHub connects to a wildcard address by the host's name)
        ip, port = url
        target = f"http://{f'[{ip}]' if ':' in ip else ip}:{int(port)}"  # as User.spawn makes it
        self.log.info("Adding user %s to proxy %s => %s (it listens)", user.name, spawner.proxy_spec, target)
        try:
            await self.proxy.add_route(spawner.proxy_spec, target, {"user": user.name, "server_name": server_name})
        except Exception:
            self.log.warning("Adding %s to the proxy early failed; adding it after its start", spawner._log_name)
            return None
        return target

    async def _add_route(self, user: User, server_name: str, spawner: Spawner) -> str | None:
        """JupyterHub's add of the route of a server its spawn recorded; returns its target."""
        target = spawner.server.host if spawner.server is not None else None
        await self.proxy.add_user(user, server_name)
        return target

    async def _remove_added_route(self, user: User, server_name: str, adds: list[asyncio.Task[str | None]]) -> None:
        """Take out the route of a failed start, once its adds are through, if one went in."""
        added = False
        for add in adds:
            try:
                added |= (await add) is not None
            except BaseException:
                pass
        if added:
            try:
                await self.proxy.delete_user(user, server_name)
            except Exception:
                self.log.exception("Removing the route of %s/%s after its failed start failed", user.name, server_name)

    async def progress(self, spawner: Spawner, future: asyncio.Future) -> AsyncIterator[dict[str, Any]]:
        """JupyterHub's spawn-progress messages for a start, until it resolves."""
        async for event in iterate_until(future, spawner._generate_progress()):
            yield event

    # ---------------------------------------------------------------- stop
    async def stop(self, orm_user: hub_orm.User, server_name: str, *, then: Callable[[], None] | None = None) -> bool:
        """Stop a named server: drop its proxy route, stop it, clean up; waits until done.

        A start in progress is cancelled first, as JupyterHub's server API
        does. Safe to call for a server that is not running.

        ``then`` (synchronous) is called once this call's stop has worked, inside it,
        and committed with no other task run in between: as soon as the spawner's
        ``stop()`` knows the server ended (its ``stopped_listener``), before JupyterHub's
        cleanup of it (its server's API token and OAuth client deleted, commits: ~10 ms
        a stop), else (the server had ended already, the stop could not tell) after the
        stop, in the commit that puts the user's activity back (see
        :meth:`_restore_activity`). Returns whether it was called: not when the server
        was not running, or when a stop already under way (someone else's) was waited for.

        A job reported ended before that cleanup holds no token that still works:
        ``then`` ends the job, and every end of a job deletes its server's tokens in
        its own commit (``JobService.transition``); JupyterHub's cleanup then finds
        them gone. If the hub dies in between, the server's row is left running and
        JupyterHub's startup finds its process gone; the hub then revokes the tokens
        of servers not running (:meth:`revoke_stale_tokens`). And it is called only
        once nothing of the server runs: the spawner's poll says how it ended (a
        process that exited; a SLURM job that left ``COMPLETING``, which SLURM leaves
        once every step's processes are gone).
        """
        spawner = self.find(orm_user, server_name)
        if spawner is None:
            return False
        user = self.user(orm_user)
        if spawner.pending == "stop" and spawner._stop_future is not None:
            await asyncio.shield(spawner._stop_future)
            return False
        if spawner.pending == "spawn" and spawner._spawn_future is not None:
            self.log.info("Interrupting the start of %s", spawner._log_name)
            spawner._spawn_future.cancel()
            await asyncio.wait([spawner._spawn_future], timeout=10)
        start = spawner.start_task
        if start is not None and not start.done():
            # Spawner.start() runs in a task of its own, which a cancelled spawn can
            # leave running: end it, so that the stop below sees what it started
            if not start.cancelling():
                start.cancel()
            await asyncio.wait([start], timeout=10)
        if spawner.server is None and not spawner.pending:
            return False
        # a server has its route once its start is through (or JupyterHub put it back at
        # the hub's start), not while it starts nor after a start that failed (which took
        # out what it added): deleting it then would only get the proxy's 404
        routed = spawner.ready and spawner not in self._unrouted
        spawner._stop_pending = True
        called = False

        #: the failure of an early ``then`` (or its commit): the stop fails with it
        early_failure: Exception | None = None
        early = False

        def ended() -> None:
            # (see the docstring) the server is known ended, JupyterHub's cleanup follows
            nonlocal called, early, early_failure
            early = True
            try:
                self._then(then)
                self._commit()
            except Exception as e:
                early_failure = e
                return
            called = True

        listens = spawner if then is not None and isinstance(spawner, WorkspaceSpawnerMixin) else None
        if listens is not None:
            listens.stopped_listener = ended

        async def stop() -> None:
            nonlocal called
            before = orm_user.last_activity

            def cleaned() -> None:
                # JupyterHub's cleanup set the user's activity to now, after the job's end
                # was recorded (``ended``): put back before a request reads it
                if self._restore_activity(orm_user, spawner, before):
                    self._commit()

            if isinstance(spawner, WorkspaceSpawnerMixin):
                spawner.stop_cleaned_listener = cleaned
            try:
                # the route goes while the server stops, not before: a stop waits for one
                # proxy round trip less (JupyterHub's own stop does them one after the other).
                # The stop starts first (its task runs first: a SLURM job's scancel is not
                # put behind the proxy request's making, ~0.5 ms); a failure of the route's
                # removal still comes first in what is raised, as before
                unroute = [self.proxy.delete_user(user, server_name)] if routed else []
                try:
                    stopped, *unrouted = await asyncio.gather(user.stop(server_name), *unroute, return_exceptions=True)
                except asyncio.CancelledError:
                    if self._restore_activity(orm_user, spawner, before):
                        self._commit()
                    raise
                outcomes = [*unrouted, stopped]
                failure = next((o for o in outcomes if isinstance(o, BaseException)), early_failure)
                # one commit for the user's activity put back and what ``then`` records
                # (the job's end), not one each in two steps of the reconciler
                changed = self._restore_activity(orm_user, spawner, before)
                if failure is None and not early and self._then(then):
                    called = changed = True
                if changed:
                    self._commit()
                if failure is not None:
                    raise failure
            finally:
                spawner._stop_future = None
                spawner._stop_pending = False
                if listens is not None:
                    listens.stopped_listener = None
                if isinstance(spawner, WorkspaceSpawnerMixin):
                    spawner.stop_cleaned_listener = None

        spawner._stop_future = self.pool.spawn(stop())
        await asyncio.shield(spawner._stop_future)
        return called

    def _then(self, then: Callable[[], None] | None) -> bool:
        """Call a start's or stop's ``then``; returns whether there was one. If it fails,
        nothing of it stays in the session (as a reconciler step that fails)."""
        if then is None:
            return False
        try:
            then()
        except Exception:
            self.users.db.rollback()
            raise
        return True

    def _commit(self) -> None:
        """Commit what ends a start or stop (with what its ``then`` recorded); if that
        fails, nothing of it stays in the session either, as when ``then`` fails."""
        try:
            self.users.db.commit()
        except Exception:
            self.users.db.rollback()
            raise

    @staticmethod
    def _restore_activity(orm_user: hub_orm.User, spawner: Spawner, before: Any) -> bool:
        """After JupyterHub's start or stop of a server: put the user's ``last_activity``
        back to ``before`` (its value before them); returns whether it did (the caller
        commits, with whatever else ends the start or stop: one commit).

        JupyterHub's ``User.spawn`` and ``User.stop`` set the user's
        ``last_activity`` (and the server's) to now. Here a job starts and stops
        also when someone else asks (an editor, an admin, the admin panel) or
        the hub does (a time limit, a quota, a restart): the user's last
        activity (what an idle culler goes by) stays what their own requests
        made it. The server's own activity is JupyterHub's, as before. It is
        put back only if nothing else changed it meanwhile: the user's value is
        then still the one JupyterHub gave both at once.
        """
        orm_spawner = spawner.orm_spawner
        if (
            orm_user.last_activity != before
            and orm_spawner is not None
            and orm_user.last_activity in (orm_spawner.last_activity, orm_spawner.started)
        ):
            orm_user.last_activity = before
            return True
        return False

    async def delete(self, orm_user: hub_orm.User, server_name: str) -> None:
        """Forget a stopped named server (its row and persistent resources)."""
        spawner = self.find(orm_user, server_name)
        if spawner is not None and spawner.pending == "stop" and spawner._stop_future is not None:
            # its job's end is recorded before JupyterHub's cleanup of the server (see
            # stop()): a workspace deleted right after is deleted once that is through
            await asyncio.wait([spawner._stop_future])
            spawner = self.find(orm_user, server_name)
        if spawner is None:
            return
        if spawner.active:
            raise RuntimeError(f"{spawner._log_name} is still active")
        user = self.user(orm_user)
        await user._delete_spawner(spawner)
        user.db.delete(spawner.orm_spawner)
        user.spawners.pop(server_name, None)
        user.db.commit()

    # ---------------------------------------------------------------- tokens
    def revoke_tokens(self, orm_user: hub_orm.User, server_name: str) -> None:
        """Delete every token issued for the named server (in the session; the caller commits).

        That is the server's own API token (``JUPYTERHUB_API_TOKEN`` in its
        environment, which anything running in the server can print) and its
        OAuth client, with the OAuth tokens and codes issued to it (everyone's
        logins into the server). JupyterHub's ``User.stop`` means to do this but
        misses the API token whenever ``Spawner.poll`` found the server gone
        first (poll clears the spawner's state, token included), and a server
        that never stopped cleanly is not stopped by it at all.

        One statement each for the tokens, the codes, the server's link to its
        client and the client, on every job's end before its event: deleting the
        client through the ORM first loaded its lists of tokens and codes to delete
        them one by one (3 ms of a stop). The session follows all the same: what the
        statements delete that it holds is deleted in it too, and JupyterHub's
        listener of that expires the lists that held it (their users' tokens and
        codes, the server's client); the server's link is set in it too. The
        client's own lists that the session has not loaded are known empty
        (:func:`_refers_to_nothing`), not read back after its delete.
        """
        db = self.users.db
        notes = server_token_notes(self.user(orm_user).base_url, server_name)
        orm_spawner = self._orm_spawner(orm_user, server_name)
        client_id = orm_spawner.oauth_client_id if orm_spawner is not None else None
        tokens = and_(hub_orm.APIToken.user_id == orm_user.id, hub_orm.APIToken.note.in_(notes))
        if client_id is not None:
            tokens = or_(tokens, hub_orm.APIToken.client_id == client_id)
        db.execute(delete(hub_orm.APIToken).where(tokens))
        if client_id is not None:
            db.execute(delete(hub_orm.OAuthCode).where(hub_orm.OAuthCode.client_id == client_id))
            # (the client as JupyterHub's spawn left it, loaded with the server's row)
            client = None
            if orm_spawner is not None and "oauth_client" not in sa_inspect(orm_spawner).unloaded:
                client = orm_spawner.oauth_client
            db.execute(
                update(hub_orm.Spawner).where(hub_orm.Spawner.oauth_client_id == client_id).values(oauth_client_id=None)
            )
            if client is not None and client.identifier == client_id:
                _refers_to_nothing(client)
            db.execute(delete(hub_orm.OAuthClient).where(hub_orm.OAuthClient.identifier == client_id))

    def revoke_stale_tokens(self) -> int:
        """Delete the API tokens of servers that are not running; returns how many.

        For tokens left behind before every end of a job revoked them (see
        :meth:`revoke_tokens`): the hub calls it once at startup, after
        JupyterHub has re-adopted the servers that still run.
        """
        db = self.users.db
        any_server = [n.format(base_url="%", server_name="%") for n in _SERVER_TOKEN_NOTES]
        running = {
            (user_id, note)
            for user_id, server_name in db.execute(
                select(hub_orm.Spawner.user_id, hub_orm.Spawner.name).where(hub_orm.Spawner.server_id.is_not(None))
            )
            for note in server_token_notes(self.users[user_id].base_url, server_name)
        }
        stale = [
            token
            for token in db.scalars(
                select(hub_orm.APIToken).where(
                    hub_orm.APIToken.user_id.is_not(None),
                    or_(*(hub_orm.APIToken.note.like(pattern) for pattern in any_server)),
                )
            )
            if (token.user_id, token.note) not in running
        ]
        for token in stale:
            db.delete(token)
        db.commit()
        return len(stale)

    # ---------------------------------------------------------------- routes
    async def restore_routes(self, servers: list[tuple[hub_orm.User, str]]) -> int:
        """Add the proxy routes missing for these running servers (one GET of the routes)."""
        routes = await self.proxy.get_all_routes()
        restored = 0
        for orm_user, server_name in servers:
            spawner = self.find(orm_user, server_name)
            if spawner is None or not spawner.ready or spawner.proxy_spec in routes:
                continue
            self.log.warning("Route for %s is missing from the proxy; adding it back", spawner._log_name)
            await self.proxy.add_user(self.user(orm_user), server_name)
            restored += 1
        return restored


def _refers_to_nothing(client: hub_orm.OAuthClient) -> None:
    """Set the relationships of an OAuth client about to be deleted that the session has
    not loaded to what the database holds once it is: nothing (its tokens and codes are
    deleted with it, ``ON DELETE CASCADE``; a server's or service's link to it is set to
    NULL, ``ON DELETE SET NULL``; :meth:`ServerControl.revoke_tokens` deletes and unlinks
    them itself before). JupyterHub's listener of a deleted row (``orm.
    _notify_deleted_relationships``) reads each relationship of the client to expire the
    other side: one it has not loaded was a SELECT each (its service, tokens and codes:
    ~1 ms of every server's end) that found nothing to expire. Loaded ones it still
    expires on the other side, as before."""
    state = sa_inspect(client)
    for prop in state.mapper.relationships:
        if prop.key in state.unloaded:
            set_committed_value(client, prop.key, [] if prop.uselist else None)


class ServerRows(Mapping[str, hub_orm.Spawner]):
    """A user's server rows by name, as ``User.orm_spawners`` of a JupyterHub user wrapper.

    JupyterHub's ``orm.User.orm_spawners`` builds a dict of all the user's
    servers on each use, and JupyterHub looks a server up through it in every
    spawn (``User.spawn`` calls ``get_or_create_spawner``) and in ``_new_spawner``:
    one user owning thousands of workspaces (a server each) made each start
    walk thousands (1 to 2 ms a time at 5,000). This mapping finds one server
    through its loaded spawner, else by one query; whole-mapping uses (iterating,
    counting) are JupyterHub's own.
    """

    def __init__(self, user: User):
        self._user = user
        #: a row the caller holds already (see :meth:`given`)
        self._given: hub_orm.Spawner | None = None

    @contextmanager
    def given(self, row: hub_orm.Spawner) -> Iterator[None]:
        """Within this, ``row`` is the server of its name, without a query: JupyterHub's
        ``_new_spawner`` looks up by name the row its caller just found or made."""
        self._given = row
        try:
            yield
        finally:
            self._given = None

    def __getitem__(self, name: str) -> hub_orm.Spawner:
        if self._given is not None and self._given.name == name:
            return self._given
        spawner = dict.get(self._user.spawners, name)
        if spawner is not None and spawner.orm_spawner is not None:
            return spawner.orm_spawner
        orm_user = self._user.orm_user
        row = self._user.db.scalar(
            select(hub_orm.Spawner).where(hub_orm.Spawner.user_id == orm_user.id, hub_orm.Spawner.name == name).limit(1)
        )
        if row is None:
            raise KeyError(name)
        return row

    def __iter__(self) -> Iterator[str]:
        return iter(self._user.orm_user.orm_spawners)

    def __len__(self) -> int:
        return len(self._user.orm_user._orm_spawners)


#: the notes of the API tokens JupyterHub makes for a server: one for each start
#: (``User.spawn``), one when a spawner brings back a token of its own (a SLURM
#: job adopted after a hub restart). The note is how a server's token is told
#: from its user's others.
_SERVER_TOKEN_NOTES = ("Server at {base_url}", "retrieved from spawner {server_name}")


def server_token_notes(user_base_url: str, server_name: str) -> tuple[str, ...]:
    base_url = url_path_join(user_base_url, url_escape_path(server_name), "/")
    return tuple(n.format(base_url=base_url, server_name=server_name) for n in _SERVER_TOKEN_NOTES)


def server_of_token_note(note: str) -> str | None:
    """The name of the server (not the default one) whose API token has the note ``note``
    (one of :func:`server_token_notes`), else None: read from the note, whatever number of
    servers its user has. Any ``Server at <url>/<name>/`` is a server's (JupyterHub tells
    a server's token by that start), whatever the user's URL says now (an admin may have
    renamed the user since)."""
    for template in _SERVER_TOKEN_NOTES:
        head, _, field = template.partition("{")
        if not note.startswith(head):
            continue
        name = note[len(head) :]
        if field.startswith("base_url}"):
            # <JupyterHub's base URL>user/<user>/<server>/
            path, slash, segment = name[:-1].rpartition("/")
            if not (name.endswith("/") and slash and path.rpartition("/")[0].endswith("/user")):
                continue
            name = unquote(segment)
        return name or None
    return None


def add_client_scopes(spawner: Spawner, scopes: list[str], refused: Callable[[str], bool] = taken_by_hub) -> None:
    """Add ``scopes`` to ``Spawner.oauth_client_allowed_scopes`` (a list or a callable), once,
    leaving out (with a warning) what the config allows that ``refused`` says: the tokens
    of the server's visitors carry what its client allows, and its process holds them."""
    if not scopes:
        return
    current = spawner.oauth_client_allowed_scopes
    if not callable(current):
        spawner.oauth_client_allowed_scopes = sorted(set(_allowed(spawner, current, refused)) | set(scopes))
        return
    if getattr(current, "uws_scopes", None) == scopes:
        return
    configured = getattr(current, "uws_configured", current)

    async def allowed(spawner: Spawner) -> list[str]:
        base = configured(spawner)
        if inspect.isawaitable(base):
            base = await base
        return sorted(set(_allowed(spawner, base, refused)) | set(scopes))

    allowed.uws_scopes = scopes  # type: ignore[attr-defined]
    allowed.uws_configured = configured  # type: ignore[attr-defined]
    spawner.oauth_client_allowed_scopes = allowed


def _allowed(spawner: Spawner, configured: list[str], refused: Callable[[str], bool]) -> list[str]:
    """``configured`` (what the config allows a server's OAuth client) without what ``refused`` says."""
    kept: list[str] = []
    left_out: list[str] = []
    for scope in configured:
        (left_out if refused(scope) else kept).append(scope)
    if left_out:
        spawner.log.warning(
            "Spawner.oauth_client_allowed_scopes: leaving out %s for %s: every visitor's login would give"
            " them to the server's process, which could act on the hub as its visitors",
            ", ".join(left_out),
            spawner._log_name,
        )
    return kept


#: the scopes of the API token of a server its owner did not launch: JupyterHub's ``server``
#: role (its activity, its own server), whatever ``Spawner.server_token_scopes`` says
FOREIGN_SERVER_TOKEN_SCOPES = ["users:activity!user", "access:servers!server"]


def set_server_token_scopes(spawner: Spawner, own: bool, server_role_scopes: list[str] | None = None) -> None:
    """The scopes of the server's own API token for this start. The token is the server
    owner's, and the server's process, which reads it, is its launcher's code: the config's
    ``Spawner.server_token_scopes`` for the owner's own start (``own``), else
    :data:`FOREIGN_SERVER_TOKEN_SCOPES` (an editor's code acts as the owner nowhere).
    ``server_role_scopes``: the ``server`` role's scopes, what JupyterHub gives the token
    when the config asks for none (:meth:`ServerControl.server_role_scopes`)."""
    if not hasattr(spawner, "uws_configured_token_scopes"):
        spawner.uws_configured_token_scopes = spawner.server_token_scopes
    configured = spawner.uws_configured_token_scopes
    if own:
        spawner.server_token_scopes = configured or list(server_role_scopes or [])
        return
    if callable(configured) or set(configured or FOREIGN_SERVER_TOKEN_SCOPES) - set(FOREIGN_SERVER_TOKEN_SCOPES):
        spawner.log.warning(
            "Spawner.server_token_scopes: %s was not launched by its owner, its token gets %s only",
            spawner._log_name,
            ", ".join(FOREIGN_SERVER_TOKEN_SCOPES),
        )
    spawner.server_token_scopes = list(FOREIGN_SERVER_TOKEN_SCOPES)


def load_spawner_class(value) -> type[Spawner]:
    """A spawner class from an entry point name (``uws-local``), an import string or a class."""
    if isinstance(value, str):
        found = {ep.name.lower(): ep for ep in entry_points(group="jupyterhub.spawners")}
        value = found[value.lower()].load() if value.lower() in found else import_item(value)
    if not (isinstance(value, type) and issubclass(value, Spawner) and issubclass(value, WorkspaceSpawnerMixin)):
        raise ValueError(f"{value!r} is not a uws-hub workspace spawner (a Spawner with WorkspaceSpawnerMixin)")
    return value
