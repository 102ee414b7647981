"""Pages: my workspaces, one workspace, and the admin's view of all of them.

The pages render the same JSON models as the REST API and act through it
from the browser (with JupyterHub's XSRF token), so everything a page can do
a program can do too.
"""

from __future__ import annotations

import json

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from sqlalchemy import true
from tornado import web

from .. import access
from ..apihandlers.base import parse_id
from ..errors import NotFound
from ..models import job_model
from ..orm import Job, Share, Workspace
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, SHARE_WORKSPACES, WRITE_WORKSPACES, requires
from ..services import Services
from ..states import ShareLevel


class UWSPageHandler(BaseHandler):
    @property
    def uws(self) -> Services:
        return self.settings["uws"]

    async def render_page(self, template: str, **ns) -> None:
        html = await self.render_template(template, **ns)
        self.finish(html)


class WorkspacesPageHandler(UWSPageHandler):
    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self):
        user = self.current_user
        where = Workspace.owner_id == user.id
        items = self.uws.workspaces.page(where, 0, 1000)
        models = self.uws.workspace_models(items)
        usage = self.uws.quotas.usage_model(user.orm_user)
        await self.render_page(
            "workspaces.html",
            workspaces=models,
            can_write=access.may(self, WRITE_WORKSPACES, user.orm_user),
            usage=usage,
            usage_json=json.dumps(usage),
        )


class WorkspacePageHandler(UWSPageHandler):
    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self, workspace_id):
        ws = Workspace.find(self.db, parse_id(workspace_id, "workspace"))
        if ws is None or not access.may_workspace(self, READ_WORKSPACES, ws):
            raise NotFound(f"No such workspace: {workspace_id}")
        jobs = self.uws.jobs
        recent = jobs.page(Job.workspace_id == ws.id, 0, 20)
        model = self.uws.workspace_models([ws])[0]
        can_share = access.may_workspace(self, SHARE_WORKSPACES, ws, grantees=False)
        server_url = self.uws.servers.user(ws.owner).server_url(ws.slug)
        user = self.current_user
        levels = Share.levels_of(self.db, ws.id, user.id) if ws.owner_id != user.id else set()
        await self.render_page(
            "workspace.html",
            workspace=model,
            # safe inside <script>: no "</" can end the element early
            workspace_json=json.dumps(model).replace("</", "<\\/"),
            jobs=[job_model(j) for j in recent],
            job_types=[jt.public_model() for jt in self.uws.job_types.values()],
            resource_fields={
                name: list(getattr(cls, "honoured_resources", ()))
                for name, cls in self.uws.servers.spawner_classes.items()
            },
            can_write=access.may_workspace(self, WRITE_WORKSPACES, ws),
            can_launch=access.may_workspace(self, LAUNCH_JOBS, ws),
            can_manage=access.may_workspace(self, WRITE_WORKSPACES, ws, grantees=False),
            can_share=can_share,
            can_read_output=access.may_read_output(self, ws.owner),
            # where the reader wanted to go in the workspace's server, if it is not running
            # (a bookmark, JupyterLab's Restart; see uws_hub.handlers.servers): only there
            open_next=self._server_address(server_url),
            my_level=ShareLevel.editor.value
            if ShareLevel.editor.value in levels
            else (ShareLevel.viewer.value if levels else None),
        )

    def _server_address(self, server_url: str) -> str | None:
        """``?next=``, if it is an address in the workspace's server (else its root; None without one).

        Only there: the page goes to it by itself once the job runs, so it must
        not send the reader anywhere else.
        """
        wanted = self.get_argument("next", None)
        if wanted is None:
            return None
        inside = wanted == server_url.rstrip("/") or wanted.startswith(server_url)
        if not inside or "\\" in wanted or "//" in wanted or any(c.isspace() for c in wanted):
            return server_url
        return wanted


class AdminWorkspacesPageHandler(UWSPageHandler):
    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        jobs = self.uws.jobs
        offset, limit = 0, 500
        items = self.uws.workspaces.page(true(), offset, limit)
        await self.render_page(
            "admin_workspaces.html",
            workspaces=self.uws.workspace_models(items),
            workspace_total=self.uws.workspaces.count(true()),
            jobs=[job_model(j) for j in jobs.page(true(), 0, 200)],
            job_total=jobs.count(true()),
        )


default_handlers = [
    (r"/workspaces", WorkspacesPageHandler),
    (r"/workspaces/([^/]+)", WorkspacePageHandler),
    (r"/admin/workspaces", AdminWorkspacesPageHandler),
]
