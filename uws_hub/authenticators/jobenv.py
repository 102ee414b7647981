"""Handing what an authenticator knows (tokens, directory attributes) to jobs,
as environment variables, only when the admin says so.

The secrets live in JupyterHub's encrypted ``auth_state`` (needs
``c.Authenticator.enable_auth_state = True`` and ``$JUPYTERHUB_CRYPT_KEY``).
Right before a job's server starts, JupyterHub calls the authenticator's
``pre_spawn_start(user, spawner)``; this mixin then reads the ``auth_state``
of the job's launcher (the owner, or the editor who launched it: never the
owner's for an editor's job) and puts the authenticator's :meth:`job_environment` into
``spawner.environment``. Values are strings (JSON for structures), never
pickles. Keys set at an earlier start and absent now are removed, so a
revoked token does not linger in a reused spawner.
"""

from __future__ import annotations

from typing import Any

from jupyterhub import orm

from .names import PrintableNamesMixin

_SET_KEYS_ATTR = "_uws_auth_env_keys"


class JobEnvironmentMixin(PrintableNamesMixin):
    """Mix in before a JupyterHub Authenticator; subclasses implement
    :meth:`job_environment` and :meth:`passes_to_jobs`."""

    def passes_to_jobs(self) -> bool:
        """Whether the admin turned on handing things to jobs (a trait of the subclass)."""
        return False

    def job_environment(self, auth_state: dict[str, Any]) -> dict[str, str]:
        """The environment variables for a job of a user with this ``auth_state`` (pure)."""
        return {}

    async def pre_spawn_start(self, user, spawner):
        previous = getattr(spawner, _SET_KEYS_ATTR, ())
        for key in previous:
            spawner.environment.pop(key, None)
        env: dict[str, str] = {}
        if self.passes_to_jobs():
            user = self.launcher(user, spawner)
            auth_state = await user.get_auth_state()
            if auth_state:
                env = {k: v for k, v in self.job_environment(auth_state).items() if v is not None}
            else:
                self.log.warning(
                    "%s: nothing to hand to %s's job: no auth_state (set c.Authenticator.enable_auth_state"
                    " = True and $JUPYTERHUB_CRYPT_KEY, and log in again)",
                    type(self).__name__,
                    user.name,
                )
        spawner.environment.update(env)
        setattr(spawner, _SET_KEYS_ATTR, tuple(env))

    def launcher(self, user, spawner):
        """Whose auth state the job of ``spawner`` (a server of ``user``, the workspace's
        owner) gets: its launcher's (``WorkspaceLaunch.launcher``). An editor's job runs as
        the editor and gets the editor's tokens, never the owner's."""
        name = getattr(getattr(spawner, "next_launch", None), "launcher", None)
        if not name or name == user.name:
            return user
        orm_user = orm.User.find(user.db, name)
        if orm_user is None:
            raise ValueError(f"the launcher {name!r} of {user.name}'s job no longer exists")
        return self.parent.users[orm_user]
