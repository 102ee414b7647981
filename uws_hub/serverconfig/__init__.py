"""Configuration that uws-hub gives the Jupyter servers of workspace jobs.

Jobs get ``JUPYTER_CONFIG_PATH`` pointing at this folder, so every
``jupyterhub-singleuser`` (Jupyter Server) they start loads
``jupyter_server_config.py`` from here. It sets:

- ``HubOAuth.cache_max_age`` from ``$UWS_SERVER_AUTH_CACHE_SECONDS``
  (``UWSHub.server_auth_cache_seconds``): how long the server trusts the
  hub's last answer about a token or a login before asking again. It bounds
  how long a revoked grantee keeps reaching an open server (JupyterHub's
  default is 300 s; uws-hub's is 1 s, the smallest that still caches).
- ``ServerApp.authorizer_class`` to :class:`uws_server_auth.WorkspaceAuthorizer`:
  everyone the hub lets in may *read*; *writing* files and *executing*
  (kernels, terminals) needs ``custom:uws:write:workspaces`` on this server,
  which the owner, editors and admins hold and viewers do not. So a viewer
  sees a read-only JupyterLab.

The config file and the authorizer import nothing of uws-hub (the module sits
beside the config file and is put on ``sys.path`` by it), so a job type that
runs Jupyter Server from another environment needs only JupyterHub there.
The folder must be readable by the accounts jobs run as.
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def job_env(env: dict[str, str], auth_cache_seconds: int) -> dict[str, str]:
    """A job's environment with this folder first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(env)
    rest = env.get("JUPYTER_CONFIG_PATH")
    env["JUPYTER_CONFIG_PATH"] = CONFIG_DIR + (os.pathsep + rest if rest else "")
    env["UWS_SERVER_AUTH_CACHE_SECONDS"] = str(auth_cache_seconds)
    return env
