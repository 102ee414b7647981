"""uws-hub's custom JupyterHub scopes, defined once as data.

JupyterHub's ``@needs_scope`` checks scope names when handler modules are
imported, so the scopes are defined here, at import, and every handler module
imports this one. Filters work as for JupyterHub's own scopes: users get these
scopes with ``!user`` (their own workspaces); a workspace whose owner is
outside the filter is reported as not found (404).

Admins: JupyterHub forbids changing its 'admin' role, so uws-hub's scopes
cannot be added to it. Instead JupyterHub's ``admin:servers`` grants every
uws-hub scope on the same users (``admin:servers!group=x`` on the members of
x): a job *is* a server, and whoever administers a user's servers can already
reach everything in them.
"""

from __future__ import annotations

from jupyterhub.scopes import define_custom_scopes, needs_scope, scope_definitions

READ_WORKSPACES = "custom:uws:read:workspaces"
WRITE_WORKSPACES = "custom:uws:write:workspaces"
LAUNCH_JOBS = "custom:uws:launch:jobs"

SCOPES: dict[str, dict] = {
    READ_WORKSPACES: {
        "description": "Read workspaces: list them, their files and their jobs.",
    },
    WRITE_WORKSPACES: {
        "description": "Create, change and delete workspaces, and upload files to them.",
        "subscopes": [READ_WORKSPACES],
    },
    LAUNCH_JOBS: {
        "description": "Launch and stop jobs in workspaces.",
        "subscopes": [READ_WORKSPACES],
    },
}

#: what every user gets on their own workspaces (added to the 'user' role)
USER_SCOPES = [f"{scope}!user" for scope in SCOPES]
#: JupyterHub's scope that grants all of uws-hub's scopes on the same users
ADMIN_SCOPE = "admin:servers"


def accepting(scope: str) -> tuple[str, ...]:
    """The scopes that each grant ``scope`` (for ``@needs_scope(*accepting(s))``)."""
    return (scope, ADMIN_SCOPE)

if any(scope not in scope_definitions for scope in SCOPES):
    define_custom_scopes(SCOPES)


def requires(scope: str):
    """``@needs_scope`` for uws-hub's scopes.

    Lets the request through if it holds ``scope`` (or a scope granting it)
    with any filter; the handler then checks the filter against the resource's
    owner with :mod:`uws_hub.access` (JupyterHub's ``post_filter``), which
    answers 404 for resources outside it.
    """
    return needs_scope(*accepting(scope), post_filter=True)
