"""JupyterHub's own ways into a server that is not running, led to its workspace.

Every server here is a workspace's job, started from the workspace (its page,
or the jobs API): the spawner refuses a start without a workspace job. So
JupyterHub's pages that start a server themselves ended in "400 Failed to
start your server": a bookmarked ``/user/<owner>/<workspace>/…`` of a stopped
job (JupyterHub's "not running" page and its Launch button), the spawn page
(``/hub/spawn/…``, where JupyterLab's "Restart Server" and its "server
unreachable" dialog lead), and its spawn-pending page after a failed start.
These handlers take JupyterHub's routes and send the reader to the
workspace's page instead, with the address they wanted (``?next=``): there a
Launch button starts the workspace's job and opens that address once it runs
(or, without the right to launch, the page says who can). They start nothing
themselves: a GET must not start a job (and JupyterHub's spawn would count
as the owner's activity). A redirect is not activity either.

Requests that look like API calls (JSON, or ``/api/`` in the path) keep
JupyterHub's ``424`` answer, which JupyterLab understands; a reader who may
not see the workspace gets JupyterHub's own answer (a 404).

The way into a running server that is shared is JupyterHub's OAuth login:
:class:`SharedServerAuthorizeHandler` spares a workspace's collaborators
JupyterHub's consent page.
"""

from __future__ import annotations

from jupyterhub.apihandlers.auth import OAuthAuthorizeHandler
from jupyterhub.handlers.base import BaseHandler, UserUrlHandler
from jupyterhub.handlers.pages import SpawnPendingHandler
from jupyterhub.utils import get_accepted_mimetype, url_path_join
from tornado import web
from tornado.httputil import url_concat

from .. import access
from ..orm import Share, Workspace
from ..scopes import READ_WORKSPACES
from ..services import Services


def _workspace(handler, user_name: str, server_name: str) -> Workspace | None:
    """The workspace that is ``user_name``'s server ``server_name``, if the reader may see it."""
    owner = handler.find_user(user_name)
    if owner is None or not server_name:
        return None
    ws = Workspace.find_by_slug(handler.db, owner.id, server_name)
    if ws is None or not access.may_workspace(handler, READ_WORKSPACES, ws):
        return None
    return ws


def _workspace_page(handler, ws: Workspace, next_url: str | None) -> str:
    url = url_path_join(handler.hub.base_url, "workspaces", str(ws.id))
    return url_concat(url, {"next": next_url}) if next_url else url


class _ToWorkspace:
    """What the handlers here share: the services, and a redirect is not activity."""

    @property
    def uws(self) -> Services:
        return self.settings["uws"]  # type: ignore[attr-defined]

    def _record_activity(self, obj, timestamp=None):
        return False

    def _stopped(self, ws: Workspace) -> bool:
        """Whether the workspace's server is neither running nor starting."""
        spawner = self.uws.servers.find(ws.owner, ws.slug)
        return spawner is None or not (spawner.ready or spawner.pending)


class SpawnPageHandler(_ToWorkspace, BaseHandler):
    """``/hub/spawn[/<user>[/<server>]]``: to the workspace's page (or the list of workspaces)."""

    @web.authenticated
    def get(self, user_name: str | None = None, server_name: str | None = None):
        next_url = self.get_argument("next", None)
        if not server_name:
            # a user's default server: there is none, every server is a workspace's job
            self.redirect(url_path_join(self.hub.base_url, "workspaces"), status=303)
            return
        ws = _workspace(self, user_name or "", server_name)
        if ws is None:
            raise web.HTTPError(404, f"No workspace {server_name!r} of {user_name!r} that you can see")
        self.redirect(_workspace_page(self, ws, next_url or self.users[ws.owner].server_url(ws.slug)), status=303)

    # the options form of JupyterHub's spawn page posts here
    post = get


class SpawnPendingPageHandler(_ToWorkspace, SpawnPendingHandler):
    """``/hub/spawn-pending/<user>/<server>``: JupyterHub's progress page while a start is
    under way (or its redirect to the running server); after a failed start, or none,
    the workspace's page."""

    @web.authenticated
    async def get(self, user_name: str, server_name: str = ""):
        ws = _workspace(self, user_name, server_name)
        if ws is not None and self._stopped(ws):
            self.redirect(_workspace_page(self, ws, self.get_argument("next", None)), status=303)
            return
        await super().get(user_name, server_name)


class StoppedServerHandler(_ToWorkspace, UserUrlHandler):
    """``/hub/user/<owner>/<workspace>/…`` (where the proxy sends a ``/user/…`` address
    without a route: the job is not running): the workspace's page with the address,
    instead of JupyterHub's "not running" page."""

    @web.authenticated
    async def get(self, user_name: str, user_path: str | None):
        server_name = (user_path or "/").lstrip("/").split("/", 1)[0]
        ws = _workspace(self, user_name, server_name)
        if ws is not None and not self._api_request(user_path or "/") and self._stopped(ws):
            # the address as the reader knows it: /user/…, not the hub's /hub/user/…, on the
            # owner's own host with subdomain_host (as JupyterHub's redirect to a running server)
            wanted = url_path_join(self.base_url, self.request.uri[len(self.hub.base_url) :])
            if self.subdomain_host:
                wanted = self.users[ws.owner].host + wanted
            self.redirect(_workspace_page(self, ws, wanted), status=303)
            return
        await super().get(user_name, user_path)

    def _api_request(self, user_path: str) -> bool:
        """As JupyterHub tells an API request (answered 424) from a page."""
        accepted = get_accepted_mimetype(
            self.request.headers.get("Accept", ""), choices=["application/json", "text/html"]
        )
        return accepted == "application/json" or "api" in user_path.split("/")


class SharedServerAuthorizeHandler(OAuthAuthorizeHandler):
    """JupyterHub's OAuth authorization, without its consent page for a workspace's
    collaborator: the share is the consent.

    A viewer or editor who opens a shared workspace's JupyterLab logs into its
    owner's server through JupyterHub's OAuth, which asks everyone but the
    owner to "Authorize access" first: a raw page that means nothing to a
    collaborator and that they meet again at every new job (each job's server
    is a new OAuth client). For a user the workspace is shared with (directly
    or through a group) the page is skipped; everyone else gets JupyterHub's
    page as before.
    """

    def needs_oauth_confirm(self, user, oauth_client, requested_scopes):
        orm_spawner = oauth_client.spawner
        if orm_spawner is not None and orm_spawner.user is not None and orm_spawner.name:
            ws = Workspace.find_by_slug(self.db, orm_spawner.user.id, orm_spawner.name)
            if ws is not None and ws.owner_id != user.id and Share.levels_of(self.db, ws.id, user.id):
                return False
        return super().needs_oauth_confirm(user, oauth_client, requested_scopes)


default_handlers = [
    (r"/spawn", SpawnPageHandler),
    (r"/spawn/([^/]+)", SpawnPageHandler),
    (r"/spawn/([^/]+)/([^/]+)", SpawnPageHandler),
    (r"/spawn-pending/([^/]+)/([^/]+)", SpawnPendingPageHandler),
    (r"/user/(?P<user_name>[^/]+)(?P<user_path>/.*)?", StoppedServerHandler),
    (r"/api/oauth2/authorize", SharedServerAuthorizeHandler),
]
