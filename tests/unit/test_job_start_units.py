"""A start's first write (uws_hub.jobs.reconcile.JobSteps._start): the job's attempt, committed
before anything of the start runs, with an UPDATE of its own (uws_hub.orm.write_at_once)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from uws_hub import orm
from uws_hub.jobs.reconcile import JobSteps
from uws_hub.orm import Job, Workspace, write_at_once

from ..helpers import memory_database


class _Started(Exception):
    """Raised where the start would go on (the test looks at what came before)."""


@pytest.fixture
def job_db():
    engine = memory_database()
    db = Session(bind=engine)
    owner = hub_orm.User(name="owner")
    ws = Workspace(owner=owner, slug="ws", name="ws", status="idle", directory="/x/owner/ws")
    db.add_all([owner, ws])
    db.flush()
    job = Job(workspace_id=ws.id, owner_id=owner.id, job_type="minimal", resource="local", server_name="ws")
    db.add(job)
    db.commit()
    yield db, job
    db.close()
    engine.dispose()


def stored_attempts(db: Session, job_id: int) -> int:
    with Session(bind=db.get_bind()) as other:
        return other.scalar(select(Job.attempts).where(Job.id == job_id))


def test_a_starts_attempt_is_committed_before_the_start_without_the_orms_flush(job_db):
    """The ORM's flush of a job (its relationships compared) cost the start about half a
    millisecond of the hub's loop on the way to every server (failed before: the attempt
    went through a flush)."""
    db, job = job_db
    flushed: list[object] = []
    event.listen(db, "before_flush", lambda session, *args: flushed.extend(session.dirty))

    def launch_for(j):
        raise _Started  # the start's next step: what the hub wrote is committed by now

    jobs = SimpleNamespace(db=db, check_launch=lambda request: None, launch_request=lambda j: None)
    jobs.launch_for = launch_for
    steps = JobSteps(jobs, None, None, None, logging.getLogger("test"), batch=None)
    before = job.updated_at
    with pytest.raises(_Started):
        steps._start(job)
    assert stored_attempts(db, job.id) == 1 == job.attempts
    assert job not in flushed and not db.dirty
    assert job.updated_at > before
    with pytest.raises(_Started):
        steps._start(job)  # a retried start
    assert stored_attempts(db, job.id) == 2 == job.attempts


def test_a_row_written_at_once_is_as_stored_and_a_rollback_forgets_it(job_db):
    db, job = job_db
    write_at_once(db, job, {"reason": "written at once"})
    assert job.reason == "written at once" and not db.dirty
    db.rollback()
    assert job.reason is None and stored_attempts(db, job.id) == 0


def test_a_write_at_once_builds_no_statement(job_db, monkeypatch):
    """Building the UPDATE, then SQLAlchemy's cache key of it, cost more than running it
    (a launch's and every start's write): it is built once a table, for any columns."""
    db, job = job_db
    job_id, built = job.id, []
    monkeypatch.setattr(orm, "update", lambda *args: built.append(args))
    write_at_once(db, job, {"reason": "first", "attempts": 3})
    write_at_once(db, job.workspace, {"status_reason": "second"})
    assert built == []
    db.commit()
    db.expunge_all()
    job = db.get(Job, job_id)
    assert (job.reason, job.attempts, job.workspace.status_reason) == ("first", 3, "second")
