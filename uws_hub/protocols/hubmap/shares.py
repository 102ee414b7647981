"""HuBMAP's sharing (``shared_workspaces``) on uws-hub's copy-shares, and ``users``.

HuBMAP shares a workspace by sending a copy: the recipient accepts or
declines, and the id in the paths is the recipient's workspace's. uws-hub's
copy-shares are the same invitation; the recipient's workspace is made when
they accept (checked against their disk quota then), in the background.
Until it exists, the share stands for it with a negative id (``-<share
id>``), which the paths take as well; once copied, the share shows the
recipient's workspace and its id. Declined invitations are gone, as in
HuBMAP. Who may share, accept and withdraw is uws-hub's
(:class:`uws_hub.sharing.ShareService`, :mod:`uws_hub.access`).
"""

from __future__ import annotations

from jupyterhub import orm as hub_orm
from sqlalchemy import or_, select

from ... import access
from ...authenticators.identity import display_name_of, email_of
from ...orm import Job, Share, Workspace
from ...scopes import READ_WORKSPACES, SHARE_WORKSPACES, WRITE_WORKSPACES, requires
from ...sharing import recipients
from ...states import ShareKind, ShareStatus
from . import models
from .base import parse_int
from .handlers import TranslatingHandler
from .models import HubMAPError

#: the shares HuBMAP's API shows: copies not declined
SHOWN = (ShareStatus.pending.value, ShareStatus.accepted.value)


class SharesBase(TranslatingHandler):
    def user_ref(self, user: hub_orm.User) -> dict[str, str]:
        """A user in a share; the other party's e-mail address only where the hub shows
        addresses (``UWSHub.share_search_show_email``)."""
        shown = user.id == self.caller.id or self.uws.share_search_show_email
        email = (email_of(user.user_info) or "") if shown else ""
        return models.user_ref(user.name, display_name_of(user.user_info, user.name), email)

    @staticmethod
    def hubmap_id(share: Share) -> int:
        """The id HuBMAP's paths use: the recipient's workspace once copied, else ``-<share id>``."""
        return share.copy_workspace_id or -share.id

    async def model(self, share: Share) -> dict:
        source = share.workspace
        copy = Workspace.find(self.db, share.copy_workspace_id) if share.copy_workspace_id else None
        # the invitation shows its recipient what it offers; once accepted, they hold the copy
        # (or will, or had it and deleted it, or it failed), never the workspace it came from,
        # whose files (then and later) are none of theirs
        offered = share.status == ShareStatus.pending.value or share.user_id != self.caller.id
        source_details = await self.details(source) if offered else models.no_details()
        original = models.shared_workspace(
            source.id, source.name, source.description, source_details, self.user_ref(source.owner)
        )
        if copy is not None:
            shared = models.shared_workspace(
                copy.id, copy.name, copy.description, await self.details(copy), self.user_ref(share.user)
            )
        else:
            shared = models.shared_workspace(
                -share.id, share.copy_name or source.name, source.description, source_details, self.user_ref(share.user)
            )
        # how its last job ran, likewise: the offered workspace's last job when the share was
        # sent (as HuBMAP's server records it then: the sharer's later jobs are none of the
        # recipient's business), then the copy's (if any)
        last_of = None
        if offered:
            last_of = select(Job).where(Job.workspace_id == source.id, Job.created_at <= share.created_at)
        elif copy is not None:
            last_of = select(Job).where(Job.workspace_id == copy.id)
        last = None if last_of is None else self.db.scalar(last_of.order_by(Job.id.desc()).limit(1))
        return models.share_model(
            original=original,
            shared=shared,
            last_resource_options=models.options_of(last.resources or {}, self.compat.resource_options) if last else {},
            last_job_type=models.job_type_id_of(last.job_type, self.offered_job_types()) if last else "",
            is_accepted=share.status == ShareStatus.accepted.value,
            created_at=share.created_at,
        )

    def shares(self, hubmap_id: int | None = None) -> tuple[list[Share], list[Share]]:
        """(sent, received) copy shares of the caller, all or the one with ``hubmap_id``."""
        me = self.caller
        query = select(Share).where(Share.kind == ShareKind.copy.value, Share.status.in_(SHOWN)).order_by(Share.id)
        if hubmap_id is not None:
            query = query.where(Share.id == -hubmap_id if hubmap_id < 0 else Share.copy_workspace_id == hubmap_id)
        query = query.where(or_(Share.owner_id == me.id, Share.user_id == me.id))
        found = list(self.db.scalars(query))
        return [s for s in found if s.owner_id == me.id], [s for s in found if s.user_id == me.id]

    def find(self, shared_workspace_id: str) -> Share:
        number = parse_int(shared_workspace_id)
        sent, received = self.shares(number) if number else ([], [])
        if not sent and not received:
            raise HubMAPError(404, f"Shared workspace {shared_workspace_id} not found.")
        return (received or sent)[0]


