"""Who may see and do what: JupyterHub scopes applied to workspace owners.

Authorization lives here and in ``@needs_scope`` only; no handler compares
user names. A request may act on a workspace if the filter of a scope that
grants the action (see :func:`uws_hub.scopes.accepting`) admits the
workspace's owner (``!user=<owner>``, ``!group=<a group of the owner>``, or no
filter at all), exactly as JupyterHub decides for its own resources.
"""

from __future__ import annotations

from typing import Protocol

from jupyterhub import orm as hub_orm
from jupyterhub.scopes import Scope
from sqlalchemy import ColumnElement, false, or_, select, true

from .scopes import accepting


class ScopedRequest(Protocol):
    """What this module needs of a handler: JupyterHub's parsed scopes."""

    parsed_scopes: dict

    def get_scope_filter(self, req_scope: str): ...


def may(request: ScopedRequest, scope: str, owner: hub_orm.User) -> bool:
    """Whether ``request`` holds ``scope`` on resources owned by ``owner``."""
    return any(request.get_scope_filter(s)(owner, "user") for s in accepting(scope))


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
        conditions.append(
            owner_id_column.in_(
                select(hub_orm.User.id).where(hub_orm.User.name.in_(sub_scope["user"]))
            )
        )
    if sub_scope.get("group"):
        conditions.append(
            owner_id_column.in_(
                select(hub_orm.user_group_map.c.user_id)
                .join(hub_orm.Group, hub_orm.Group.id == hub_orm.user_group_map.c.group_id)
                .where(hub_orm.Group.name.in_(sub_scope["group"]))
            )
        )
    return or_(*conditions) if conditions else false()
