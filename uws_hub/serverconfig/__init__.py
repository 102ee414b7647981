"""Configuration that uws-hub gives the Jupyter servers of workspace jobs.

Jobs get ``JUPYTER_CONFIG_PATH`` pointing at this folder, so every
``uws-singleuser`` (``jupyterhub-singleuser``, a Jupyter Server) they start loads
``jupyter_server_config.py`` from here. It sets:

- ``HubOAuth.cache_max_age`` from ``$UWS_SERVER_AUTH_CACHE_SECONDS``
  (``UWSHub.server_auth_cache_seconds``): how long the server trusts the
  hub's last answer about a token or a login before asking again. It bounds
  how long a revoked grantee keeps reaching an open server (JupyterHub's
  default is 300 s; uws-hub's is 1 s, the smallest that still caches).
- the server extension ``uws_server_auth`` (added to
  ``ServerApp.jpserver_extensions``, not replacing them) and
  ``ServerApp.authorizer_class`` to :class:`uws_server_auth.WorkspaceAuthorizer`.
  The server runs as its launcher's account (``$UWS_LAUNCHER``: the owner, or
  the editor who launched it), so access to it is default-deny: the launcher
  and admins (``custom:uws:write:servers`` for the launcher, or
  ``admin:servers``, on this server) use it fully; anyone else the hub lets
  in, a viewer, the owner of an editor's server, another editor, reaches
  only a short list of read-only requests (GET or HEAD of JupyterLab's page
  and static files, settings, translations, files and folders, ``/api/me``,
  kernelspecs; :data:`uws_server_auth.READ_ONLY_HANDLERS`), never a websocket,
  so a viewer sees a read-only JupyterLab. The extension enforces this on
  every request the server receives, whatever handler serves it; the
  authorizer is the second line (see :mod:`uws_server_auth`).

- a job type's web app (``UWSHub.job_types[...]["app"]``), from the JSON in
  ``$UWS_APP``: :mod:`uws_apps` makes it a server of jupyter-server-proxy at
  ``<server>/app/`` (and seeds the workspace with its example files), and the
  guard lets viewers use it if the job type says so. The app is then behind
  the same JupyterHub login, sharing rules and guard as JupyterLab.

- unless ``UWSHub.jupyterlab_news`` is on, ``quiet/`` second on the path: its
  ``labconfig/page_config.json`` disables JupyterLab's announcements plugin
  (``@jupyterlab/apputils-extension:announcements``, as ``jupyter labextension
  disable`` would), so JupyterLab neither asks "Would you like to get notified
  about official Jupyter news?" on its first start nor fetches news or checks
  for updates from the internet.

This folder comes first on ``JUPYTER_CONFIG_PATH``, above the environment's and
(with jupyter_core 5) the user's own config, so config files add to these
settings but cannot undo them. The config file and the module import nothing of uws-hub (the module
sits beside the config file and is put on ``sys.path`` by it), so a job type
that runs Jupyter Server from another environment needs only JupyterHub there.
The folder must be readable by the accounts jobs run as.
"""

import json
import os
from typing import Any

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
#: the shipped example apps' files (uws_hub.jobs.examples), readable by the jobs' accounts
EXAMPLES_DIR = os.path.join(CONFIG_DIR, "examples")
#: JupyterLab's page config without its news and update checks (see above)
QUIET_DIR = os.path.join(CONFIG_DIR, "quiet")
#: where a job's web app is served, below its server's URL
APP_PATH = "app"


def job_env(
    env: dict[str, str], auth_cache_seconds: int, app: dict[str, Any] | None = None, jupyterlab_news: bool = False
) -> dict[str, str]:
    """A job's environment with this folder first on ``JUPYTER_CONFIG_PATH``
    (and without ``JUPYTER_NO_CONFIG``, which would skip it: a server without
    this config lets viewers do what its owner can), then, without
    ``jupyterlab_news``, the page config that switches JupyterLab's news off,
    and its job type's web app, if it has one (``UWS_APP``). The hub adds who
    launched the job (``UWS_LAUNCHER``) per launch."""
    env = dict(env)
    env.pop("JUPYTER_NO_CONFIG", None)
    ours = [CONFIG_DIR] if jupyterlab_news else [CONFIG_DIR, QUIET_DIR]
    rest = env.get("JUPYTER_CONFIG_PATH")
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(ours + ([rest] if rest else []))
    env["UWS_SERVER_AUTH_CACHE_SECONDS"] = str(auth_cache_seconds)
    env.pop("UWS_LAUNCHER", None)
    env.pop("UWS_APP", None)
    if app is not None:
        env["UWS_APP"] = json.dumps({"path": APP_PATH, **app})
    return env
