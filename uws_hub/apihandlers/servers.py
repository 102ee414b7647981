"""JupyterHub's server API, for starts: a workspace's server starts as the workspace's job.

``POST /hub/api/users/{name}/servers/{server}`` (what the admin panel's Start
button sends, and clients of JupyterHub's REST API) launches a job in the
workspace that is that server, through the job service (quotas, limits and
events as every launch), instead of JupyterHub's spawn, which the spawner
refuses without a job. ``POST /hub/api/users/{name}/server`` (the default
server: the admin panel's Start All) is refused at once with what to do
instead: there is no default server, and refusing it before JupyterHub's
spawn leaves the user's last activity alone (a spawn, even one that fails,
counts as activity). Stopping and the rest of the server API stay JupyterHub's.
"""

from __future__ import annotations

from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope

from .. import access
from ..errors import BadRequest, Forbidden, NotFound
from ..models import job_model
from ..orm import Job, Workspace
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


default_handlers = [
    (r"/api/users/([^/]+)/server", WorkspaceServerAPIHandler),
    (r"/api/users/([^/]+)/servers/([^/]*)", WorkspaceServerAPIHandler),
]
