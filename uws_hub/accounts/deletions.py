"""Users being deleted: nothing new is made for them until their deletion has finished.

A user's delete (``DELETE /hub/api/users/{name}``) is refused while they have an
unfinished job (:meth:`uws_hub.jobs.service.JobService.check_user_deletable`),
then awaits JupyterHub's delete (server stops, the authenticator) before its
commit, after which what they left on disk is set aside
(:mod:`uws_hub.workspaces.former`). A job launched in that time (by the user, by
an editor in their workspace, or by the user as an editor elsewhere) ran
untracked once its row went with the user; a workspace made then, or a file
uploaded into one of theirs, was written into a folder being set aside, or
after it had gone. So from the check until the delete has finished (it
succeeded or failed) the user is *being deleted* (:meth:`UserDeletions.deleting`):
every launch and every workspace or file made for them as owner or launcher
is a 409 (:meth:`UserDeletions.check`). A workspace's creation under way (it
awaits its folder's making between its row and its status), and a copy under way into a
user's folder or out of one of their workspaces (it reads that folder while it runs), is
counted (:meth:`UserDeletions.making`): the delete is a 409 until it has finished.

A user is held by name: their name cannot change meanwhile (a rename by ``PATCH`` is a
409), and what the deletion lists under it (``<workspaces root>/<name>/.home``) is set
aside after the commit: a new user given the name then (made, another renamed to it, or
made by a login, :func:`uws_hub.app._auth_to_user`) would have had that HOME, the former
user's. The id of a user deleted on SQLite
is the next new user's, whatever their name.

One hub process serves every request, so this is the process's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jupyterhub import orm as hub_orm

from ..errors import Conflict


class UserDeletions:
    """The names of the users being deleted, and what is being made of theirs, by user id."""

    def __init__(self) -> None:
        self._deleting: set[str] = set()
        #: user id -> what is being made of theirs (a 409's words, one for each)
        self._making: dict[int, list[str]] = {}

    def check(self, *users: hub_orm.User | None) -> None:
        """A 409 if one of ``users`` (an owner, a launcher) is being deleted."""
        for user in users:
            if user is not None:
                self.check_name(user.name)

    def check_name(self, name: str) -> None:
        """A 409 if a user of ``name`` is being deleted (a new name for another: ``PATCH``)."""
        if name in self._deleting:
            raise Conflict(f"{name} is being deleted")

    @contextmanager
    def deleting(self, user: hub_orm.User) -> Iterator[None]:
        """``user`` is being deleted while in this (a 409 if they are already, or while
        something of theirs is being made)."""
        self.check(user)
        if self._making.get(user.id):
            raise Conflict(f"{self._making[user.id][0]}: delete the user once it is done")
        name = user.name
        self._deleting.add(name)
        try:
            yield
        finally:
            self._deleting.discard(name)

    @contextmanager
    def making(self, user: hub_orm.User, what: str | None = None) -> Iterator[None]:
        """Something of ``user``'s is being made while in this (a 409 if they are being
        deleted); ``what`` says what, to whoever deletes them meanwhile (a workspace of theirs)."""
        self.check(user)
        what = what or f"A workspace of {user.name}'s is being made"
        self._making.setdefault(user.id, []).append(what)
        try:
            yield
        finally:
            under_way = self._making[user.id]
            under_way.remove(what)
            if not under_way:
                del self._making[user.id]
