"""What a stream's recheck and its acceptor do where a real hub cannot be made to fail on
cue: a database error in the recheck, an owner the hub's session does not hold when an
event is published from its after-commit hook."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from uws_hub.apihandlers import events as events_module
from uws_hub.apihandlers.base import UWSAPIHandler
from uws_hub.apihandlers.events import EventFilter, EventStreamMixin
from uws_hub.events.bus import EventBus
from uws_hub.orm import Job, Workspace
from uws_hub.scopes import READ_WORKSPACES

from ..helpers import memory_database


class _Recheck:
    """The handler's recheck, over a hub session whose database fails."""

    caller_unchanged = UWSAPIHandler.caller_unchanged

    def __init__(self, db):
        self.db = db
        self.current_user = SimpleNamespace(kind="user", id=1)
        self.expanded_scopes = {"read:users"}
        self.log = logging.getLogger("test.recheck")

    async def get_current_user(self):
        self.db.execute("SELECT 1")  # what JupyterHub's lookup queries, failing
        raise AssertionError("unreachable")


def test_a_recheck_that_meets_a_database_error_ends_its_stream_and_rolls_the_session_back(caplog):
    def failing(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    handler = _Recheck(SimpleNamespace(execute=failing, rollback=lambda: rolled.append(True)))
    rolled: list[bool] = []
    with caplog.at_level(logging.INFO, "test.recheck"):
        assert asyncio.run(handler.caller_unchanged()) is False
    assert rolled == [True], "the shared session was left unusable for every other request"
    assert handler._jupyterhub_user is None
    # one line, no traceback (streams end together when the database goes away)
    records = [r for r in caplog.records if r.name == "test.recheck"]
    assert [r.levelno for r in records] == [logging.ERROR] and records[0].exc_info is None
    assert not handler._rechecking


class _Stream(EventStreamMixin):
    current_user = None  # (a service's stream: no workspaces of its own)

    def __init__(self, db, sharing):
        self.db = db
        self.settings = {"uws": SimpleNamespace(sharing=sharing, stream_recheck_seconds=10.0)}

    def get_scope_filter(self, scope):
        return lambda owner, kind: kind == "user" and owner.name == "alice"


def test_the_acceptor_finds_an_owner_the_hub_session_does_not_hold_from_its_after_commit_hook():
    """Events are published from the hub session's after-commit hook, where that session
    can emit no SQL: looking up an owner it does not hold there raised, and the stream
    lost the event (and the publisher's loop saw the error)."""
    engine = create_engine("sqlite://")
    hub_orm.Base.metadata.create_all(engine)
    with Session(bind=engine) as setup:
        setup.add_all([hub_orm.User(name="alice"), hub_orm.User(name="bob")])
        setup.commit()
        alice_id, bob_id = (setup.query(hub_orm.User.id).filter_by(name=n).scalar() for n in ("alice", "bob"))
    sharing = SimpleNamespace(version=0, lookup_session=lambda: Session(bind=engine))
    hub_db = Session(bind=engine)  # holds neither user
    accept = _Stream(hub_db, sharing).acceptor(EventFilter(None, None, None))
    seen: list[bool] = []

    @event.listens_for(hub_db, "after_commit")
    def publish(session):
        seen.append(accept({"owner_id": alice_id, "workspace_id": None, "job_id": None}))
        seen.append(accept({"owner_id": bob_id, "workspace_id": None, "job_id": None}))

    hub_db.add(hub_orm.Group(name="lab"))
    hub_db.commit()
    assert seen == [True, False]
    hub_db.close()


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_a_stream_recheck_interval_that_is_not_positive_is_refused(seconds):
    """0 would make every open stream recheck in a busy loop, a negative interval the same."""
    from traitlets import TraitError

    from uws_hub.app import UWSHub

    assert UWSHub().stream_recheck_seconds == 10.0
    with pytest.raises(TraitError):
        UWSHub(stream_recheck_seconds=seconds)


class _Watched:
    """A handler's :meth:`UWSAPIHandler.watch_caller` over a bus, whose caller changed."""

    watch_caller = UWSAPIHandler.watch_caller

    def __init__(self, every: float):
        self.uws = SimpleNamespace(stream_recheck_seconds=every, events=EventBus(logging.getLogger("test.recheck")))
        self.asked = 0

    async def caller_unchanged(self) -> bool:
        self.asked += 1
        return False


def test_a_stream_asks_again_at_the_configured_interval():
    """``UWSHub.stream_recheck_seconds`` is the streams' interval (failed before: they asked
    every 10 s whatever was configured, and the wait below ran out)."""

    async def main() -> _Watched:
        handler = _Watched(0.05)
        sub = handler.uws.events.subscribe(lambda event: True)
        handler.watch_caller(sub)
        await asyncio.wait_for(sub.closed.wait(), 5)
        return handler

    handler = asyncio.run(main())
    assert handler.asked == 1 and handler.caller_changed


def test_what_a_stream_learnt_about_owners_expires_at_the_configured_interval(monkeypatch):
    """The acceptor forgets whose workspaces its caller may read as often as the caller is
    rechecked (failed before: it kept the answer 10 s whatever was configured)."""
    engine = create_engine("sqlite://")
    hub_orm.Base.metadata.create_all(engine)
    with Session(bind=engine) as setup:
        setup.add(hub_orm.User(name="alice"))
        setup.commit()
        alice_id = setup.query(hub_orm.User.id).filter_by(name="alice").scalar()
    sharing = SimpleNamespace(version=0, lookup_session=lambda: Session(bind=engine))
    stream = _Stream(Session(bind=engine), sharing)
    stream.settings["uws"].stream_recheck_seconds = 1.0
    readable = {"alice"}
    stream.get_scope_filter = lambda scope: lambda owner, kind: kind == "user" and owner.name in readable
    now = [1000.0]
    monkeypatch.setattr(events_module.time, "monotonic", lambda: now[0])
    accept = stream.acceptor(EventFilter(None, None, None))
    event = {"owner_id": alice_id, "workspace_id": None, "job_id": None}
    assert accept(event)
    readable.clear()  # alice left the group the caller's scope names
    now[0] += 0.5
    assert accept(event), "asked again before the interval"
    now[0] += 1.0
    assert not accept(event)


def test_a_new_stream_decides_its_first_events_when_it_subscribes_not_in_the_commit_of_the_first():
    """The look-ups that decide whether the caller may see a workspace's events (about 2 ms
    of the hub's loop) are made when the stream subscribes, for the workspace or job it
    follows, or the caller's own workspaces; the first event, most often a launch's,
    offered in the commit that records it, finds them made (failed before: each stream
    made them at its first event, and the launch's answer and start waited for them).
    The answers are the same: a stranger's stream still gets nothing."""
    engine = memory_database()
    with Session(bind=engine) as setup:
        alice, bob = hub_orm.User(name="alice"), hub_orm.User(name="bob")
        ws = Workspace(owner=alice, slug="ws", name="ws", status="idle", directory="/x/alice/ws")
        setup.add_all([alice, bob, ws])
        setup.flush()
        job = Job(
            workspace_id=ws.id, owner_id=alice.id, job_type="minimal", resource="local", server_name="ws", resources={}
        )
        setup.add(job)
        setup.commit()
        ids = {"alice": alice.id, "bob": bob.id, "ws": ws.id, "job": job.id}
    opened: list[int] = []

    def lookup_session():
        opened.append(1)
        return Session(bind=engine)

    sharing = SimpleNamespace(version=0, lookup_session=lookup_session)
    event = {"owner_id": ids["alice"], "workspace_id": ids["ws"], "job_id": ids["job"]}
    cases = [
        ("alice", EventFilter(ids["ws"], None, None), True),
        ("alice", EventFilter(None, ids["job"], None), True),
        ("alice", EventFilter(None, None, None), True),
        ("bob", EventFilter(ids["ws"], None, None), False),
        ("bob", EventFilter(None, ids["job"], None), False),
    ]
    for caller, f, sees in cases:
        with Session(bind=engine) as hub_db:
            stream = _Stream(hub_db, sharing)
            stream.current_user = SimpleNamespace(kind="user", id=ids[caller], name=caller)
            # a user's own scopes: their own workspaces, and shares may give them others
            stream.parsed_scopes = {READ_WORKSPACES: {"user": {caller}}}
            stream.get_scope_filter = lambda scope, caller=caller: lambda owner, kind: owner.name == caller
            accept = stream.acceptor(f)
            opened.clear()
            assert accept(event) is sees, (caller, f)
            assert opened == [], f"{caller}'s stream ({f}) looked up at its first event"
    engine.dispose()
