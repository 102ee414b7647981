"""Who may see and do what: JupyterHub scopes applied to workspace owners, and shares.

Authorization lives here and in ``@needs_scope`` only; no handler compares
user names. A request may act on a workspace with a scope if

- the filter of a scope that grants the action (see
  :func:`uws_hub.scopes.accepting`) admits the workspace's owner
  (``!user=<owner>``, ``!group=<a group of the owner>``, or no filter at all),
  exactly as JupyterHub decides for its own resources; or
- the request's user is a grantee of the workspace (a collaborate share with
  them or one of their groups) at a level that allows the action
  (:data:`uws_hub.scopes.LEVEL_SCOPES`), **and** the request holds that scope
  in some form (any filter). So a token limited to reading stays read-only on
  shared workspaces too, and a token without uws-hub's scopes sees nothing.

:func:`may_workspace` decides for one workspace, :func:`workspace_clause` is
the same rule as SQL for list endpoints and event streams.
"""

from __future__ import annotations

from typing import Any, Protocol

from jupyterhub import orm as hub_orm
from jupyterhub.scopes import Scope
from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import Session

from .orm import Job, Share, Workspace
from .scopes import LAUNCH_JOBS, READ_WORKSPACES, accepting, levels_granting


class ScopedRequest(Protocol):
    """What this module needs of a handler: JupyterHub's parsed scopes, the user, the db."""

    parsed_scopes: dict
    expanded_scopes: set
    current_user: Any
    db: Session

    def get_scope_filter(self, req_scope: str): ...


def may(request: ScopedRequest, scope: str, owner: hub_orm.User) -> bool:
    """Whether ``request`` holds ``scope`` on resources owned by ``owner``."""
    return any(request.get_scope_filter(s)(owner, "user") for s in accepting(scope))


def may_read_output(request: ScopedRequest, owner: hub_orm.User) -> bool:
    """Whether ``request`` may read what the jobs of ``owner`` printed.

    Only with the owner's own scopes (the owner, admins), never through a
    share: a server's output can hold secrets, its own API token among them.
    """
    return may(request, READ_WORKSPACES, owner)


def may_read_job_output(request: ScopedRequest, job: Job) -> bool:
    """Whether ``request`` may read what ``job`` printed: as :func:`may_read_output` for
    its owner, or as its launcher (an editor reads their own job's output, which is
    theirs: it ran as their account), with the read scope."""
    if may_read_output(request, job.owner):
        return True
    user = request.current_user
    return (
        user is not None
        and getattr(user, "kind", None) == "user"
        and user.id == job.launcher.id
        and shared_may(request, READ_WORKSPACES, job.workspace_id)
    )


def holds(request: ScopedRequest, scope: str) -> bool:
    """Whether ``request`` holds ``scope`` (or a scope granting it) with any filter."""
    return any(s in request.parsed_scopes for s in accepting(scope))


def _grantee_id(request: ScopedRequest, scope: str) -> int | None:
    """The id of the request's user, if shares can let it act with ``scope``."""
    user = request.current_user
    if user is None or getattr(user, "kind", None) != "user" or not levels_granting(scope):
        return None
    return user.id if holds(request, scope) else None


def shared_may(request: ScopedRequest, scope: str, workspace_id: int, db: Session | None = None) -> bool:
    """Whether a share of the workspace lets ``request`` act on it with ``scope``.

    ``db``: the session to look the shares up in, if not the request's (the
    event streams decide while the hub's session is committing).
    """
    user_id = _grantee_id(request, scope)
    if user_id is None:
        return False
    return bool(Share.levels_of(db or request.db, workspace_id, user_id) & set(levels_granting(scope)))


def may_workspace(request: ScopedRequest, scope: str, ws: Workspace, *, grantees: bool = True) -> bool:
    """Whether ``request`` may act on ``ws`` with ``scope`` (as its owner's, or as a grantee's).

    ``grantees=False`` for what only the owner's scopes allow (rename, delete, share).
    """
    if may(request, scope, ws.owner):
        return True
    return grantees and shared_may(request, scope, ws.id)


