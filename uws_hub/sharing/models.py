"""Shares as the API and the pages show them."""

from __future__ import annotations

from typing import Any

from ..orm import Share, isoformat
from ..states import ShareKind


def share_model(share: Share) -> dict[str, Any]:
    ws = share.workspace
    return {
        "id": share.id,
        "kind": share.kind,
        "level": share.level,
        "status": share.status,
        "workspace_id": share.workspace_id,
        "workspace": {"id": ws.id, "owner": ws.owner.name, "slug": ws.slug, "name": ws.name},
        "owner": ws.owner.name,
        "user": share.user.name if share.user is not None else None,
        "group": share.group.name if share.group is not None else None,
        "created_by": share.created_by,
        "created_at": isoformat(share.created_at),
        "responded_at": isoformat(share.responded_at),
        "copy": None
        if share.kind != ShareKind.copy.value
        else {
            "name": share.copy_name,
            "state": share.copy_state,
            "attempts": share.copy_attempts,
            "error": share.copy_error,
            "bytes": share.copy_bytes,
            "workspace_id": share.copy_workspace_id,
        },
    }
