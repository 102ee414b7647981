"""Pages: my workspaces, one workspace, and the admin's view of all of them.

The pages render the same JSON models as the REST API and act through it
from the browser (with JupyterHub's XSRF token), so everything a page can do
a program can do too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from sqlalchemy import func, select, true
from tornado import web

from .. import access
from ..apihandlers.base import parse_id
from ..errors import BadRequest, NotFound
from ..inputs import MAX_OFFSET, query_int
from ..models import job_model
from ..orm import Event, Job, Share, Workspace
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, SHARE_WORKSPACES, WRITE_WORKSPACES, requires
from ..services import Services
from ..states import ShareLevel, WorkspaceStatus
from ..workspaces.listing import SORT_LABELS, WorkspaceList

#: rows of a list page (workspaces, jobs), and of the admin's
PAGE_ROWS = 25
ADMIN_PAGE_ROWS = 50
#: query parameters a list's page links leave out: the page (theirs), and credentials
NOT_COPIED = frozenset({"page", "token", "_xsrf"})


class UWSPageHandler(BaseHandler):
    @property
    def uws(self) -> Services:
        return self.settings["uws"]

    async def render_page(self, template: str, **ns) -> None:
        html = await self.render_template(template, **ns)
        self.finish(html)

    def argument(self, name: str) -> str | None:
        return self.get_argument(name, None)

    def last_event_id(self) -> int:
        """The newest event's id, read before the page reads what it shows: the page's
        event stream starts after it (``last_event_id=``), so a change made while the
        page loads (a job that ends while its page reloads) still arrives."""
        return self.db.scalar(select(func.max(Event.id))) or 0

    def paging(self, total: int, rows: int = PAGE_ROWS) -> dict[str, Any]:
        """Which page of a list of ``total`` rows this request shows (``?page=``, from 1;
        ``?rows=``, 5 to 200 a page): its offset, the rows it shows ("26–50 of 61") and
        the addresses of its neighbours."""
        rows = query_int(self.argument("rows"), "rows", default=rows, minimum=5, maximum=200)
        last_page = max(1, -(-total // rows))
        number = query_int(self.argument("page"), "page", default=1, minimum=1, maximum=MAX_OFFSET // rows)
        number = min(number, last_page)
        offset = (number - 1) * rows

        def link(to: int) -> str:
            # what the list shows, never credentials a URL may carry (JupyterHub reads a
            # ``?token=`` on its pages; copied into links it would go wherever they are shown)
            query = [(k, v) for k, v in parse_qsl(self.request.query, keep_blank_values=True) if k not in NOT_COPIED]
            return "?" + urlencode([*query, ("page", str(to))])

        return {
            "offset": offset,
            "rows": rows,
            "number": number,
            "pages": last_page,
            "first": offset + 1 if total else 0,
            "last": min(offset + rows, total),
            "total": total,
            "previous": link(number - 1) if number > 1 else None,
            "next": link(number + 1) if number < last_page else None,
        }


class WorkspacesPageHandler(UWSPageHandler):
    """My workspaces: the reader's own and those shared with them, searched, sorted
    (last used first) and in pages, with each one's job and what can be done with it."""

    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self):
        user = self.current_user
        listing = WorkspaceList.parse(self.argument, default_whose=("mine", "shared"))
        where = access.workspace_clause(self, READ_WORKSPACES, Workspace.owner_id, Workspace.id)
        where = where & listing.clause(user.id)
        workspaces = self.uws.workspaces
        paging = self.paging(workspaces.count(where))
        items = workspaces.page(where, paging["offset"], paging["rows"], listing.ordering())
        levels = Share.levels_by_workspace(self.db, [ws.id for ws in items if ws.owner_id != user.id], user.id)
        models = self.uws.workspace_models(items)
        for ws, model in zip(items, models, strict=True):
            # how the reader has it: their own, or shared with them at a level; what they may do
            model["shared_level"] = _level(levels.get(ws.id, set())) if ws.owner_id != user.id else None
            model["can_launch"] = access.may_launch(self, ws, editors_run_code=self.uws.editors_run_code)
            model["can_stop"] = access.may_workspace(self, LAUNCH_JOBS, ws)
        usage = self.uws.quotas.usage_model(user.orm_user)
        await self.render_page(
            "workspaces.html",
            workspaces=models,
            listing=listing,
            sorts=SORT_LABELS,
            paging=paging,
            default_job_type=next(iter(self.uws.job_types), None),
            # nothing of the reader's at all (not: nothing found by a search)
            has_any=paging["total"] > 0 or workspaces.count(Workspace.owner_id == user.id) > 0,
            can_write=access.may(self, WRITE_WORKSPACES, user.orm_user),
            usage=usage,
        )


