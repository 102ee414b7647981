"""Read-only access for workspace viewers in a job's Jupyter Server.

Loaded by ``jupyter_server_config.py`` beside it (not imported as part of
uws_hub: it needs only JupyterHub and Jupyter Server). Everyone JupyterHub
lets in (``access:servers`` on this server: the owner, the workspace's
viewers and editors, admins) may *read*; *write* and *execute* need
``custom:uws:write:workspaces`` (or ``admin:servers``) on this server.
"""

import os

from jupyterhub.services.auth import check_scopes
from jupyterhub.singleuser.extension import JupyterHubAuthorizer

WRITE_SCOPE = "custom:uws:write:workspaces"


def server_name() -> str:
    return f"{os.environ.get('JUPYTERHUB_USER', '')}/{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"


class WorkspaceAuthorizer(JupyterHubAuthorizer):
    """JupyterHub's authorizer (access to this server), plus: only writers write or execute."""

    def write_scopes(self) -> set[str]:
        server = server_name()
        return {f"{WRITE_SCOPE}!server={server}", f"admin:servers!server={server}"}

    def is_authorized(self, handler, user, action, resource):
        if not super().is_authorized(handler, user, action, resource):
            return False
        if action == "read":
            return True
        allowed = bool(check_scopes(self.write_scopes(), set(user.hub_user["scopes"])))
        if not allowed:
            self.log.info("%s may only read here (%s %s refused)", user.username, action, resource)
        return allowed
