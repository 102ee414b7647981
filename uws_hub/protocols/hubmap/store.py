"""What HuBMAP's API keeps per workspace that uws-hub itself has no use for.

HuBMAP's workspaces have a default job type (the portal starts it when it
renews a session) and remember the file and symlink names their create
request asked for (``request_workspace_details``; the portal finds a
notebook and a shared workspace's datasets there). They live in a table of
the facade's own (``uws_hubmap_workspaces``, with its own metadata as the
local accounts' table, migrated with uws-hub's), one row per workspace that
has either, deleted with the workspace.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ...orm import NAMING_CONVENTION, Workspace


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class HubMAPWorkspace(Base):
    __tablename__ = "uws_hubmap_workspaces"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey(Workspace.id, ondelete="CASCADE"), primary_key=True
    )
    #: a HuBMAP job type id (see HubMAPCompat.job_type_ids)
    default_job_type: Mapped[str | None] = mapped_column(String(63), default=None)
    #: {"files": [{"name"}], "symlinks": [as sent]}
    request_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class HubMAPStore:
    """Reads and writes the facade's rows in the hub's session (the caller commits)."""

    def __init__(self, db: Session):
        self.db = db

    def get(self, workspace_ids: list[int]) -> dict[int, HubMAPWorkspace]:
        if not workspace_ids:
            return {}
        rows = self.db.scalars(select(HubMAPWorkspace).where(HubMAPWorkspace.workspace_id.in_(workspace_ids)))
        return {row.workspace_id: row for row in rows}

    def row(self, workspace_id: int) -> HubMAPWorkspace:
        row = self.db.get(HubMAPWorkspace, workspace_id)
        if row is None:
            row = HubMAPWorkspace(workspace_id=workspace_id)
            self.db.add(row)
        return row

    def default_job_type(self, workspace_id: int) -> str | None:
        row = self.db.get(HubMAPWorkspace, workspace_id)
        return row.default_job_type if row is not None else None