def may_launch(request: ScopedRequest, ws: Workspace, *, editors_run_code: bool) -> bool:
    """Whether ``request`` may start code in ``ws``: launch a job, or let a held one run.

    The owner's scopes allow it (the owner, admins, services): the job runs as
    the owner's account. A share allows it only if ``UWSHub.editors_run_code``
    (``editors_run_code``) is True, and the job runs as the editor's own
    account (:func:`launcher_of`). Stopping jobs is :func:`may_workspace` with
    ``LAUNCH_JOBS``.
    """
    if may(request, LAUNCH_JOBS, ws.owner):
        return True
    return editors_run_code and shared_may(request, LAUNCH_JOBS, ws.id)


def launcher_of(request: ScopedRequest, ws: Workspace) -> hub_orm.User:
    """Whose account a launch in ``ws`` by ``request`` (allowed by :func:`may_launch`) runs as.

    With the owner's scopes, the owner's (JupyterHub's semantics: an admin who
    starts a user's server starts it as that user); through a share, the
    editor's own: an editor never runs code as the owner.
    """
    if may(request, LAUNCH_JOBS, ws.owner):
        return ws.owner
    user = request.current_user
    orm_user = getattr(user, "orm_user", user)
    if not isinstance(orm_user, hub_orm.User):
        raise TypeError(f"{user!r} launches through a share but is not a user")
    return orm_user


def may_run_held(request: ScopedRequest, job: Job, *, editors_run_code: bool) -> bool:
    """Whether ``request`` may let held ``job`` run, or change what it will run with:
    only who would launch it as the same account (its launcher, or the owner's scopes for
    the owner's job). Neither the owner nor another editor sets off an editor's held job,
    nor an editor the owner's."""
    if not may_launch(request, job.workspace, editors_run_code=editors_run_code):
        return False
    return launcher_of(request, job.workspace).id == job.launcher.id


def launch_refusal(ws: Workspace) -> str:
    """Why an editor may not launch in ``ws`` when editors may not launch, and what to do."""
    owner = ws.owner.name
    return (
        f"Editors may not launch jobs in {owner}'s workspace {ws.slug!r}: this hub does not let editors"
        " launch jobs (UWSHub.editors_run_code = False)."
        f" You can still read and change its files and stop its jobs. {owner} can launch the job, or share"
        " the workspace with you as a copy, which you own and can run as yourself."
    )


def held_refusal(job: Job) -> str:
    """Why ``request`` may not run (or change) held ``job``: it runs as another account."""
    return (
        f"Job {job.id} runs as {job.launcher.name}'s account: only {job.launcher.name} may let it run or change"
        " its parameters and time limit; launch a job of your own instead."
    )


def workspace_clause(request: ScopedRequest, scope: str, owner_id_column, workspace_id_column) -> ColumnElement[bool]:
    """SQL condition with the meaning of :func:`may_workspace`, on rows with
    an owner id and a workspace id column (workspaces, jobs, events)."""
    clause = owner_clause(request, scope, owner_id_column)
    user_id = _grantee_id(request, scope)
    if user_id is None:
        return clause
    return or_(clause, workspace_id_column.in_(Share.shared_with(user_id, levels_granting(scope))))


def owner_clause(request: ScopedRequest, scope: str, owner_id_column) -> ColumnElement[bool]:
    """SQL condition on ``owner_id_column``: owners ``request`` holds ``scope`` for.

    Lets list endpoints filter in the database (one query for 10,000
    workspaces) with the same meaning as :func:`may`.
    """
    return or_(*(_filter_clause(request.parsed_scopes.get(s), owner_id_column) for s in accepting(scope)))


def _filter_clause(sub_scope, owner_id_column) -> ColumnElement[bool]:
    if sub_scope is None:
        return false()
    if sub_scope is Scope.ALL:
        return true()
    conditions = []
    if sub_scope.get("user"):
        conditions.append(owner_id_column.in_(select(hub_orm.User.id).where(hub_orm.User.name.in_(sub_scope["user"]))))
    if sub_scope.get("group"):
        conditions.append(
            owner_id_column.in_(
                select(hub_orm.user_group_map.c.user_id)
                .join(hub_orm.Group, hub_orm.Group.id == hub_orm.user_group_map.c.group_id)
                .where(hub_orm.Group.name.in_(sub_scope["group"]))
            )
        )
    return or_(*conditions) if conditions else false()
