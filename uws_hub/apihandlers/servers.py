"""JupyterHub's server API, for starts: a workspace's server starts as the workspace's job.

``POST /hub/api/users/{name}/servers/{server}`` (what the admin panel's Start
button sends, and clients of JupyterHub's REST API) launches a job in the
workspace that is that server, through the job service (quotas, limits and
events as every launch), instead of JupyterHub's spawn, which the spawner
refuses without a job. ``POST /hub/api/users/{name}/server`` (the default
server: the admin panel's Start All) is refused at once with what to do
instead: there is no default server, and refusing it before JupyterHub's
spawn leaves the user's last activity alone (a spawn, even one that fails,
counts as activity). ``DELETE`` of a server whose start is under way stops its
job (``202``), as ``POST /hub/api/jobs/{id}/stop`` does; stopping a running
server and the rest of the server API stay JupyterHub's.

``POST /hub/api/users/{name}/activity`` (what a server posts its activity to),
``GET /hub/api/user`` and ``GET /hub/api/users/{name}`` are JupyterHub's,
narrowed for the API token of a server its owner did not launch, which an
editor's code reads (:class:`ServerTokenMixin`, :class:`ActivityAPIHandler`).
``DELETE /hub/api/users/{name}`` (the admin panel's Delete User) is refused
(``409``) while a job the user owns or launched has not ended
(:meth:`~uws_hub.jobs.service.JobService.check_user_deletable`), and answers once
what the user left on disk is set aside (:mod:`uws_hub.workspaces.former`); till
then nothing is made for the user (a launch, a workspace, a file: a ``409``,
:mod:`uws_hub.accounts.deletions`).
``POST /hub/api/users``, ``POST /hub/api/users/{name}`` and a rename by ``PATCH``
refuse a new name that could pass for another's (:func:`refuse_look_alike`), and
one whose former user's delete has not answered (:func:`refuse_name_being_deleted`).
"""

from __future__ import annotations

from typing import Any

from jupyterhub import orm as hub_orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import ActivityAPIHandler as HubActivityAPIHandler
from jupyterhub.apihandlers.users import SelfAPIHandler as HubSelfAPIHandler
from jupyterhub.apihandlers.users import UserAPIHandler as HubUserAPIHandler
from jupyterhub.apihandlers.users import UserListAPIHandler as HubUserListAPIHandler
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.user import User

from .. import access
from ..authenticators.names import LookAlikeName, look_alike
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..jobs.servers import server_of_token_note
from ..models import job_model
from ..orm import Job, Workspace
from ..reasons import STOPPED_OUTSIDE
from ..scopes import LAUNCH_JOBS
from .base import UWSAPIHandler


class WorkspaceServerAPIHandler(UWSAPIHandler, UserServerAPIHandler):
    @needs_scope("start:servers")
    async def post(self, user_name, server_name=""):
        user = self.find_user(user_name)
        if user is None:
            raise NotFound(f"No such user: {user_name}")
        ws = Workspace.find_by_slug(self.db, user.id, server_name) if server_name else None
        if ws is None:
            raise BadRequest(
                f"{user.name} has no {'server ' + repr(server_name) if server_name else 'default server'} to start:"
                " every server here is a workspace's job. Launch one in a workspace"
                " (its page, or POST /hub/api/workspaces/{id}/jobs)."
            )
        if not access.may_workspace(self, LAUNCH_JOBS, ws):
            raise Forbidden(f"Starting this server launches a job in workspace {ws.slug!r}: that needs {LAUNCH_JOBS}")
        self.authorize_launch(ws)
        active = Job.active_in(self.db, ws.id)
        if active is not None:
            # JupyterHub's answers: a start under way is 202, a running server is a 400
            if active.status == "running":
                raise BadRequest(f"{user.name}'s server {ws.slug!r} is already running")
            self.write_json(job_model(active), status=202)
            return
        # the job type of its last job if there was one (and it is still offered), else the first one
        last = self.uws.jobs.latest_jobs([ws.id]).get(ws.id)
        types = self.uws.job_types
        job_type = last.job_type if last is not None and last.job_type in types else next(iter(types))
        launcher = await self.fresh_launcher(ws)
        job = self.uws.jobs.launch(ws, job_type, None, {}, self.actor, launcher=launcher)
        self.write_json(job_model(job), status=202)

    @needs_scope("delete:servers")
    async def delete(self, user_name, server_name=""):
        # a server whose start is under way stops as its job: JupyterHub's own stop of it
        # cancels the start, waits a second, and then stops a server the job's end has
        # already taken away (a 500) or deletes a route that never went in (the proxy's
        # 404, logged as an ERROR)
        user = self.find_user(user_name)
        spawner = user.spawners.get(server_name) if user is not None and server_name else None
        remove = (self.get_json_body() or {}).get("remove", False)
        ws = None
        if spawner is not None and spawner.pending == "spawn":
            ws = Workspace.find_by_slug(self.db, user.id, server_name)
        job = None if ws is None else Job.active_in(self.db, ws.id)
        if job is None:
            return await super().delete(user_name, server_name)
        if remove:
            raise Conflict(
                f"The server {server_name!r} is starting (job {job.id}): stop it first"
                f' (POST /hub/api/jobs/{job.id}/stop, or DELETE without "remove"), then remove it'
            )
        self.uws.jobs.stop(job, self.actor, STOPPED_OUTSIDE)
        self.set_header("Content-Type", "text/plain")
        self.set_status(202)


