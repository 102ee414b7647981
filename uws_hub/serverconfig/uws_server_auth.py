"""Who may do what in a workspace job's Jupyter Server: default-deny for readers.

Loaded by ``jupyter_server_config.py`` beside it (not imported as part of
uws_hub: it needs only JupyterHub and Jupyter Server, so a job may run from
another environment). The server runs *as its launcher's account*
(``$UWS_LAUNCHER``, set by the hub: the workspace's owner, or the editor who
launched it): whoever may use it can do what that account can. JupyterHub
lets in everyone with ``access:servers`` on it (the owner, the workspace's
editors and viewers, admins); of these, only *writers* use it fully: the
launcher (with ``custom:uws:write:servers`` on this server) and holders of
``admin:servers`` on it (see :func:`may_write`). That scope is the only
uws-hub scope the server's OAuth client allows, and no API of the hub takes
it: the tokens of its visitors, which this process sees, let it act on the
hub as none of them. Everyone else, a viewer, the
owner of a server an editor launched, another editor,
reaches only :data:`READ_ONLY_HANDLERS`, by GET or HEAD, never as a websocket;
and, in a job whose job type's web app says ``viewers: true``, that app: the
one route jupyter-server-proxy serves it at, with every method and websocket
the app uses (what a viewer may do there is the app's to say: Voilà, for
one, passes its kernel only the widgets' messages, never code to run). The
app gets none of its visitors' credentials (:func:`without_credentials`): it
is the owner's code.

- The guard, this module as the server extension ``uws_server_auth``
  (:func:`_load_jupyter_server_extension`), wraps the tornado application's
  routing, so it sees *every* request whatever handler it reaches: handlers
  JupyterLab or any extension adds (also later), and handlers that check only
  that someone is logged in (``@web.authenticated``: JupyterLab's settings,
  workspaces, extension and plugin managers). A request that is not on the
  read-only list reaches its handler through :func:`guarded`, which first
  authenticates it as the single-user server does (JupyterHub's identity
  provider) and requires the write scope; a refusal is a 403 that says why.
- :class:`WorkspaceAuthorizer` (``ServerApp.authorizer_class``) stops a server
  whose guard is not enabled (a command line that sets the server extensions
  outright), and refuses writes and execution to non-writers in every handler
  Jupyter Server asks it about (``@authorized``). Behind the guard that is a
  second line: it refuses nothing more as long as the read-only list holds
  only reads, and catches an entry that is not.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from jupyter_server.utils import url_path_join
from jupyterhub.services.auth import check_scopes
from jupyterhub.singleuser.extension import JupyterHubAuthorizer
from tornado import web
from tornado.routing import PathMatches, Rule

#: what the launcher holds on this server (uws_hub.scopes.WRITE_SERVERS): read here only
WRITE_SCOPE = "custom:uws:write:servers"
#: the names of JupyterHub's cookies: its session id, and each server's login (OAuth) cookie,
#: also with the ``__Host-`` prefix (``JupyterHub.cookie_host_prefix_enabled``, advised
#: with ``subdomain_host``)
HUB_COOKIE_PREFIXES = ("jupyterhub-", "__Host-jupyterhub-")

#: What a reader may GET (or HEAD), by handler class: what JupyterLab needs to
#: show the workspace and open its files, each read-only (why, beside it).
#: Classes, not URL patterns: the server's own routing has chosen the handler,
#: so no spelling of a path can reach another one through this list; a
#: subclass (of another extension) is not on it.
READ_ONLY_HANDLERS = {
    # the page and what it loads
    "jupyterlab_server.handlers.LabHandler": "JupyterLab's page (/lab, /lab/tree/..., /lab/workspaces/..., /doc/...): HTML from a template",
    "jupyter_server.base.handlers.FileFindHandler": "static files of the installed packages (/static/..., /lab/extensions/...), never the workspace's",
    "jupyterlab_server.themes_handler.ThemesHandler": "the themes' CSS and fonts, from the installed packages",
    "jupyterlab_server.settings_handler.SettingsHandler": "GET reads the settings the page applies",
    "jupyterlab_server.translations_handler.TranslationsHandler": "GET reads the installed language packs",
    # the workspace's files
    "jupyter_server.services.contents.handlers.ContentsHandler": "GET reads a file's or a folder's model",
    "jupyter_server.base.handlers.AuthenticatedFileHandler": "GET reads a file's bytes (/files/..., downloads)",
    # who is looking, and the kernels' names and logos the page shows
    "jupyter_server.services.api.handlers.IdentityHandler": "GET says who the reader is (/api/me)",
    "jupyter_server.services.kernelspecs.handlers.MainKernelSpecHandler": "GET lists the installed kernels",
    "jupyter_server.services.kernelspecs.handlers.KernelSpecHandler": "GET describes an installed kernel",
    "jupyter_server.kernelspecs.handlers.KernelSpecResourceHandler": "a kernel's logo, a static file",
    # the reader's own session: JupyterHub's OAuth login and the logout
    "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler": "the end of the reader's login: sets the reader's own cookie",
    "jupyterhub.singleuser.extension.JupyterHubLogoutHandler": "clears the reader's own cookie, then goes to the hub",
    "jupyter_server.base.handlers.RedirectWithParams": "a redirect (/ to /lab)",
}


def server_name() -> str:
    return f"{os.environ.get('JUPYTERHUB_USER', '')}/{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"


def write_scopes() -> set[str]:
    server = server_name()
    return {f"{WRITE_SCOPE}!server={server}", f"admin:servers!server={server}"}


def launcher() -> str:
    """The user whose account the server runs as (``$UWS_LAUNCHER``, set by the hub); the
    server's owner for a server started before the hub said (``$JUPYTERHUB_USER``)."""
    return os.environ.get("UWS_LAUNCHER") or os.environ.get("JUPYTERHUB_USER", "")


