"""A job type's web app as a server of jupyter-server-proxy (job side).

Loaded by ``jupyter_server_config.py`` beside it, in the job's Jupyter server
(running as the workspace's owner, in the workspace), when ``$UWS_APP`` holds
the job type's app (:class:`uws_hub.jobs.types.WebApp`, as JSON, with
``path``: where it is served below the server's URL). Like the guard, it
imports nothing of uws_hub.

jupyter-server-proxy starts the app at the first request to
``<server>/<path>/`` and passes every request below it to the app (the prefix
stripped), websockets too. It runs in the Jupyter server, so the app is behind
what guards JupyterLab: JupyterHub's login and access check, and uws-hub's
guard (viewers reach the app only if the job type says so).

The placeholders: ``{port}`` and ``{unix_socket}`` are jupyter-server-proxy's
(it picks them); ``{base_url}`` is the app's own URL path (``<server>/app/``),
``{workspace}`` the workspace's folder, and ``{token}`` a secret made here at
each start, for the app's environment and the proxy's request headers: an app
that listens on a port can be reached by any account on the machine, so it
should check a secret that only the proxy sends (or listen on a Unix socket,
in a folder only the owner's account may open).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import string
from typing import Any

log = logging.getLogger("uws_apps")


def escape(text: str) -> str:
    """``text`` as a literal for jupyter-server-proxy's own ``str.format``."""
    return text.replace("{", "{{").replace("}", "}}")


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with our placeholders filled in, jupyter-server-proxy's
    (``{port}``, ``{unix_socket}``) left for it to fill, everything else
    escaped for its ``str.format``. The hub checked the placeholders' names."""
    out = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(escape(literal))
        if field is not None:
            out.append(escape(values[field]) if field in values else "{" + field + "}")
    return "".join(out)


def server_process(app: dict[str, Any], *, server_url: str, workspace: str, token: str) -> dict[str, Any]:
    """The app as one of ``c.ServerProxy.servers``."""
    values = {"base_url": server_url.rstrip("/") + f"/{app['path']}/", "workspace": workspace, "token": token}
    command = [render(part, values) for part in app["command"]]
    return {
        "command": command,
        "environment": {k: render(v, values) for k, v in app["env"].items()},
        "request_headers_override": {k: render(v, values) for k, v in app["request_headers"].items()},
        "timeout": app["timeout_seconds"],
        # a socket in a new folder of the owner's (mode 0700), when the app listens on one
        "unix_socket": any("{unix_socket}" in part for part in app["command"]),
        # the app gets paths below its prefix; {base_url} tells it the prefix for its links
        "absolute_url": False,
        # JupyterLab's launcher would list it beside the kernels: the job opens it already
        "launcher_entry": {"enabled": False},
    }


def seed(app: dict[str, Any], workspace: str) -> None:
    """Copy the app's example files into the workspace, each only if the
    workspace has nothing of its name (not even a dangling link). Written as
    the owner, where the owner writes: nothing here is done with more rights."""
    for name, source in app["seed"].items():
        try:
            fd = os.open(
                os.path.join(workspace, name),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
            )
        except FileExistsError:
            continue
        except OSError as e:
            log.warning("uws_apps: cannot write the example %s into the workspace: %s", name, e)
            continue
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        log.info("uws_apps: the workspace had no %s; wrote the example", name)


def configure(c, app: dict[str, Any]) -> None:
    """Serve ``app`` in this server: seed the workspace, add the app to
    jupyter-server-proxy's servers and turn the extension on."""
    workspace = os.environ.get("UWS_WORKSPACE_DIR") or os.getcwd()
    seed(app, workspace)
    c.ServerProxy.servers = {
        app["path"]: server_process(
            app,
            server_url=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
            workspace=workspace,
            token=secrets.token_urlsafe(32),
        )
    }
    c.ServerApp.jpserver_extensions.update({"jupyter_server_proxy": True})
