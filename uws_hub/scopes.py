"""uws-hub's custom JupyterHub scopes, defined once as data.

JupyterHub's ``@needs_scope`` checks scope names when handler modules are
imported, so the scopes are defined here, at import, and every handler module
imports this one. Filters work as for JupyterHub's own scopes: users get these
scopes with ``!user`` (their own workspaces); a workspace whose owner is
outside the filter is reported as not found (404).

Admins: JupyterHub forbids changing its 'admin' role, so uws-hub's scopes
cannot be added to it. Instead JupyterHub's ``admin:servers`` grants every
uws-hub workspace scope on the same users (``admin:servers!group=x`` on the
members of x): a job *is* a server, and whoever administers a user's servers
can already reach everything in them. Likewise ``admin:users`` grants
``custom:uws:admin:quotas`` (quotas are about users).

Workspaces shared with collaborators are the exception to "filtered on the
owner": a grantee acts on a shared workspace with the scopes they hold in any
form, as far as the share's level allows (:data:`LEVEL_SCOPES`, applied in
:mod:`uws_hub.access`).

:data:`WRITE_SERVERS` is apart: it says who writes and runs code in a job's
live server (its launcher), and only the server's guard reads it; no handler
of the hub takes it. It is the one uws-hub scope a server's OAuth client
allows, so the token a visitor's login gives a server (which the server's
process, someone else's code, holds) is worth nothing on the hub but the
visitor's name and that server. A workspace scope there would let the
server's code act on the hub as its visitors: a grantee holding a workspace
scope in any form acts on every workspace shared with them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from jupyterhub.scopes import define_custom_scopes, needs_scope, scope_definitions

READ_WORKSPACES = "custom:uws:read:workspaces"
WRITE_WORKSPACES = "custom:uws:write:workspaces"
LAUNCH_JOBS = "custom:uws:launch:jobs"
SHARE_WORKSPACES = "custom:uws:share:workspaces"
ADMIN_QUOTAS = "custom:uws:admin:quotas"
#: writing and running code in a job's live server; read by the server's guard
#: (uws_hub/serverconfig/uws_server_auth.py) only, never by the hub's API
WRITE_SERVERS = "custom:uws:write:servers"

SCOPES: dict[str, dict] = {
    READ_WORKSPACES: {
        "description": "Read workspaces: list them, their files and their jobs.",
    },
    WRITE_WORKSPACES: {
        "description": "Create, change and delete workspaces, and change their files (upload, move, delete).",
        "subscopes": [READ_WORKSPACES],
    },
    LAUNCH_JOBS: {
        "description": "Launch and stop jobs in workspaces.",
        "subscopes": [READ_WORKSPACES],
    },
    SHARE_WORKSPACES: {
        "description": "Share workspaces (with collaborators, or as copies) and end those shares.",
        "subscopes": [READ_WORKSPACES],
    },
    ADMIN_QUOTAS: {
        "description": "Read users' usage and set the quotas of users and groups.",
    },
    WRITE_SERVERS: {
        "description": (
            "Write and run code in workspace jobs' live servers, as their launcher (checked by the servers"
            " only: no API of the hub takes it)."
        ),
    },
}

#: what every user gets on their own workspaces and servers (added to the 'user' role)
USER_SCOPES = [
    f"{scope}!user" for scope in (READ_WORKSPACES, WRITE_WORKSPACES, LAUNCH_JOBS, SHARE_WORKSPACES, WRITE_SERVERS)
]
#: JupyterHub's scope that grants all of uws-hub's workspace scopes on the same users
ADMIN_SCOPE = "admin:servers"
#: JupyterHub's scope that grants the quota admin scope on the same users
ADMIN_USERS_SCOPE = "admin:users"

#: what each level of a collaborate share lets a grantee do in the shared workspace
#: (see uws_hub.access); renaming, deleting and sharing stay with the owner
#: the prefix of the JupyterHub roles uws-hub manages, one per shared workspace and
#: level (``uws-ws-<id>-viewer``, see :mod:`uws_hub.sharing.collaborate`)
ROLE_PREFIX = "uws-ws-"

LEVEL_SCOPES: dict[str, tuple[str, ...]] = {
    "viewer": (READ_WORKSPACES,),
    "editor": (READ_WORKSPACES, WRITE_WORKSPACES, LAUNCH_JOBS),
}


def accepting(scope: str) -> tuple[str, ...]:
    """The scopes that each grant ``scope`` (for ``@needs_scope(*accepting(s))``)."""
    if scope == ADMIN_QUOTAS:
        return (scope, ADMIN_USERS_SCOPE)
    return (scope, ADMIN_SCOPE)


def taken_by_hub(scope: str) -> bool:
    """Whether ``scope``, in any form (``!user``, ``!server=``...), lets a token act on
    uws-hub's API: a scope of its own but :data:`WRITE_SERVERS`, one of JupyterHub's that
    :func:`accepting` counts as one, or ``inherit`` (all its user holds). A server's OAuth
    client allows none of them (see ``ServerControl.refused_client_scopes``): its process
    holds its visitors' tokens."""
    name = scope.partition("!")[0]
    return name == "inherit" or any(name in accepting(own) for own in SCOPES if own != WRITE_SERVERS)


def levels_granting(scope: str) -> tuple[str, ...]:
    """The share levels that let a grantee act with ``scope``."""
    return tuple(level for level, scopes in LEVEL_SCOPES.items() if scope in scopes)


if any(scope not in scope_definitions for scope in SCOPES):
    define_custom_scopes(SCOPES)


def requires(scope: str):
    """``@needs_scope`` for uws-hub's scopes.

    Lets the request through if it holds ``scope`` (or a scope granting it)
    with any filter; the handler then checks the filter against the resource's
    owner with :mod:`uws_hub.access` (JupyterHub's ``post_filter``), which
    answers 404 for resources outside it.
    """
    check = needs_scope(*accepting(scope), post_filter=True)

    def decorate(handler_method: Callable) -> Callable:
        # JupyterHub's check reads the method's signature at every request (the names of its
        # arguments say what a scope's filter applies to): read once, it is then at hand
        handler_method.__signature__ = inspect.signature(handler_method)  # type: ignore[attr-defined]
        return check(handler_method)

    return decorate
