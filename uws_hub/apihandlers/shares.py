"""REST API: sharing workspaces.

- ``GET/POST /hub/api/workspaces/{id}/shares``, ``DELETE .../shares/{share}``:
  the owner's view (scope ``custom:uws:share:workspaces`` on the owner).
- ``GET /hub/api/shares``: what the caller received (pending, accepted, declined).
- ``POST /hub/api/shares/{id}/accept`` and ``/decline``: copy invitations.
- ``GET /hub/api/share-recipients?q=``: users and groups to share with,
  only those the caller may find (``UWSHub.share_search``), without e-mail
  addresses unless ``UWSHub.share_search_show_email``.
"""

from __future__ import annotations

from typing import Literal

from jupyterhub import orm as hub_orm
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import access
from ..errors import BadRequest, Forbidden
from ..inputs import Text
from ..scopes import READ_WORKSPACES, SHARE_WORKSPACES, WRITE_WORKSPACES, requires
from ..sharing import recipients
from ..sharing.models import share_model
from ..states import ShareKind, ShareStatus
from .base import UWSAPIHandler, parse_id


class ShareCreateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["collaborate", "copy"] = "collaborate"
    user: Text | None = Field(None, min_length=1, max_length=255)
    group: Text | None = Field(None, min_length=1, max_length=255)
    level: Literal["viewer", "editor"] | None = None
    name: Text | None = Field(None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.user is None) == (self.group is None):
            raise ValueError("give exactly one of user or group")
        if self.kind == ShareKind.copy.value:
            if self.group is not None:
                raise ValueError("copies are sent to users, not groups")
            if self.level is not None:
                raise ValueError("a copy has no level")
        elif self.name is not None:
            raise ValueError("name is for copies only")
        return self


class ShareCallerMixin(UWSAPIHandler):
    def caller(self) -> hub_orm.User:
        """The user making the request (shares are received and accepted by users)."""
        return self.calling_user("receive shares")


class WorkspaceSharesAPIHandler(UWSAPIHandler):
    @requires(SHARE_WORKSPACES)
    def get(self, workspace_id):
        ws = self.find_workspace(workspace_id, SHARE_WORKSPACES, grantees=False)
        sharing = self.uws.sharing
        items = [share_model(s) for s in sharing.for_workspace(ws)]
        offset, limit = self.get_api_pagination()
        self.write_json(self.paginated_model(items[offset : offset + limit], offset, limit, len(items)))

    @requires(SHARE_WORKSPACES)
    async def post(self, workspace_id):
        ws = self.find_workspace(workspace_id, SHARE_WORKSPACES, grantees=False)
        body = self.parse_body(ShareCreateModel)
        sharing = self.uws.sharing
        user = group = None
        if body.user is not None:
            user = hub_orm.User.find(self.db, body.user)
            if user is None:
                raise BadRequest(f"No such user: {body.user}")
        else:
            group = hub_orm.Group.find(self.db, body.group)
            if group is None:
                raise BadRequest(f"No such group: {body.group}")
        if body.kind == ShareKind.copy.value:
            share, created = self.uws.copies.invite_copy(ws, user, body.name, self.actor), True
        else:
            share, created = sharing.share(ws, body.level or "viewer", self.actor, user=user, group=group)
            await sharing.apply_posix(ws)
        self.write_json(share_model(share), status=201 if created else 200)


class WorkspaceShareAPIHandler(UWSAPIHandler):
    @requires(SHARE_WORKSPACES)
    async def delete(self, workspace_id, share_id):
        ws = self.find_workspace(workspace_id, SHARE_WORKSPACES, grantees=False)
        sharing = self.uws.sharing
        share = sharing.find_for_workspace(ws, parse_id(share_id, "share"))
        model = share_model(share)
        sharing.revoke(share, self.actor)
        await sharing.apply_posix(ws)
        self.write_json(model)


class SharesAPIHandler(ShareCallerMixin):
    @requires(READ_WORKSPACES)
    def get(self):
        user = self.caller()
        statuses = self.status_filter(ShareStatus) or [s.value for s in ShareStatus]
        sharing = self.uws.sharing
        items = [share_model(s) for s in sharing.received(user, statuses)]
        offset, limit = self.get_api_pagination()
        self.write_json(self.paginated_model(items[offset : offset + limit], offset, limit, len(items)))


class ShareActionAPIHandler(ShareCallerMixin):
    @requires(WRITE_WORKSPACES)
    def post(self, share_id, action):
        user = self.caller()
        if not access.may(self, WRITE_WORKSPACES, user):
            raise Forbidden(f"Accepting and declining shares requires the scope {WRITE_WORKSPACES}")
        sharing = self.uws.sharing
        share = sharing.find_received(parse_id(share_id, "share"), user)
        if action == "accept":
            share = self.uws.copies.accept(share, user)
            self.write_json(share_model(share), status=202)
        else:
            share = self.uws.copies.decline(share, user)
            self.write_json(share_model(share))


class ShareRecipientsAPIHandler(ShareCallerMixin):
    @requires(READ_WORKSPACES)
    def get(self):
        user = self.caller()
        query = self.get_argument("q", "").strip()
        if not query:
            raise BadRequest("Give a search with ?q= (part of a name)")
        if len(query) > 255:
            raise BadRequest("The search is too long")
        self.write_json(
            recipients.search(
                self.db, user, query, mode=self.uws.share_search, show_email=self.uws.share_search_show_email
            )
        )


default_handlers = [
    (r"/api/workspaces/([^/]+)/shares", WorkspaceSharesAPIHandler),
    (r"/api/workspaces/([^/]+)/shares/([^/]+)", WorkspaceShareAPIHandler),
    (r"/api/shares", SharesAPIHandler),
    (r"/api/shares/([^/]+)/(accept|decline)", ShareActionAPIHandler),
    (r"/api/share-recipients", ShareRecipientsAPIHandler),
]
