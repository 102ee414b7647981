"""REST API: workspaces (``/hub/api/workspaces``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import access
from ..errors import BadRequest, Forbidden
from ..inputs import MultilineText, Text
from ..models import workspace_model
from ..orm import Workspace
from ..scopes import READ_WORKSPACES, WRITE_WORKSPACES, requires
from ..states import WorkspaceStatus
from ..workspaces.listing import WorkspaceList
from ..workspaces.service import SeedFile
from .base import UWSAPIHandler


class SeedFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


class WorkspaceCreateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=255)
    description: MultilineText = Field("", max_length=10_000)
    files: list[SeedFileModel] = Field(default_factory=list, max_length=1000)


class WorkspaceUpdateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, min_length=1, max_length=255)
    description: MultilineText | None = Field(None, max_length=10_000)


class WorkspacesAPIHandler(UWSAPIHandler):
    #: a creation's body holds its seed files (:mod:`uws_hub.bodies`)
    takes_seed_files = True

    @requires(READ_WORKSPACES)
    def get(self):
        where = access.workspace_clause(self, READ_WORKSPACES, Workspace.owner_id, Workspace.id)
        statuses = self.status_filter(WorkspaceStatus, many=False)
        if statuses is not None:
            where = where & Workspace.status.in_(statuses)
        listing = WorkspaceList.parse(lambda name: self.get_argument(name, None), default_sort=("created", "asc"))
        where = where & listing.clause(self.reader_id)
        offset, limit = self.get_api_pagination()
        workspaces = self.uws.workspaces
        items = workspaces.page(where, offset, limit, listing.ordering())
        models = self.uws.workspace_models(items)
        self.write_json(self.paginated_model(models, offset, limit, workspaces.count(where)))

    @requires(WRITE_WORKSPACES)
    async def post(self):
        body = self.parse_body(WorkspaceCreateModel)
        if self.current_user.kind != "user":
            raise BadRequest("Only users can own workspaces; use a user's token")
        owner = self.current_user.orm_user
        if not access.may(self, WRITE_WORKSPACES, owner):
            raise Forbidden(f"Creating workspaces requires the scope {WRITE_WORKSPACES}")
        ws = await self.uws.workspaces.create(
            owner,
            body.name,
            body.description,
            [SeedFile(f.path, f.content, f.encoding) for f in body.files],
        )
        self.write_json(workspace_model(ws, None, None), status=201)


class WorkspaceAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self, workspace_id):
        ws = self.find_workspace(workspace_id)
        self.write_json(self.uws.workspace_models([ws])[0])

    @requires(WRITE_WORKSPACES)
    def patch(self, workspace_id):
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES, grantees=False)
        body = self.parse_body(WorkspaceUpdateModel)
        ws = self.uws.workspaces.update(ws, body.name, body.description)
        self.write_json(self.uws.workspace_models([ws])[0])

    @requires(WRITE_WORKSPACES)
    def delete(self, workspace_id):
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES, grantees=False)
        ws = self.uws.workspaces.delete(ws, self.actor)
        self.write_json(self.uws.workspace_models([ws])[0], status=202)


default_handlers = [
    (r"/api/workspaces", WorkspacesAPIHandler),
    (r"/api/workspaces/([^/]+)", WorkspaceAPIHandler),
]
