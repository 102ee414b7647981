"""REST API: quotas and usage.

- ``GET /hub/api/quotas/{user}``: a user's limits, override and usage (the
  user, and whoever may read their workspaces or set their quotas);
  ``PUT`` replaces their override (scope ``custom:uws:admin:quotas``, which
  JupyterHub's ``admin:users`` grants too). A PUT takes the override the way a
  GET shows it, ``{"override": {...}}`` (``{"override": null}`` removes it); the
  flat shape of earlier releases (the fields at the top) is still accepted.
- ``GET/PUT /hub/api/quotas/groups/{group}``: a group's override (admins).
- ``GET /hub/api/usage``: usage of every user the caller may see (the
  caller; admins: everyone), sortable, paginated.
"""

from __future__ import annotations

from jupyterhub import orm as hub_orm
from jupyterhub.scopes import needs_scope
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_

from .. import access
from ..errors import BadRequest, NotFound
from ..quotas.limits import SORT_KEYS, Limits
from ..scopes import ADMIN_QUOTAS, READ_WORKSPACES, accepting
from .base import UWSAPIHandler

MAX_64 = 2**63 - 1


class LimitsModel(BaseModel):
    """A quota override: every field optional, null (or missing) = not overridden."""

    model_config = ConfigDict(extra="forbid")

    disk_bytes: int | None = Field(None, ge=0, le=MAX_64)
    core_hours: float | None = Field(None, ge=0, le=1e12)
    concurrent_jobs: int | None = Field(None, ge=0, le=1_000_000)
    max_cpus: int | None = Field(None, ge=0, le=1_000_000)
    max_memory_bytes: int | None = Field(None, ge=0, le=MAX_64)
    max_gpus: int | None = Field(None, ge=0, le=1_000_000)


class OverrideModel(BaseModel):
    """A PUT's body as a GET shows the override: ``{"override": {...} or null}``."""

    model_config = ConfigDict(extra="forbid")

    override: LimitsModel | None


def reads_quotas(method):
    """The caller may read quotas with a workspaces scope or the quota admin scope."""
    return needs_scope(*accepting(READ_WORKSPACES), *accepting(ADMIN_QUOTAS), post_filter=True)(method)


class OverrideHandlerMixin(UWSAPIHandler):
    def parse_override(self) -> Limits:
        """The override a PUT sets: ``{"override": {...}}``, or (deprecated) the fields flat."""
        body = self.get_json_body()
        if isinstance(body, dict) and "override" in body:
            override = self.parse_body(OverrideModel).override
            return Limits.from_model(override.model_dump()) if override is not None else Limits()
        return Limits.from_model(self.parse_body(LimitsModel).model_dump())


class QuotaAPIHandler(OverrideHandlerMixin):
    def find_user(self, name: str) -> hub_orm.User:
        user = hub_orm.User.find(self.db, name)
        if user is None or not (access.may(self, READ_WORKSPACES, user) or access.may(self, ADMIN_QUOTAS, user)):
            raise NotFound(f"No such user: {name}")
        return user

    def quota_model(self, user: hub_orm.User) -> dict:
        quotas = self.uws.quotas
        override = quotas.override_for(user=user)
        return {
            "user": user.name,
            "limits": quotas.limits_for(user).to_model(),
            "override": Limits.of(override).to_model() if override is not None else None,
            "defaults": quotas.defaults.to_model(),
            "usage": quotas.usage_model(user),
        }

    @reads_quotas
    def get(self, name):
        self.write_json(self.quota_model(self.find_user(name)))

    @needs_scope(*accepting(ADMIN_QUOTAS), post_filter=True)
    def put(self, name):
        user = self.find_user(name)
        if not access.may(self, ADMIN_QUOTAS, user):
            raise NotFound(f"No such user: {name}")
        self.uws.quotas.set_override(self.parse_override(), self.actor, user=user)
        self.uws.quotas.check_disk_warning(user)
        self.write_json(self.quota_model(user))


class GroupQuotaAPIHandler(OverrideHandlerMixin):
    def find_group(self, name: str) -> hub_orm.Group:
        group = hub_orm.Group.find(self.db, name)
        if group is None or not any(self.get_scope_filter(s)(group, "group") for s in accepting(ADMIN_QUOTAS)):
            raise NotFound(f"No such group: {name}")
        return group

    def group_model(self, group: hub_orm.Group) -> dict:
        override = self.uws.quotas.override_for(group=group)
        return {
            "group": group.name,
            "override": Limits.of(override).to_model() if override is not None else None,
            "defaults": self.uws.quotas.defaults.to_model(),
        }

    @needs_scope(*accepting(ADMIN_QUOTAS), post_filter=True)
    def get(self, name):
        self.write_json(self.group_model(self.find_group(name)))

    @needs_scope(*accepting(ADMIN_QUOTAS), post_filter=True)
    def put(self, name):
        group = self.find_group(name)
        self.uws.quotas.set_override(self.parse_override(), self.actor, group=group)
        self.write_json(self.group_model(group))


class UsageAPIHandler(UWSAPIHandler):
    @reads_quotas
    def get(self):
        sort = self.get_argument("sort", "name")
        if sort not in SORT_KEYS:
            raise BadRequest(f"Unknown sort {sort!r}; one of {list(SORT_KEYS)}")
        order = self.get_argument("order", "asc")
        if order not in ("asc", "desc"):
            raise BadRequest("order is asc or desc")
        where = or_(
            access.owner_clause(self, READ_WORKSPACES, hub_orm.User.id),
            access.owner_clause(self, ADMIN_QUOTAS, hub_orm.User.id),
        )
        offset, limit = self.get_api_pagination()
        items, total = self.uws.quotas.usage_list(where, sort, order == "desc", offset, limit)
        self.write_json(self.paginated_model(items, offset, limit, total))


default_handlers = [
    (r"/api/quotas/groups/([^/]+)", GroupQuotaAPIHandler),
    (r"/api/quotas/([^/]+)", QuotaAPIHandler),
    (r"/api/usage", UsageAPIHandler),
]