def may_write(hub_user: dict) -> bool:
    """Whether this JupyterHub user (or token) may write and execute in this server.

    The server runs as its launcher's account, so whoever writes or runs code
    in it does so as the launcher: only the launcher themself (holding the
    write scope on this server) and holders of ``admin:servers`` on it
    (JupyterHub's admins) may. The owner of a server an editor launched, and
    an editor in the owner's server, read only.
    """
    scopes = set(hub_user["scopes"])
    if check_scopes({f"admin:servers!server={server_name()}"}, scopes):
        return True
    if not check_scopes(write_scopes(), scopes):
        return False
    return hub_user.get("kind") == "user" and hub_user.get("name") == launcher()


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_read_only(request, handler_class: type) -> bool:
    """Whether a reader may make this request: a GET or HEAD, not an upgrade
    (websocket), to a handler on the read-only list."""
    return (
        request.method in ("GET", "HEAD")
        and "Upgrade" not in request.headers
        and qualified_name(handler_class) in READ_ONLY_HANDLERS
    )


async def require_writer(handler: web.RequestHandler, login: bool = False) -> bool:
    """Authenticate the request as the server does (JupyterHub's identity
    provider) and require the write scope; else answer 403 and return False.

    ``login``: a browser that is not logged in is sent to log in (JupyterHub's
    OAuth, as ``@web.authenticated`` does), not refused: for the page of a web
    app, which its owner opens as they open JupyterLab."""
    identity_provider = handler.settings["identity_provider"]
    user = await identity_provider.get_user(handler)
    # what Jupyter Server's prepare() sets: the handler does not ask again
    handler.current_user = user
    if user is not None and may_write(user.hub_user):
        return True
    request = handler.request
    what = "a websocket" if "Upgrade" in request.headers else request.method
    needs = f"{WRITE_SCOPE}!server={server_name()}"
    if user is None:
        if login and what in ("GET", "HEAD"):
            web.authenticated(lambda _: None)(handler)  # a redirect: the user is None
        else:
            refuse(handler, f"{what} here needs a login with {needs}")
        return False
    identity_provider.log.info("%s may only read here (%s %s refused)", user.username, what, request.path)
    account = launcher()
    why = (
        f"{what} here runs as {account}'s account, which launched this server: only {account} (with {needs})"
        " and admins may write or run code in it; everyone else may open, read and download only. Editors"
        " change files through the hub's workspace page, and can launch a server of their own (which runs as"
        " them) once this one stopped"
    )
    refuse(handler, f"{user.username} may only read here: {why}")
    return False


def refuse(handler: web.RequestHandler, message: str) -> None:
    """Answer 403 with ``message`` in JSON, as Jupyter Server's API answers.

    Written with tornado's own ``finish``: nothing of the handler runs for a
    refused request, not even its error page (JupyterLab's licenses handler,
    for one, has a ``finish`` that tornado's error path cannot call)."""
    handler.set_status(403)
    handler.set_header("Content-Type", "application/json")
    web.RequestHandler.finish(handler, json.dumps({"message": message, "reason": None}))


