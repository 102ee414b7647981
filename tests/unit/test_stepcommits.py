"""JupyterHub's spawn with one commit a step (uws_hub.jobs.stepcommits): what the
other coroutines see is what they saw with a commit each time, and the failure paths
keep what was committed."""

from __future__ import annotations

import asyncio

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import create_engine, event, text

from uws_hub.jobs.stepcommits import OneCommitAStep


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/hub.sqlite"
    session = hub_orm.new_session_factory(url)()
    commits: list[int] = []
    event.listen(session, "after_commit", lambda session: commits.append(1))
    session.commits = commits
    # another connection: what the rest of the hub (or another process) reads
    other = create_engine(url)
    session.names_stored = lambda: sorted(
        row[0] for row in other.connect().execute(text("SELECT name FROM users")).all()
    )
    yield session
    session.close()
    other.dispose()


def add(db, name: str) -> hub_orm.User:
    user = hub_orm.User(name=name)
    db.add(user)
    db.commit()
    return user


async def test_the_commits_of_one_step_are_one_commit_made_before_anything_else_runs(db):
    seen_between: list[list[str]] = []
    ids: list[int | None] = []

    async def spawn():
        ids.append(add(db, "a").id)  # its id at once, as from the commit
        add(db, "b")
        await asyncio.sleep(0)
        add(db, "c")
        return "started"

    async def other():
        seen_between.append(db.names_stored())

    db.commits.clear()
    task = asyncio.ensure_future(OneCommitAStep(db, spawn()))
    asyncio.ensure_future(other())  # runs between the two steps
    assert await task == "started"
    assert len(db.commits) == 2  # one a step (three before)
    assert ids[0] is not None
    assert seen_between == [["a", "b"]]  # committed when the step ended
    assert db.names_stored() == ["a", "b", "c"]


async def test_a_step_that_fails_after_a_commit_keeps_what_it_committed(db):
    async def spawn():
        add(db, "a")
        raise RuntimeError("pre-spawn hook failed")

    with pytest.raises(RuntimeError, match="pre-spawn hook"):
        await OneCommitAStep(db, spawn())
    assert db.names_stored() == ["a"]


async def test_a_rollback_in_a_step_keeps_what_the_step_committed_before_it(db):
    async def spawn():
        add(db, "a")
        db.add(hub_orm.User(name="b"))  # not committed: rolled back
        db.rollback()
        await asyncio.sleep(0)
        return db.names_stored()

    assert await OneCommitAStep(db, spawn()) == ["a"]
    assert db.query(hub_orm.User).filter_by(name="b").first() is None


async def test_a_commit_that_fails_at_a_steps_end_fails_where_the_coroutine_waits(db):
    caught: list[BaseException] = []
    commit = db.commit

    def failing_commit():
        raise RuntimeError("database is locked")

    async def spawn():
        add(db, "a")
        try:
            await asyncio.sleep(0)
        except RuntimeError as e:
            caught.append(e)
            db.rollback()
            raise

    db.commit = failing_commit
    try:
        with pytest.raises(RuntimeError, match="locked"):
            await OneCommitAStep(db, spawn())
    finally:
        db.commit = commit
    assert [str(e) for e in caught] == ["database is locked"]
    assert "commit" in db.__dict__  # the session's own (the test's) is left as it was


async def test_a_cancel_reaches_the_coroutine_where_it_waits(db):
    cleaned: list[str] = []

    async def spawn():
        add(db, "a")
        try:
            await asyncio.sleep(10)
        finally:
            add(db, "cleaned")
            cleaned.append("yes")

    task = asyncio.ensure_future(OneCommitAStep(db, spawn()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["yes"]
    assert db.names_stored() == ["a", "cleaned"]
    assert "commit" not in db.__dict__ and "rollback" not in db.__dict__
