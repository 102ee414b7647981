"""Lists of workspaces: which ones (search, owner, whose), in which order, as SQL.

One meaning for the REST API (``GET /hub/api/workspaces``), My workspaces and
the admin's All workspaces: each reads a :class:`WorkspaceList` from its
request's arguments (refusing unknown values with a 400 that lists the known
ones) and hands its clause and order to the workspace service's ``page`` and
``count``, so that a list of 10,000 workspaces is one query per page, filtered
and sorted in the database. Who may see what is :mod:`uws_hub.access`'s: the
clause here only narrows what the reader may see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jupyterhub import orm as hub_orm
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true

from ..errors import BadRequest
from ..orm import Share, Workspace
from ..states import ShareLevel

#: what a list sorts by, and its direction unless ``order`` says otherwise
SORTS = {
    # stored when a job is launched (its model's ``last_used_at``), indexed with the id
    "last_used": (Workspace.last_used_at, "desc"),
    "created": (Workspace.created_at, "desc"),
    "name": (func.lower(Workspace.name), "asc"),
    "size": (Workspace.disk_usage_bytes, "desc"),
}
#: how the pages name the sorts
SORT_LABELS = {"last_used": "last used", "name": "name", "size": "size", "created": "created"}
#: how the pages name each sort's directions: its own (``SORTS``), then the other
ORDER_LABELS = {
    "last_used": ("Most recently used first", "Least recently used first"),
    "created": ("Newest first", "Oldest first"),
    "name": ("A to Z", "Z to A"),
    "size": ("Largest first", "Smallest first"),
}
ORDERS = ("asc", "desc")
#: whose workspaces: the reader's own, those shared with them, everyone else's they
#: may see (an admin's view)
WHOSE = ("mine", "shared", "others")
#: the longest search a list takes
MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class WorkspaceList:
    """What a request asks a list of workspaces for."""

    q: str = ""
    owner: str | None = None
    whose: tuple[str, ...] = WHOSE
    sort: str = "last_used"
    order: str | None = None

    @classmethod
    def parse(
        cls,
        argument: Callable[[str], str | None],
        *,
        default_whose: tuple[str, ...] = WHOSE,
        default_sort: tuple[str, str | None] = ("last_used", None),
    ) -> WorkspaceList:
        """From a request's arguments (``handler.get_argument(name, None)``); 400 on unknown values.

        ``default_sort``: (sort, order) without a ``sort`` argument (the API keeps
        its order of old, oldest first; the pages show the last used first).
        """
        q = (argument("q") or "").strip()
        if len(q) > MAX_QUERY_CHARS:
            raise BadRequest(f"The search (q) is longer than {MAX_QUERY_CHARS} characters")
        if any(ord(c) < 32 for c in q):
            raise BadRequest("The search (q) must not contain control characters")
        sort = argument("sort") or default_sort[0]
        if sort not in SORTS:
            raise BadRequest(f"Unknown sort {sort!r}; one of {list(SORTS)}")
        order = argument("order") or (None if argument("sort") else default_sort[1])
        if order is not None and order not in ORDERS:
            raise BadRequest(f"Unknown order {order!r}; one of {list(ORDERS)}")
        whose_arg = argument("whose")
        whose = tuple(w for w in whose_arg.split(",") if w) if whose_arg is not None else default_whose
        if not whose or any(w not in WHOSE for w in whose):
            raise BadRequest(f"Unknown whose {whose_arg!r}; one or more of {list(WHOSE)}")
        owner = argument("owner") or None
        return cls(q=q, owner=owner, whose=whose, sort=sort, order=order)

    @property
    def descending(self) -> bool:
        return (self.order or SORTS[self.sort][1]) == "desc"

    @property
    def reversed(self) -> bool:
        """Whether the list runs the other way than its sort's own direction."""
        return self.order not in (None, SORTS[self.sort][1])

    @staticmethod
    def order_choices() -> dict[str, tuple[str, str, str]]:
        """What the pages' order menu offers for each sort: the ``order`` that reverses
        it, and the words for its own direction (no ``order``) and for the reverse."""
        return {
            sort: ("asc" if direction == "desc" else "desc", *ORDER_LABELS[sort])
            for sort, (_, direction) in SORTS.items()
        }

    def clause(self, reader_id: int | None) -> ColumnElement[bool]:
        """The rows this list asks for (``reader_id``: the reading user's id, for ``whose``)."""
        conditions: list[ColumnElement[bool]] = []
        if self.q:
            words = [w for w in self.q.lower().split() if w]
            for word in words:
                conditions.append(
                    or_(
                        func.lower(Workspace.name).contains(word, autoescape=True),
                        Workspace.slug.contains(word, autoescape=True),
                        func.lower(Workspace.description).contains(word, autoescape=True),
                    )
                )
        if self.owner is not None:
            conditions.append(owned_by(Workspace.owner_id, self.owner))
        if set(self.whose) != set(WHOSE):
            mine: ColumnElement[bool]
            shared: ColumnElement[bool]
            if reader_id is None:
                # a service: nothing is its own, nothing is shared with it
                mine = shared = false()
            else:
                mine = Workspace.owner_id == reader_id
                levels = [level.value for level in ShareLevel]
                shared = and_(not_(mine), Workspace.id.in_(Share.shared_with(reader_id, levels)))
            kinds = {"mine": mine, "shared": shared, "others": and_(not_(mine), not_(shared))}
            conditions.append(or_(*(kinds[w] for w in self.whose)))
        return and_(true(), *conditions)

    def ordering(self) -> list:
        column = SORTS[self.sort][0]
        if self.descending:
            # ties (same name, size, time) in a stable order, the same way round
            return [column.desc(), Workspace.id.desc()]
        return [column.asc(), Workspace.id.asc()]


def owned_by(owner_id_column, name: str) -> ColumnElement[bool]:
    """Rows (workspaces, jobs) whose owner is the user named ``name``."""
    return owner_id_column.in_(select(hub_orm.User.id).where(hub_orm.User.name == name))
