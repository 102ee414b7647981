"""The JupyterHub side of jobs: each interactive job is a named server.

Starting goes through JupyterHub's own ``BaseHandler.spawn_single_user`` (the
jobs API handler passes it in), so spawn limits, progress events, metrics and
the proxy route are JupyterHub's. Stopping and deleting must also happen
without a request (the reconciler, workspace deletion), so they are done here
the way ``stop_single_user`` and the server API's ``DELETE ?remove`` do them.
"""

from __future__ import annotations

import asyncio
import logging

from jupyterhub import orm as hub_orm
from jupyterhub.spawner import Spawner
from jupyterhub.user import User, UserDict

from .spawners.mixins import LifecycleListener, WorkspaceLaunch


class ServerControl:
    def __init__(self, users: UserDict, proxy, log: logging.Logger):
        self.users = users
        self.proxy = proxy
        self.log = log

    def user(self, orm_user: hub_orm.User) -> User:
        return self.users[orm_user]

    def find(self, orm_user: hub_orm.User, server_name: str) -> Spawner | None:
        """The named server's spawner, or None if JupyterHub has no such server."""
        user = self.user(orm_user)
        if server_name not in user.orm_spawners:
            return None
        return user.spawners[server_name]

    def prepare(
        self,
        orm_user: hub_orm.User,
        server_name: str,
        launch: WorkspaceLaunch,
        listener: LifecycleListener,
    ) -> Spawner:
        """Create (or reuse) the named server and give it the job to run."""
        user = self.user(orm_user)
        spawner = user.get_or_create_spawner(server_name, "", replace_failed=True)
        spawner.next_launch = launch
        spawner.lifecycle_listener = listener
        return spawner

    def attach(self, spawner: Spawner, listener: LifecycleListener) -> None:
        """Re-attach the hub's listener to a spawner restored after a restart."""
        spawner.lifecycle_listener = listener

    async def stop(self, orm_user: hub_orm.User, server_name: str) -> None:
        """Stop a named server: drop its proxy route, stop it, clean up.

        Mirrors JupyterHub's ``stop_single_user``; waits until stopped. A spawn
        in progress is cancelled first, as the server API's DELETE does.
        """
        spawner = self.find(orm_user, server_name)
        if spawner is None:
            return
        user = self.user(orm_user)
        if spawner.pending == "stop" and spawner._stop_future is not None:
            await asyncio.shield(spawner._stop_future)
            return
        if spawner.pending == "spawn":
            self.log.info("Interrupting the start of %s", spawner._log_name)
            if spawner._spawn_future is not None:
                spawner._spawn_future.cancel()
            await asyncio.sleep(0)
        if not spawner.active and spawner.server is None and not spawner.pending:
            # not running; make sure no process was left behind by a cancelled start
            if await spawner.poll() is None:
                await spawner.stop()
            return
        spawner._stop_pending = True

        async def stop():
            try:
                await self.proxy.delete_user(user, server_name)
                await user.stop(server_name)
            finally:
                spawner._stop_future = None
                spawner._stop_pending = False

        spawner._stop_future = asyncio.ensure_future(stop())
        await asyncio.shield(spawner._stop_future)

    async def delete(self, orm_user: hub_orm.User, server_name: str) -> None:
        """Forget a stopped named server (its row and persistent resources)."""
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