@functools.cache
def guarded(handler_class: type[web.RequestHandler], login: bool = False) -> type[web.RequestHandler]:
    """``handler_class`` behind :func:`require_writer` (with ``login``), which runs before anything of its own.

    It takes every standard method, so that a non-writer gets the same 403
    whatever the method (tornado would answer an unsupported one with 405
    before ``prepare``); writers get the 405 as before."""
    methods = handler_class.SUPPORTED_METHODS

    class Guarded(handler_class):  # type: ignore[valid-type,misc]
        SUPPORTED_METHODS = tuple(dict.fromkeys((*methods, *web.RequestHandler.SUPPORTED_METHODS)))

        async def prepare(self, *args, **kwargs):
            if not await require_writer(self, login):
                return None  # refused (or sent to log in): answered
            if self.request.method not in methods:
                raise web.HTTPError(405)
            result = super().prepare(*args, **kwargs)
            if result is not None:
                await result
            return None

    # logs and error pages name the handler as before
    Guarded.__name__, Guarded.__qualname__ = handler_class.__name__, handler_class.__qualname__
    Guarded.__module__, Guarded.__doc__ = handler_class.__module__, handler_class.__doc__
    return Guarded


#: handlers on the read-only list whose models say whether the reader may write:
#: to a reader they say not (see :func:`read_only_view`)
MODEL_HANDLERS = {"jupyter_server.services.contents.handlers.ContentsHandler"}


def not_writable(model: dict) -> dict:
    """A contents model (and a folder's listed models) marked as not writable."""
    model["writable"] = False
    if model.get("type") == "directory" and isinstance(model.get("content"), list):
        for child in model["content"]:
            child["writable"] = False
    return model


