"""Rows found by id (uws_hub.orm.find_by_id, what every request on a workspace or job uses):
the same object, values and session state as the ORM's ``db.get``, without its load."""

from __future__ import annotations

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import event, inspect, update
from sqlalchemy.orm import Session

from uws_hub.orm import Job, Workspace, find_by_id

from ..helpers import memory_database


@pytest.fixture
def db():
    engine = memory_database()
    session = Session(engine, expire_on_commit=False)
    owner = hub_orm.User(name="ann")
    session.add(owner)
    session.flush()
    ws = Workspace(owner_id=owner.id, name="W", slug="w", directory="/w", status="idle", description="d")
    session.add(ws)
    session.flush()
    session.add(Job(workspace_id=ws.id, owner_id=owner.id, job_type="t", resource="local", server_name="w"))
    session.commit()
    session.expunge_all()
    yield session
    session.close()
    engine.dispose()


def columns(row) -> dict:
    return {c.key: getattr(row, c.key) for c in inspect(type(row)).column_attrs}


@pytest.mark.parametrize("cls", [Workspace, Job])
def test_a_row_found_by_id_is_the_one_the_orm_loads(db, cls):
    found = find_by_id(db, cls, 1)
    state = inspect(found)
    assert state.persistent and found in db and not db.dirty and not state.modified
    assert db.get(cls, 1) is found  # the session's object for that row from now on
    values = columns(found)
    db.expunge_all()
    assert values == columns(db.get(cls, 1))
    assert find_by_id(db, cls, 2) is None


def test_its_relationships_load_and_its_changes_are_written(db):
    ws = find_by_id(db, Workspace, 1)
    assert ws.owner.name == "ann" and [j.id for j in ws.jobs] == [1]
    ws.name = "renamed"
    assert db.dirty
    db.commit()
    db.expunge_all()
    assert db.get(Workspace, 1).name == "renamed" and db.get(Workspace, 1).slug == "w"
    # a rollback expires it as it does the ORM's: it is read again when next used
    ws = find_by_id(db, Workspace, 1)
    db.execute(update(Workspace).where(Workspace.id == 1).values(description="later"))
    db.rollback()
    assert ws.description == "d"


def test_it_reads_the_row_without_the_orm_s_load(db):
    """The ORM's load of one row costs the event loop twice the statement (every API
    request on a workspace or job did it): the row is read with one statement instead."""
    loads = []
    event.listen(Workspace, "load", lambda target, context: loads.append(target))
    assert Workspace.find(db, 1) is not None and Job.find(db, 1) is not None
    assert loads == []


def test_what_the_session_holds_or_would_flush_first_is_the_orm_s_answer(db):
    held = db.get(Workspace, 1)
    assert find_by_id(db, Workspace, 1) is held
    # a workspace added but not flushed: found as db.get finds it (its autoflush writes it)
    new = Workspace(owner_id=1, name="N", slug="n", directory="/n", status="idle")
    db.add(new)
    assert find_by_id(db, Workspace, 2) is new and new.id == 2
    # deleted in the session, not flushed: what db.get says
    db.delete(new)
    assert find_by_id(db, Workspace, 2) is db.get(Workspace, 2)
    db.flush()
    assert find_by_id(db, Workspace, 2) is None
    db.rollback()