class SharedWorkspacesHandler(SharesBase):
    @requires(READ_WORKSPACES)
    async def get(self, shared_workspace_id=None):
        number = None
        if shared_workspace_id is not None:
            number = parse_int(shared_workspace_id) or 0
        sent, received = self.shares(number)
        accepted = self.get_query_argument("is_accepted", None)
        if accepted is not None:
            wanted = models.parse_bool(accepted, "is_accepted")
            sent = [s for s in sent if (s.status == ShareStatus.accepted.value) == wanted]
            received = [s for s in received if (s.status == ShareStatus.accepted.value) == wanted]
        self.answer(
            models.listing(
                "original_workspaces",
                [await self.model(s) for s in sent],
                "Shared workspace",
                shared_workspaces=[await self.model(s) for s in received],
            )
        )

    @requires(SHARE_WORKSPACES)
    async def post(self):
        body = self.json_body()
        if "original_workspace_id" not in body or "shared_user_ids" not in body:
            raise HubMAPError(400, "Missing required fields.")
        original_id = body["original_workspace_id"]
        number = parse_int(original_id)
        ws = self.workspace(str(number) if number is not None else str(original_id), SHARE_WORKSPACES, grantees=False)
        user_ids = body["shared_user_ids"]
        if not isinstance(user_ids, list):
            raise HubMAPError(400, "shared_user_ids is not a list.")
        numbers = [parse_int(u) if isinstance(u, int) else None for u in user_ids]
        users = {
            u.id: u
            for u in self.db.scalars(
                select(hub_orm.User).where(hub_orm.User.id.in_([n for n in numbers if n is not None]))
            )
        }
        if not numbers or len(set(numbers)) != len(numbers) or any(n not in users for n in numbers):
            raise HubMAPError(400, "Invalid user id provided.")
        created = [self.uws.copies.invite_copy(ws, users[n], None, self.actor) for n in numbers]
        self.answer(models.success("Successful.", shared_workspaces=[await self.model(s) for s in created]))


class SharedWorkspaceHandler(SharedWorkspacesHandler):
    async def post(self, shared_workspace_id):
        raise HubMAPError(405, "")

    @requires(READ_WORKSPACES)
    async def delete(self, shared_workspace_id):
        share = self.find(shared_workspace_id)
        if share.status == ShareStatus.accepted.value:
            raise HubMAPError(400, f"Shared workspace {shared_workspace_id} has been accepted and cannot be deleted.")
        sharing = self.uws.sharing
        if share.user_id == self.caller.id:
            if not access.may(self, WRITE_WORKSPACES, self.caller):
                raise HubMAPError(403, f"Declining shares requires the scope {WRITE_WORKSPACES}")
            self.uws.copies.decline(share, self.caller)
        else:
            self.workspace(str(share.workspace_id), SHARE_WORKSPACES, grantees=False)
            sharing.revoke(share, self.actor)
        self.answer(models.success(f"Shared workspace {shared_workspace_id} queued for deletion."))


class SharedWorkspaceActionHandler(SharesBase):
    @requires(WRITE_WORKSPACES)
    def put(self, shared_workspace_id, action):
        if action != "accept":
            raise HubMAPError(400, "Invalid PUT type passed.")
        share = self.find(shared_workspace_id)
        if share.user_id != self.caller.id or not access.may(self, WRITE_WORKSPACES, self.caller):
            raise HubMAPError(404, f"Shared workspace {shared_workspace_id} not found.")
        self.uws.copies.accept(share, self.caller)
        self.answer(models.success("Successful."))


class UsersHandler(SharesBase):
    @requires(READ_WORKSPACES)
    def get(self):
        """Users to share with, found as uws-hub's share dialog finds them
        (``UWSHub.share_search``; e-mail addresses only with ``share_search_show_email``)."""
        query = self.get_query_argument("search", "").strip()
        if len(query) > 255:
            raise HubMAPError(400, "The search is too long.")
        found = recipients.search(
            self.db,
            self.caller,
            query,
            mode=self.uws.share_search,
            show_email=self.uws.share_search_show_email,
            limit=self.settings["api_page_max_limit"],
        )["users"]
        ids = dict(
            self.db.execute(
                select(hub_orm.User.name, hub_orm.User.id).where(hub_orm.User.name.in_([u["name"] for u in found]))
            ).all()
        )
        users = [
            models.user_model(ids[u["name"]], u["name"], u["display_name"], u.get("email") or "")
            for u in found
            if u["name"] in ids
        ]
        self.answer(models.listing("users", users, "Users"))


#: the routes of this module, relative to the API's base path (see :mod:`.routes`)
patterns = [
    (r"shared_workspaces", SharedWorkspacesHandler),
    (r"shared_workspaces/([^/]+)", SharedWorkspaceHandler),
    (r"shared_workspaces/([^/]+)/([^/]+)", SharedWorkspaceActionHandler),
    (r"users", UsersHandler),
]