class ServerTokenMixin(UWSAPIHandler):
    """Tells the API token of a server its owner did not launch (an editor's), and tells it
    only who the owner is.

    JupyterHub's model of a user (``GET /hub/api/user``, ``GET
    /hub/api/users/{name}``) to any token of theirs holds their groups, admin
    flag and ``user_info`` (an e-mail address: the hub shows it to nobody else
    unless ``share_search_show_email``), and with ``users:activity``, which every
    server's token has, their ``last_activity``. The token of a server an editor
    launched is the editor's to read, so to it the model is the owner's kind
    and name only (with ``/hub/api/user``'s scopes and token id); the server
    itself needs no more (JupyterHub's server code reads its visitors' models,
    never its own).
    """

    def get_auth_token(self):
        # JupyterHub's own API keeps JupyterHub's header only (UWS-Authorization is uws-hub's API's)
        return APIHandler.get_auth_token(self)

    def user_model(self, user):
        model = super().user_model(user)
        if model and self.foreign_server(self.users[user.id]) is not None:
            model = {key: model[key] for key in ("kind", "name") if key in model}
        return model

    def foreign_server(self, user: User) -> str | None:
        """If the request's token is the API token of one of ``user``'s servers that ``user``
        did not launch, that server's name."""
        token = self.get_token()
        if token is None or token.user_id != user.id or not token.note:
            return None
        # the name from the note (every token has one: walking the user's servers to
        # match it cost each request of theirs 15 ms at 5,000 workspaces)
        name = server_of_token_note(token.note)
        if name is None:
            return None
        # a token of a server the owner has no unfinished job of their own in (an
        # editor's; one that ended, or whose workspace is gone) is narrowed
        ws = Workspace.find_by_slug(self.db, user.id, name)
        job = None if ws is None else Job.active_in(self.db, ws.id)
        launcher: hub_orm.User | None = None if job is None else job.launcher
        return None if launcher is not None and launcher.id == user.id else name


class ActivityAPIHandler(ServerTokenMixin, HubActivityAPIHandler):
    """JupyterHub's activity reports; a server an editor launched reports its own activity only.

    JupyterHub gives each server an API token of the server's *owner*, always
    with ``users:activity!user``, for the server's activity reports
    (jupyterhub-singleuser posts ``{"last_activity": t, "servers": {"<its
    name>": {"last_activity": t}}}`` every 5 minutes). A server an editor
    launched runs as the editor's account, so the editor's code reads that
    token (``JUPYTERHUB_API_TOKEN``): with JupyterHub's handler alone it could
    set the owner's own ``last_activity`` and that of any of the owner's
    servers, keeping the owner's idle servers from being culled (running, and
    counting against the owner's quotas). A user's ``last_activity`` is what
    their own requests and their own servers' reports make it
    (docs/security.md). So the token of a server whose unfinished job its owner
    did not launch (an editor's; also one with no unfinished job or workspace, a token the
    hub has yet to revoke) reports that server's activity only: the user's
    ``last_activity`` in its body is accepted and left alone (the server sends it
    in every report: refusing it would fail them all), and a body that names any
    other server is a 403, whether or not the owner has a server of that name.
    Narrowing the token here, where it is used, leaves JupyterHub's spawn (which
    adds the scope to every server's token) as it is. The reports of the owner's
    own servers, and every other caller's, are JupyterHub's as before (a user
    admin's too: ``admin:users`` holds ``users:activity``).
    """

    #: the body :meth:`post` narrowed, for JupyterHub's handler to apply
    _narrowed: dict | None = None

    def get_json_body(self) -> Any:
        return self._narrowed if self._narrowed is not None else super().get_json_body()

    @needs_scope("users:activity")
    def post(self, user_name):
        user = self.find_user(user_name)
        server_name = None if user is None else self.foreign_server(user)
        if server_name is not None:
            body = super().get_json_body()
            if isinstance(body, dict):
                servers = body.get("servers")
                if isinstance(servers, dict) and set(servers) - {server_name}:
                    raise Forbidden(
                        f"This is the API token of {user.name}'s server {server_name!r}, which {user.name} did"
                        " not launch: it reports the activity of that server only"
                    )
                if not servers:
                    return  # the user's own last_activity only: accepted, left alone
                self._narrowed = {"servers": servers}
        super().post(user_name)


