"""The API handlers' token lookups (uws_hub.tokenids) on a real JupyterHub database:
a token found once is found again by its id, and refused as soon as JupyterHub's own
lookup would refuse it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from uws_hub.tokenids import TokenIds

from ..helpers import memory_database


@pytest.fixture
def db():
    engine = memory_database()
    session = Session(engine)
    session.add(hub_orm.OAuthClient(identifier="jupyterhub"))
    session.add_all([hub_orm.User(name="ann"), hub_orm.User(name="ben")])
    session.commit()
    yield session
    session.close()
    engine.dispose()


def user(db: Session, name: str) -> hub_orm.User:
    return db.query(hub_orm.User).filter_by(name=name).one()


def test_a_token_is_found_as_jupyterhub_finds_it_and_remembered(db):
    ids = TokenIds()
    token = user(db, "ann").new_api_token(note="t")
    assert ids.find(db, token) is hub_orm.APIToken.find(db, token) is not None
    assert len(ids) == 1 and token.encode() not in repr(ids._ids).encode()  # a digest, not the token
    assert ids.find(db, token).user.name == "ann"
    assert ids.find(db, "not-a-token-at-all") is None and len(ids) == 1


def test_a_token_deleted_behind_the_session_s_back_is_refused(db):
    """A token whose row the database deleted (a cascade, another transaction) while the
    session still holds its object."""
    ids = TokenIds()
    token = user(db, "ann").new_api_token(note="t")
    orm_token = ids.find(db, token)
    db.execute(delete(hub_orm.APIToken).where(hub_orm.APIToken.id == orm_token.id))
    db.commit()
    assert ids.find(db, token) is None and len(ids) == 0


def test_a_new_token_given_the_id_of_a_deleted_one_is_not_taken_for_it(db):
    ids = TokenIds()
    token = user(db, "ann").new_api_token(note="t")
    token_id = ids.find(db, token).id
    db.execute(delete(hub_orm.APIToken).where(hub_orm.APIToken.id == token_id))
    db.commit()
    db.expunge_all()
    # SQLite gives the highest id again once its row is gone
    other = hub_orm.APIToken.new(user=user(db, "ben"), note="t")
    assert hub_orm.APIToken.find(db, other).id == token_id
    assert ids.find(db, token) is None
    assert ids.find(db, other).user.name == "ben"


def test_an_expired_token_is_refused(db):
    ids = TokenIds()
    token = user(db, "ann").new_api_token(note="t", expires_in=3600)
    token_id = ids.find(db, token).id
    past = hub_orm.APIToken.now() - timedelta(seconds=1)
    db.execute(update(hub_orm.APIToken).where(hub_orm.APIToken.id == token_id).values(expires_at=past))
    db.commit()
    db.expire_all()
    assert ids.find(db, token) is None


def test_at_most_size_tokens_are_remembered(db):
    ids = TokenIds(size=2)
    tokens = [user(db, "ann").new_api_token(note=f"t{i}") for i in range(3)]
    for token in tokens:
        assert ids.find(db, token) is not None
    assert len(ids) == 2
    assert all(ids.find(db, token) is not None for token in tokens)
