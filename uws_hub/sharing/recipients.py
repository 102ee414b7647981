"""Finding users and groups to share with (``GET /hub/api/users/search``)."""

from __future__ import annotations

from typing import Any

from jupyterhub import orm as hub_orm
from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from ..authenticators.identity import display_name_of, email_of


def search(
    db: Session, caller: hub_orm.User, query: str, *, mode: str = "all", show_email: bool = False, limit: int = 20
) -> dict[str, Any]:
    """Users and groups matching ``query`` (name or display name) that ``caller`` may find.

    ``mode`` "all": every user and group of the hub; "groups": only
    the caller's groups and their members. E-mail addresses only when
    ``show_email``. The caller is not listed.
    """
    pattern = f"%{query.lower()}%"
    users_q = select(hub_orm.User).where(
        hub_orm.User.id != caller.id,
        or_(func.lower(hub_orm.User.name).like(pattern), func.lower(cast(hub_orm.User.user_info, Text)).like(pattern)),
    )
    groups_q = select(hub_orm.Group).where(func.lower(hub_orm.Group.name).like(pattern))
    if mode == "groups":
        my_groups = [g.id for g in caller.groups]
        users_q = users_q.where(
            hub_orm.User.id.in_(
                select(hub_orm.user_group_map.c.user_id).where(hub_orm.user_group_map.c.group_id.in_(my_groups))
            )
        )
        groups_q = groups_q.where(hub_orm.Group.id.in_(my_groups))
    needle = query.lower()
    users = []
    for user in db.scalars(users_q.order_by(hub_orm.User.name)):
        display = display_name_of(user.user_info, user.name)
        # the JSON text also holds the e-mail address: match names only
        if needle not in user.name.lower() and needle not in display.lower():
            continue
        model = {"name": user.name, "display_name": display}
        if show_email:
            model["email"] = email_of(user.user_info)
        users.append(model)
        if len(users) >= limit:
            break
    groups = [{"name": g.name} for g in db.scalars(groups_q.order_by(hub_orm.Group.name).limit(limit))]
    return {"users": users, "groups": groups}