class SelfAPIHandler(ServerTokenMixin, HubSelfAPIHandler):
    pass


def refuse_name_being_deleted(handler: APIHandler, name: Any) -> None:
    """A 409 for a new user's name (made, or another's new name) whose former user's deletion
    has not finished: what it lists by the name (their jobs' HOME, ``<workspaces
    root>/<name>/.home``; their workspaces' folders) is set aside after the commit, and a
    user of the name made meanwhile (their system account with the freed uid) had it."""
    if isinstance(name, str):
        handler.settings["uws"].workspaces.deletions.check_name(handler.authenticator.normalize_username(name))


def refuse_look_alike(handler: APIHandler, name: Any) -> None:
    """A 400 that says why, for a new user's name that could pass for another's
    (:func:`look_alike`), whatever the authenticator (uws-hub's refuse it at a login too,
    :class:`~uws_hub.authenticators.names.PrintableNamesMixin`; JupyterHub asks the
    authenticator only, and about a single user's name only once it has made the user,
    with a 400 that says nothing of why). A hub user who has the name keeps it."""
    if not isinstance(name, str):
        return  # (JupyterHub refuses it)
    name = handler.authenticator.normalize_username(name)
    why = look_alike(name)
    if why is not None and handler.find_user(name) is None:
        raise LookAlikeName(name, why)


class UserListAPIHandler(HubUserListAPIHandler):
    @needs_scope("admin:users")
    async def post(self):
        data = self.get_json_body()
        if isinstance(data, dict) and isinstance(data.get("usernames"), list):
            for name in data["usernames"]:
                refuse_look_alike(self, name)
                refuse_name_being_deleted(self, name)
        await super().post()


class UserAPIHandler(ServerTokenMixin, HubUserAPIHandler):
    @needs_scope("admin:users")
    async def post(self, user_name):
        refuse_look_alike(self, user_name)
        refuse_name_being_deleted(self, user_name)
        await super().post(user_name)

    @needs_scope("admin:users")
    async def patch(self, user_name):
        user = self.find_user(user_name)
        data = self.get_json_body()
        deletions = self.uws.workspaces.deletions
        if user is not None:
            # (their deletion lists what is theirs by this name: what it leaves under the new one stayed)
            deletions.check(user.orm_user)
        if isinstance(data, dict) and data.get("name", user_name) != user_name:
            refuse_look_alike(self, data["name"])
            refuse_name_being_deleted(self, data["name"])
        await super().patch(user_name)

    @needs_scope("delete:users")
    async def delete(self, user_name):
        user = self.find_user(user_name)
        if user is None:
            return await super().delete(user_name)  # (JupyterHub's 404)
        # nothing is made for them (a job, a workspace, a file) from the check till the delete has
        # finished: JupyterHub's delete awaits their servers' stops and the authenticator
        with self.uws.workspaces.deletions.deleting(user.orm_user):
            self.uws.jobs.check_user_deletable(user.orm_user)
            await super().delete(user_name)
            # answered once what the user left on disk is set aside (UWSHub.deleted_users_data)
            await self.uws.former_users.settled()


default_handlers = [
    (r"/api/user", SelfAPIHandler),
    (r"/api/users", UserListAPIHandler),
    (r"/api/users/([^/]+)", UserAPIHandler),
    (r"/api/users/([^/]+)/activity", ActivityAPIHandler),
    (r"/api/users/([^/]+)/server", WorkspaceServerAPIHandler),
    (r"/api/users/([^/]+)/servers/([^/]*)", WorkspaceServerAPIHandler),
]
