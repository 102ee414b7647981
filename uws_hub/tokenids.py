"""Which API token row a request's token is, remembered: one light query a request instead of
JupyterHub's lookup.

JupyterHub finds a token (``orm.APIToken.find``) by its 4-character prefix: an ORM
query of every row with that prefix, then a hash comparison with each. That is
a fifth of the event loop's time for a launch during a burst of them. Here the
row's id and hashed value are remembered by the token's SHA-256 digest (never
the token itself), and each request checks, with one query on the primary key,
that the row is still there, still holds that hashed value (an id the database
gave again to a new token holds another: its salt is random) and has not
expired; the row's object is then the session's, held here so that the session
does not read it again (JupyterHub's own object, as its lookup would return it).
A token deleted (revoked, its user or service or OAuth client deleted, by the
ORM or by the database's cascades) or expired is refused at the next request,
exactly as JupyterHub refuses it: its id is forgotten and JupyterHub's lookup
decides.
"""

from __future__ import annotations

import hashlib

from jupyterhub import orm as hub_orm
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

_tokens = hub_orm.APIToken.__table__
#: the hashed value of an unexpired token by its id (built once: SQLAlchemy takes about as
#: long to build a statement as SQLite to answer it)
_HASHED = select(_tokens.c.hashed).where(
    _tokens.c.id == bindparam("token_id"),
    or_(_tokens.c.expires_at.is_(None), _tokens.c.expires_at >= bindparam("now", type_=_tokens.c.expires_at.type)),
)


class TokenIds:
    """API token ids by their token's digest; at most ``size`` remembered (the oldest go first)."""

    def __init__(self, size: int = 10_000):
        self.size = size
        #: digest -> the token's row: its id, its hashed value, its object (held: the
        #: session's identity map keeps only objects something holds)
        self._ids: dict[bytes, tuple[int, str, hub_orm.APIToken]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def find(self, db: Session, token: str) -> hub_orm.APIToken | None:
        """``orm.APIToken.find(db, token)``, remembered (see the module's text). A text
        with a NUL is no token: PostgreSQL cannot compare with one (the query failed,
        and the hub's session, which every request shares, was rolled back)."""
        if "\x00" in token:
            return None
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        known = self._ids.get(key)
        if known is not None:
            token_id, hashed, _held = known
            # on the session's connection: the session's own execute costs a third more
            row = db.connection().execute(_HASHED, {"token_id": token_id, "now": hub_orm.APIToken.now()}).first()
            orm_token = db.get(hub_orm.APIToken, token_id) if row is not None and row.hashed == hashed else None
            if orm_token is not None and orm_token.client_id:
                return orm_token
            del self._ids[key]
        orm_token = hub_orm.APIToken.find(db, token)
        # (JupyterHub's lookup deletes a token without a client and finds none)
        if orm_token is not None and orm_token.client_id:
            if len(self._ids) >= self.size:
                del self._ids[next(iter(self._ids))]
            self._ids[key] = (orm_token.id, orm_token.hashed, orm_token)
        return orm_token