def _level(levels: set[str]) -> str | None:
    """The most a share grants (editor over viewer)."""
    return ShareLevel.editor.value if ShareLevel.editor.value in levels else next(iter(levels), None)


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
        can_launch = access.may_launch(self, ws, editors_run_code=self.uws.editors_run_code)
        can_stop = access.may_workspace(self, LAUNCH_JOBS, ws)
        await self.render_page(
            "workspace.html",
            workspace=model,
            jobs=[job_model(j) for j in recent],
            # interactive job types launch the workspace's one server; batch job types have a form of their own
            job_types=[jt.public_model() for jt in self.uws.job_types.values() if jt.interactive],
            batch_types=[jt.public_model() for jt in self.uws.job_types.values() if not jt.interactive],
            resource_fields={
                name: list(getattr(cls, "honoured_resources", ()))
                for name, cls in self.uws.servers.spawner_classes.items()
            },
            can_write=access.may_workspace(self, WRITE_WORKSPACES, ws),
            can_launch=can_launch,
            can_stop=can_stop,
            editors_run_code=self.uws.editors_run_code,
            # an editor who may stop but not launch here, and why (UWSHub.editors_run_code = False)
            launch_refusal=access.launch_refusal(ws) if can_stop and not can_launch else None,
            can_manage=access.may_workspace(self, WRITE_WORKSPACES, ws, grantees=False),
            can_share=can_share,
            can_read_output=access.may_read_output(self, ws.owner),
            # where the reader wanted to go in the workspace's server, if it is not running
            # (a bookmark, JupyterLab's Restart; see uws_hub.handlers.servers): only there
            open_next=self._server_address(server_url),
            my_level=_level(levels),
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
        # past the server's own origin, if it has one (JupyterHub's subdomain_host)
        path = wanted.split("://", 1)[1].partition("/")[2] if "://" in server_url else wanted
        # dot segments (``..``, ``%2e%2e``: the browser resolves both) lead out of the server
        dots = any(part in (".", "..") for part in unquote(path.split("?")[0].split("#")[0]).split("/"))
        if not inside or dots or "\\" in wanted or "//" in path or any(c.isspace() for c in wanted):
            return server_url
        return wanted


class AdminWorkspacesPageHandler(UWSPageHandler):
    """All workspaces: everyone's, searched, filtered by owner and status, sorted, in pages."""

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        listing = WorkspaceList.parse(self.argument)
        where = access.workspace_clause(self, READ_WORKSPACES, Workspace.owner_id, Workspace.id)
        where = where & listing.clause(self.current_user.id)
        status = self.argument("status")
        if status:
            if status not in [s.value for s in WorkspaceStatus]:
                raise BadRequest(f"Unknown status {status!r}; one of {[s.value for s in WorkspaceStatus]}")
            where = where & (Workspace.status == status)
        workspaces = self.uws.workspaces
        paging = self.paging(workspaces.count(where), rows=ADMIN_PAGE_ROWS)
        items = workspaces.page(where, paging["offset"], paging["rows"], listing.ordering())
        await self.render_page(
            "admin_workspaces.html",
            workspaces=self.uws.workspace_models(items),
            listing=listing,
            sorts=SORT_LABELS,
            statuses=[s.value for s in WorkspaceStatus],
            status=status or "",
            paging=paging,
            job_total=self.uws.jobs.count(true()),
        )


default_handlers = [
    (r"/workspaces", WorkspacesPageHandler),
    (r"/workspaces/([^/]+)", WorkspacePageHandler),
    (r"/admin/workspaces", AdminWorkspacesPageHandler),
]