@functools.cache
def read_only_view(handler_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
    """``handler_class``, whose models tell a reader that they may not write.

    The server runs as the owner, so its files are writable and JupyterLab
    would let a viewer edit until the save is refused. With ``writable: false``
    JupyterLab shows the document as read-only from the start (*"notebook is
    read-only"* in its toolbar; Save disabled, "Save as…" offered).
    """

    class ReadOnlyView(handler_class):  # type: ignore[valid-type,misc]
        def _finish_model(self, model, location=True):
            user = self.current_user
            if user is None or not may_write(user.hub_user):
                model = not_writable(model)
            return super()._finish_model(model, location)

    ReadOnlyView.__name__, ReadOnlyView.__qualname__ = handler_class.__name__, handler_class.__qualname__
    ReadOnlyView.__module__, ReadOnlyView.__doc__ = handler_class.__module__, handler_class.__doc__
    return ReadOnlyView


class _Unroutable(web.RequestHandler):
    """A route whose target is not a request handler (a nested application, a
    callable): nothing here can tell who may use it, so no one may."""

    def prepare(self):
        refuse(self, "uws-hub's server check cannot check this request, so no one may make it")


def web_app() -> dict[str, Any] | None:
    """The job type's web app (``$UWS_APP``, set by the hub), or None."""
    spec = os.environ.get("UWS_APP")
    return json.loads(spec) if spec else None


def routed_rules(router, pattern: str) -> list[Rule]:
    """The rules of a tornado router (and of the routers in it) that route ``pattern`` to a handler class."""
    found = []
    for rule in getattr(router, "rules", ()):
        if isinstance(rule.target, type):
            if isinstance(rule.matcher, PathMatches) and rule.matcher.regex.pattern == pattern:
                found.append(rule)
        else:
            found += routed_rules(rule.target, pattern)
    return found


def app_rules(web_app: web.Application, path: str) -> list[Rule]:
    """The route(s) jupyter-server-proxy serves the app at: the one it adds for
    ``<base_url><path>/(.*)``, found by that exact pattern, so no other route
    (``/proxy/<port>``, another server of the extension) is one."""
    pattern = url_path_join(web_app.settings["base_url"], path, "(.*)") + "$"
    return routed_rules(web_app.default_router, pattern)


def without_cookies(cookie: str, prefixes: tuple[str, ...]) -> str:
    """A ``Cookie`` header's value without the cookies whose names start with one of ``prefixes``."""
    kept = [c.strip() for c in cookie.split(";") if c.strip() and not c.strip().startswith(prefixes)]
    return "; ".join(kept)


@functools.cache
def without_credentials(handler_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
    """jupyter-server-proxy's handler of the app, passing on to the app none
    of the visitor's credentials: no ``Authorization`` header (a visitor's API
    token) and no JupyterHub cookie (the visitor's login to this server).

    The app runs as the workspace's owner and is the owner's code: a token or
    login it saw would let the owner act as whoever opened the app. Headers the
    job type's ``request_headers`` set (the app's own ``{token}``) still go."""

    class App(handler_class):  # type: ignore[valid-type,misc]
        def proxy_request_headers(self):
            headers = super().proxy_request_headers()
            own = {name.lower() for name in self.get_request_headers_override()}  # (any case: HTTP's)
            if "authorization" not in own:
                headers.pop("Authorization", None)
            if "Cookie" in headers and "cookie" not in own:
                cookie = without_cookies("; ".join(headers.get_list("Cookie")), HUB_COOKIE_PREFIXES)
                del headers["Cookie"]
                if cookie:
                    headers["Cookie"] = cookie
            return headers

    App.__name__, App.__qualname__ = handler_class.__name__, handler_class.__qualname__
    App.__module__, App.__doc__ = handler_class.__module__, handler_class.__doc__
    return App


def guard_routing(
    web_app: web.Application, viewer_apps: frozenset[type] = frozenset(), apps: frozenset[type] = frozenset()
) -> None:
    """Route every request either to its handler (on the read-only list, or
    ``viewer_apps``: the web app viewers may use) or to it guarded (``apps``,
    the web app's route, sending browsers that are not logged in to log in)."""
    find_handler = web_app.find_handler

    def guarded_find_handler(request, **kwargs):
        delegate = find_handler(request, **kwargs)
        handler_class = getattr(delegate, "handler_class", None)
        if handler_class is None:
            return web_app.get_handler_delegate(request, _Unroutable)
        if handler_class in viewer_apps:
            return delegate
        if is_read_only(request, handler_class):
            if qualified_name(handler_class) in MODEL_HANDLERS:
                return web_app.get_handler_delegate(
                    request,
                    read_only_view(handler_class),
                    delegate.handler_kwargs,
                    delegate.path_args,
                    delegate.path_kwargs,
                )
            return delegate
        return web_app.get_handler_delegate(
            request,
            guarded(handler_class, handler_class in apps),
            delegate.handler_kwargs,
            delegate.path_args,
            delegate.path_kwargs,
        )

    web_app.find_handler = guarded_find_handler


def _jupyter_server_extension_points():
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Guard the server's routing; a server that cannot be guarded, or whose
    job type's web app is not served, does not run.

    jupyter-server-proxy has added the app's route by now: Jupyter Server
    loads extensions in the order of their names (``jupyter_server_proxy``
    before ``uws_server_auth``)."""
    try:
        app = web_app()
        handlers: frozenset[type] = frozenset()
        viewer_apps: frozenset[type] = frozenset()
        if app is not None:
            rules = app_rules(serverapp.web_app, app["path"])
            for rule in rules:
                rule.target = without_credentials(rule.target)
            handlers = frozenset(rule.target for rule in rules)
            if not handlers:
                serverapp.log.critical(
                    "uws_server_auth: the job type's web app is not served at %s/ (is jupyter-server-proxy "
                    "installed where the job runs? an error above may say more); stopping",
                    app["path"],
                )
                serverapp.exit(1)
            if app["viewers"]:
                viewer_apps = handlers
        guard_routing(serverapp.web_app, viewer_apps, handlers)
    except Exception:
        serverapp.log.critical("uws_server_auth: cannot guard this server's routing; stopping", exc_info=True)
        serverapp.exit(1)
    serverapp.log.info(
        "uws_server_auth: readers reach only %d read-only handlers%s",
        len(READ_ONLY_HANDLERS),
        " and the web app" if viewer_apps else "",
    )


class WorkspaceAuthorizer(JupyterHubAuthorizer):
    """JupyterHub's authorizer (access to this server), plus: only writers write
    or execute; and no server runs without the guard."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Made after the server extensions are linked, before the web app. Config
        # files cannot drop the guard (this folder comes first on
        # JUPYTER_CONFIG_PATH and adds to the extensions), but a command line
        # that sets ServerApp.jpserver_extensions outright does
        serverapp = self.parent
        extension = serverapp.extension_manager.extensions.get(__name__)
        if extension is None or not extension.enabled:
            self.log.critical(
                "%s: the server extension %s, which keeps viewers to reading, is not enabled (something "
                "set ServerApp.jpserver_extensions outright; add to it instead); stopping",
                __name__,
                __name__,
            )
            serverapp.exit(1)

    def is_authorized(self, handler, user, action, resource):
        if not super().is_authorized(handler, user, action, resource):
            return False
        if action == "read":
            return True
        allowed = may_write(user.hub_user)
        if not allowed:
            self.log.info("%s may only read here (%s %s refused)", user.username, action, resource)
        return allowed
