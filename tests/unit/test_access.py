"""The access rules in-process: the SQL clause the lists use and the Python check
one workspace gets must agree, on every generated case (hypothesis)."""

from __future__ import annotations

import functools
import inspect
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyterhub import orm as hub_orm
from jupyterhub._memoize import FrozenDict
from jupyterhub.scopes import Scope, check_scope_filter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from tornado.web import HTTPError

from uws_hub import access
from uws_hub.orm import Share, Workspace
from uws_hub.scopes import ADMIN_SCOPE, LAUNCH_JOBS, READ_WORKSPACES, SHARE_WORKSPACES, WRITE_WORKSPACES, requires

from ..helpers import memory_database

USERS = ["ann", "ben", "cat", "dan"]
GROUPS = ["g1", "g2"]
ACTIONS = [READ_WORKSPACES, WRITE_WORKSPACES, LAUNCH_JOBS, SHARE_WORKSPACES]


class FakeRequest:
    """What access needs of a handler, with JupyterHub's own scope filter."""

    def __init__(self, db, user, parsed_scopes):
        self.db = db
        self.current_user = user
        self.parsed_scopes = parsed_scopes
        self.expanded_scopes = set(parsed_scopes)

    def get_scope_filter(self, req_scope):  # as jupyterhub.handlers.base.BaseHandler's
        if req_scope not in self.parsed_scopes:
            return lambda orm_resource, kind: False
        return functools.partial(check_scope_filter, self.parsed_scopes[req_scope])


# parsed scopes as JupyterHub's parse_scopes makes them: Scope.ALL, or a frozen filter
sub_scopes = st.one_of(
    st.just(Scope.ALL),
    st.fixed_dictionaries({"user": st.frozensets(st.sampled_from(USERS), min_size=1)}).map(FrozenDict),
    st.fixed_dictionaries({"group": st.frozensets(st.sampled_from(GROUPS), min_size=1)}).map(FrozenDict),
    st.fixed_dictionaries(
        {
            "user": st.frozensets(st.sampled_from(USERS), min_size=1),
            "group": st.frozensets(st.sampled_from(GROUPS), min_size=1),
        }
    ).map(FrozenDict),
)

cases = st.fixed_dictionaries(
    {
        "members": st.dictionaries(st.sampled_from(GROUPS), st.frozensets(st.sampled_from(USERS))),
        "workspaces": st.lists(st.sampled_from(USERS), min_size=1, max_size=5),
        # (workspace index, grantee user or group, level)
        "shares": st.lists(
            st.tuples(st.integers(0, 4), st.sampled_from(USERS + GROUPS), st.sampled_from(["viewer", "editor"])),
            max_size=6,
        ),
        "caller": st.sampled_from(USERS + [None]),
        "scopes": st.dictionaries(st.sampled_from(ACTIONS + [ADMIN_SCOPE]), sub_scopes, max_size=4),
    }
)


@pytest.fixture(scope="module")
def engine():
    engine = memory_database()
    yield engine
    engine.dispose()


def build(engine, case):
    db = Session(engine)
    for table in (Share, Workspace, hub_orm.user_group_map, hub_orm.Group, hub_orm.User):
        db.execute(delete(table))
    users = {name: hub_orm.User(name=name) for name in USERS}
    groups = {name: hub_orm.Group(name=name) for name in GROUPS}
    db.add_all([*users.values(), *groups.values()])
    for group, members in case["members"].items():
        groups[group].users = [users[m] for m in sorted(members)]
    workspaces = []
    for i, owner in enumerate(case["workspaces"]):
        ws = Workspace(owner=users[owner], slug=f"ws{i}", name=f"ws{i}", status="idle", directory=f"/x/{owner}/ws{i}")
        db.add(ws)
        workspaces.append(ws)
    db.flush()
    seen = set()
    for index, grantee, level in case["shares"]:
        ws = workspaces[index % len(workspaces)]
        if (ws.id, grantee) in seen or grantee == ws.owner.name:
            continue
        seen.add((ws.id, grantee))
        db.add(
            Share(
                workspace=ws,
                owner_id=ws.owner_id,
                kind="collaborate",
                level=level,
                status="accepted",
                user=users.get(grantee),
                group=groups.get(grantee),
                created_by=ws.owner.name,
            )
        )
    db.commit()
    caller = case["caller"]
    user = None if caller is None else SimpleNamespace(kind="user", id=users[caller].id, name=caller)
    return db, workspaces, FakeRequest(db, user, case["scopes"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_the_sql_clause_and_the_python_check_agree(engine, case):
    db, workspaces, request = build(engine, case)
    try:
        for scope in ACTIONS:
            for grantees in (True, False):
                if grantees:
                    where = access.workspace_clause(request, scope, Workspace.owner_id, Workspace.id)
                else:
                    where = access.owner_clause(request, scope, Workspace.owner_id)
                listed = set(db.scalars(select(Workspace.id).where(where)))
                allowed = {ws.id for ws in workspaces if access.may_workspace(request, scope, ws, grantees=grantees)}
                assert listed == allowed, (scope, grantees, case)
    finally:
        db.close()


def test_a_grantee_with_a_read_only_token_stays_read_only(engine):
    """An editor's share does not widen what the token holds: no write scope, no write."""
    case = {
        "members": {},
        "workspaces": ["ann"],
        "shares": [(0, "ben", "editor")],
        "caller": "ben",
        "scopes": {READ_WORKSPACES: FrozenDict({"user": frozenset({"ben"})})},
    }
    db, [ws], request = build(engine, case)
    assert access.may_workspace(request, READ_WORKSPACES, ws)
    assert not access.may_workspace(request, WRITE_WORKSPACES, ws)
    assert not access.may_workspace(request, READ_WORKSPACES, ws, grantees=False)
    db.close()


def test_a_scope_check_reads_no_signature_at_a_request(monkeypatch):
    """JupyterHub's ``@needs_scope`` reads the handler method's signature at every request
    (the names of its arguments say what a filter applies to); ``requires`` reads it once,
    and a request is let through, or refused, as before."""

    class Handler:
        request = SimpleNamespace(path="/hub/api/workspaces/1/jobs")
        db = None

        def __init__(self, scopes):
            self.current_user = SimpleNamespace(name="ann")
            self.expanded_scopes = self.parsed_scopes = FrozenDict({s: Scope.ALL for s in scopes})

        @requires(LAUNCH_JOBS)
        def post(self, workspace_id, extra="x"):
            return workspace_id, extra

    read = []
    monkeypatch.setattr(inspect, "_signature_from_function", lambda *a, **k: read.append(a))
    assert Handler([LAUNCH_JOBS]).post("1") == ("1", "x") and read == []
    with pytest.raises(HTTPError) as refused:
        Handler([READ_WORKSPACES]).post("1")
    assert refused.value.status_code == 403 and read == []
