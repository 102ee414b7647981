"""Long requests after a grant ends: the event streams (SSE and WebSocket), a followed
batch log and a blocking UWS ``GET`` ask again who holds them open, as JupyterHub asks
at every request. A token deleted, the admin flag removed: whoever held the stream open
(the owner, a viewer, an editor, an admin) stops getting the workspace's events and log
lines, and a reconnection is refused or sees only what it may. Strangers, user admins and
anonymous callers never see them to begin with."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from ..authutil import login
from ..helpers import MULTIUSER_CONFIG, SSEReader, close_stream
from ..hubutil import wait_for

TICKER = [sys.executable, "-c", "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.5)"]
#: the hub's recheck (``UWSHub.stream_recheck_seconds``; 10 s by default, which the tests waited out)
RECHECK = 1
#: far longer than the hub's recheck, and shorter than the default one (10 s): a stream
#: that outlives it was not ended by the recheck this hub was configured with
ENDS_WITHIN = 8
MAX_WAIT = 45
#: admins of the hub (one a test: the tests take the flag away)
ADMINS = {
    "uwsadmin",
    "uwsadmstream",
    "uwsadmhubmap",
    "uwsadmdemoted",
    "uwsadmlog1",
    "uwsadmlog2",
    "uwsadmwait",
    "uwsadmmetrics",
    "uwsadmkeep",
}

CONFIG = (
    MULTIUSER_CONFIG
    + f"""
c.UWSHub.job_types["ticker"] = {{"display_name": "Ticker", "interactive": False, "cmd": {TICKER!r}}}
c.IVOAUWS.max_wait_seconds = {MAX_WAIT}
c.UWSHub.stream_recheck_seconds = {RECHECK}
c.Authenticator.admin_users = {ADMINS!r}
c.JupyterHub.load_roles.append({{"name": "lab-readers", "scopes": ["custom:uws:read:workspaces!group=lab"],
                                 "users": ["uwslabreader"]}})
c.HubMAPCompat.enabled = True
c.HubMAPCompat.job_type_ids = {{"minimal": "minimal"}}
c.JupyterHub.load_roles.append({{"name": "user-admins", "scopes": ["admin:users"], "users": ["uwsuseradmin"]}})
# activity recorded a second apart (30 s by default): a recheck that counted would show
c.JupyterHub.activity_resolution = 1
"""
)


@pytest.fixture(scope="module")
def rhub(make_hub, system_users):
    hub = make_hub(CONFIG)
    hub.alice = hub.add_user("uwsalice")
    hub.boss = hub.add_user("uwsadmin")  # an admin, who may take the flag from others
    hub.add_user("uwspasserby")
    hub.add_user("uwsbob")
    hub.add_user("uwscarol")
    return hub


def new_token(hub, name: str) -> tuple[str, str]:
    """A new token of ``name``'s (created if need be): (token, id)."""
    if hub.request("GET", f"users/{name}", hub.admin_token).status_code == 404:
        hub.api("POST", f"users/{name}", json={}, expect=201)
    made = hub.api("POST", f"users/{name}/tokens", json={"note": "a stream"}, expect=201)
    return made["token"], made["id"]


def shared_workspace(hub) -> dict:
    """A workspace of alice's with bob as its viewer and carol as its editor."""
    ws = hub.api("POST", "workspaces", hub.alice, json={"name": f"streams {uuid.uuid4().hex[:6]}"}, expect=201)
    for user, level in (("uwsbob", "viewer"), ("uwscarol", "editor")):
        hub.api("POST", f"workspaces/{ws['id']}/shares", hub.alice, json={"user": user, "level": level}, expect=201)
    return ws


def touch(hub, ws: dict) -> None:
    """Events of the workspace: alice shares it with a passer-by, and takes it back."""
    shares = f"workspaces/{ws['id']}/shares"
    share = hub.api("POST", shares, hub.alice, json={"user": "uwspasserby", "level": "viewer"}, expect=201)
    hub.api("DELETE", f"{shares}/{share['id']}", hub.alice, expect=200)


class WSReader:
    """The events WebSocket read in a thread; ``ended`` once the hub closed it."""

    def __init__(self, hub, token: str, query: str = ""):
        self.conn = websocket.create_connection(
            hub.url.replace("http", "ws") + "/hub/api/events/ws" + query,
            header=[f"Authorization: token {token}"],
            timeout=120,
        )
        self.events: list[dict] = []
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while message := self.conn.recv():
                self.events.append(json.loads(message))
        except (websocket.WebSocketException, OSError, ValueError):
            pass
        self.ended.set()

    def close(self):
        self.conn.close()


def of(events: list[dict], ws: dict) -> list[dict]:
    return [e for e in events if e.get("workspace_id") == ws["id"]]


def watch(hub, ws: dict, tokens: dict[str, str]) -> dict[str, tuple[SSEReader, WSReader]]:
    """Both streams of each caller, once each has an event of ``ws`` (so each could read it)."""
    streams = {who: (SSEReader(hub, token), WSReader(hub, token)) for who, token in tokens.items()}
    touch(hub, ws)
    for who, (sse, wsr) in streams.items():
        wait_for(lambda s=sse, r=wsr: of(s.events, ws) and of(r.events, ws), 15, what=f"the {who}'s events")
    return streams


def wait_until_ended(hub, ws: dict, streams: dict[str, tuple[SSEReader, WSReader]]) -> None:
    """Every stream ends (events of ``ws`` keep coming meanwhile: an open stream would get them)."""

    def ended():
        touch(hub, ws)
        return all(not sse._thread.is_alive() and wsr.ended.is_set() for sse, wsr in streams.values())

    open_ones = lambda: [w for w, (s, r) in streams.items() if s._thread.is_alive() or not r.ended.is_set()]  # noqa: E731
    try:
        wait_for(ended, ENDS_WITHIN, interval=1, what="the streams to end")
    except AssertionError:
        raise AssertionError(f"still open after the grant ended: {open_ones()}") from None


def close_all(streams) -> None:
    for sse, wsr in streams.values():
        sse.close()
        wsr.close()


def test_open_streams_end_when_their_token_is_deleted(rhub):
    ws = shared_workspace(rhub)
    made = {
        who: new_token(rhub, name)
        for who, name in {
            "owner": "uwsalice",
            "viewer": "uwsbob",
            "editor": "uwscarol",
            "admin": "uwsadmstream",
        }.items()
    }
    streams = watch(rhub, ws, {who: token for who, (token, _) in made.items()})
    try:
        names = {"owner": "uwsalice", "viewer": "uwsbob", "editor": "uwscarol", "admin": "uwsadmstream"}
        for who, (_, token_id) in made.items():
            rhub.api("DELETE", f"users/{names[who]}/tokens/{token_id}", expect=204)
        wait_until_ended(rhub, ws, streams)
        for who, (token, _) in made.items():
            assert rhub.request("GET", "events", token).status_code == 403, who
    finally:
        close_all(streams)


def test_open_streams_end_when_the_admin_flag_is_removed(rhub):
    ws = shared_workspace(rhub)
    token, _ = new_token(rhub, "uwsadmdemoted")
    useradmin, _ = new_token(rhub, "uwsuseradmin")
    stranger, _ = new_token(rhub, "uwsstranger")
    streams = watch(rhub, ws, {"admin": token})
    others = {
        who: (SSEReader(rhub, t), WSReader(rhub, t)) for who, t in (("user admin", useradmin), ("stranger", stranger))
    }
    try:
        rhub.api("PATCH", "users/uwsadmdemoted", rhub.boss, json={"admin": False}, expect=200)
        wait_until_ended(rhub, ws, streams)
        # reconnected, the same token sees only what is shared with its user now
        other = rhub.api("POST", "workspaces", rhub.alice, json={"name": f"other {uuid.uuid4().hex[:6]}"}, expect=201)
        rhub.api("POST", f"workspaces/{other['id']}/shares", rhub.alice, json={"user": "uwsadmdemoted"}, expect=201)
        again = SSEReader(rhub, token, "?last_event_id=0")
        touch(rhub, ws)
        touch(rhub, other)
        wait_for(lambda: len(of(again.events, other)) >= 3, 15, what="the reconnected stream's events")
        again.close()
        assert of(again.events, ws) == []
        # a user admin and a stranger never saw the workspace; anonymous is refused
        for who, (sse, wsr) in others.items():
            assert of(sse.events, ws) == [] and of(wsr.events, ws) == [], who
        assert rhub.request("GET", "events").status_code == 403
    finally:
        close_all(streams)
        close_all(others)


def test_streams_whose_caller_did_not_change_stay_open(rhub):
    """The recheck ends a stream only once its caller changed: the owner's, a viewer's, an
    editor's and an admin's streams (one with a token that expires in an hour), and a
    page's panel with the login cookie, stay open across several rechecks and keep getting
    the workspace's events, while others' grants change meanwhile (a passer-by's share,
    given and taken back every second)."""
    ws = shared_workspace(rhub)
    tokens = {
        who: new_token(rhub, name)[0]
        for who, name in {"owner": "uwsalice", "viewer": "uwsbob", "editor": "uwscarol", "admin": "uwsadmkeep"}.items()
    }
    tokens["expiring"] = rhub.api(
        "POST", "users/uwsadmkeep/tokens", json={"note": "expiring", "expires_in": 3600}, expect=201
    )["token"]
    password = "a long password for tests"
    rhub.api("POST", "accounts", json={"username": "uwskeeppanel", "password": password}, expect=201)
    rhub.api("POST", f"workspaces/{ws['id']}/shares", rhub.alice, json={"user": "uwskeeppanel"}, expect=201)
    session = login(rhub, "uwskeeppanel", password).session
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    panel_events: list[dict] = []
    panel = session.get(f"{rhub.url}/hub/api/events?_xsrf={xsrf}", stream=True, timeout=120)
    assert panel.status_code == 200, panel.text

    def read_panel():
        try:
            for line in panel.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("data:"):
                    panel_events.append(json.loads(line[5:]))
        except (requests.RequestException, AttributeError, ValueError):
            pass

    panel_reader = threading.Thread(target=read_panel, daemon=True)
    panel_reader.start()
    streams = watch(rhub, ws, tokens)
    try:
        # several rechecks pass
        deadline = time.monotonic() + 4.5 * RECHECK
        while time.monotonic() < deadline:
            touch(rhub, ws)
            time.sleep(1)
        seen = {who: (len(of(sse.events, ws)), len(of(wsr.events, ws))) for who, (sse, wsr) in streams.items()}
        seen_panel = len(of(panel_events, ws))
        touch(rhub, ws)
        for who, (sse, wsr) in streams.items():
            wait_for(
                lambda s=sse, r=wsr, w=who: len(of(s.events, ws)) > seen[w][0] and len(of(r.events, ws)) > seen[w][1],
                15,
                what=f"the {who}'s events after the rechecks",
            )
            assert sse._thread.is_alive() and not wsr.ended.is_set(), who
        wait_for(lambda: len(of(panel_events, ws)) > seen_panel, 15, what="the panel's events after the rechecks")
        assert panel_reader.is_alive()
    finally:
        close_all(streams)
        close_stream(panel)


def test_an_open_stream_is_not_its_users_activity(rhub):
    """A stream's rechecks ask JupyterHub who holds it, as a request does, and JupyterHub
    records a request's token use as its user's activity: a stream left open in a
    forgotten tab kept its user active, never idle, for as long as it stayed open. Only
    the opening counts; the user's (and token's) last activity stays put while the
    stream rechecks, and the stream stays open."""
    token, token_id = new_token(rhub, "uwsidle")

    def last_activity() -> tuple[str, str]:
        user = rhub.api("GET", "users/uwsidle")
        return user["last_activity"], rhub.api("GET", f"users/uwsidle/tokens/{token_id}")["last_activity"]

    sse, wsr = SSEReader(rhub, token), WSReader(rhub, token)
    try:
        wait_for(lambda: last_activity()[0] is not None, 15, what="the opening's activity")
        time.sleep(1.5)  # past the activity resolution: the opening's record is done
        opened = last_activity()
        time.sleep(3.5 * RECHECK)  # several rechecks
        assert sse._thread.is_alive() and not wsr.ended.is_set()
        assert last_activity() == opened
    finally:
        sse.close()
        wsr.close()


def subscriber_count(hub, admin: str) -> float:
    r = hub.request("GET", "/hub/metrics", admin)
    assert r.status_code == 200, r.text
    return next(
        s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "uws_event_subscribers"
    )


def ticker_job(hub) -> tuple[dict, dict]:
    ws = hub.api("POST", "workspaces", hub.alice, json={"name": f"ticker {uuid.uuid4().hex[:6]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", hub.alice, json={"job_type": "ticker"}, expect=202)
    assert hub.wait_job(job["id"], hub.alice, {"running", "failed"})["status"] == "running"
    return ws, job


@pytest.mark.parametrize("end", ["token deleted", "admin flag removed"])
def test_a_followed_log_ends_when_the_grant_ends(rhub, end):
    name = "uwsadmlog1" if end == "token deleted" else "uwsadmlog2"
    token, token_id = new_token(rhub, name)
    ws, job = ticker_job(rhub)
    try:
        with requests.get(
            f"{rhub.url}/hub/api/jobs/{job['id']}/log/stream",
            headers={"Authorization": f"token {token}"},
            stream=True,
            timeout=ENDS_WITHIN,
        ) as follow:
            assert follow.status_code == 200
            lines = follow.iter_lines(chunk_size=None, decode_unicode=True)
            assert next(line for line in lines if line.startswith("data:")) == "data: tick"
            if end == "token deleted":
                rhub.api("DELETE", f"users/{name}/tokens/{token_id}", expect=204)
            else:
                rhub.api("PATCH", f"users/{name}", rhub.boss, json={"admin": False}, expect=200)
            # the job ticks on; the follow ends
            rest = []
            deadline = time.monotonic() + ENDS_WITHIN
            for line in lines:
                rest.append(line)
                assert time.monotonic() < deadline, "the log is still followed after the grant ended"
        assert not any(line.startswith("event: end") for line in rest)
        # the stranger, the user admin, a viewer and an editor never follow it; nor anonymous
        shares = f"workspaces/{ws['id']}/shares"
        for user, level in (("uwsbob", "viewer"), ("uwscarol", "editor")):
            rhub.api("POST", shares, rhub.alice, json={"user": user, "level": level}, expect=201)
        for who in ("uwsstranger", "uwsuseradmin", "uwsbob", "uwscarol"):
            caller, _ = new_token(rhub, who)
            assert rhub.request("GET", f"jobs/{job['id']}/log/stream", caller).status_code in (403, 404), who
        assert rhub.request("GET", f"jobs/{job['id']}/log/stream").status_code == 403
    finally:
        rhub.api("POST", f"jobs/{job['id']}/stop", rhub.alice)


def test_a_blocking_uws_get_is_refused_when_its_token_is_deleted_meanwhile(rhub):
    name = "uwsadmwait"
    token, token_id = new_token(rhub, name)
    _, job = ticker_job(rhub)
    answer: dict = {}

    def wait():
        answer["r"] = requests.get(
            f"{rhub.url}/hub/api/uws/ticker/{job['id']}?WAIT=-1",
            headers={"Authorization": f"token {token}"},
            timeout=MAX_WAIT + 30,
        )

    admin, _ = new_token(rhub, "uwsadmmetrics")
    subscribers = lambda: subscriber_count(rhub, admin)  # noqa: E731
    before = subscribers()
    waiting = threading.Thread(target=wait)
    try:
        waiting.start()
        wait_for(lambda: subscribers() > before, 15, what="the GET to wait")
        rhub.api("DELETE", f"users/{name}/tokens/{token_id}", expect=204)
        waiting.join()
        # the job still runs: without the recheck the wait ran out and answered the job
        assert answer["r"].status_code == 403, answer["r"].text[:300]
    finally:
        rhub.api("POST", f"jobs/{job['id']}/stop", rhub.alice)


def test_hubmaps_job_websocket_ends_when_its_token_is_deleted(rhub):
    name = "uwsadmhubmap"
    token, token_id = new_token(rhub, name)
    ws = rhub.api("POST", "workspaces", rhub.alice, json={"name": f"hubmap {uuid.uuid4().hex[:6]}"}, expect=201)
    job = rhub.api("POST", f"workspaces/{ws['id']}/jobs", rhub.alice, json={"job_type": "minimal"}, expect=202)
    url = rhub.url.replace("http", "ws", 1) + f"/hub/api/hubmap/jobs/{job['id']}"
    try:
        conn = websocket.create_connection(f"{url}?token={token}", timeout=ENDS_WITHIN)
        assert set(json.loads(conn.recv())) == {"status", "current_job_details"}
        rhub.api("DELETE", f"users/{name}/tokens/{token_id}", expect=204)
        # the job runs on (events of it would come); the socket is closed (a timeout here: it was not)
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                conn.recv()
                assert rhub.api("GET", f"jobs/{job['id']}", rhub.alice, expect=200)["status"] != "completed"
        # a stranger and a user admin never open it (nor anonymous)
        for who in ("uwsstranger", "uwsuseradmin"):
            caller, _ = new_token(rhub, who)
            with pytest.raises(websocket.WebSocketBadStatusException) as e:
                websocket.create_connection(f"{url}?token={caller}", timeout=30)
            assert e.value.status_code == 404, who
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(url, timeout=30)
        assert e.value.status_code == 401
    finally:
        rhub.api("POST", f"jobs/{job['id']}/stop", rhub.alice)


def test_a_pages_live_panel_ends_when_the_account_is_disabled(rhub):
    """The pages' panels follow the events with the login cookie: disabling the account
    (which ends its browser sessions) ends the stream too."""
    ws = shared_workspace(rhub)
    password = "a long password for tests"
    rhub.api("POST", "accounts", json={"username": "uwspanel", "password": password}, expect=201)
    rhub.api("POST", f"workspaces/{ws['id']}/shares", rhub.alice, json={"user": "uwspanel"}, expect=201)
    session = login(rhub, "uwspanel", password).session
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    stop = threading.Event()

    def keep_touching():
        while not stop.wait(1):
            touch(rhub, ws)

    toucher = threading.Thread(target=keep_touching, daemon=True)
    try:
        with session.get(f"{rhub.url}/hub/api/events?_xsrf={xsrf}", stream=True, timeout=ENDS_WITHIN) as stream:
            assert stream.status_code == 200
            toucher.start()
            lines = stream.iter_lines(chunk_size=None, decode_unicode=True)
            assert json.loads(next(line for line in lines if line.startswith("data:"))[5:])["workspace_id"] == ws["id"]
            rhub.api("PATCH", "accounts/uwspanel", json={"disabled": True}, expect=200)
            deadline = time.monotonic() + ENDS_WITHIN
            for _ in lines:
                assert time.monotonic() < deadline, "the panel's stream still runs after the account was disabled"
        assert session.get(f"{rhub.url}/hub/api/events?_xsrf={xsrf}", timeout=30).status_code == 403
    finally:
        stop.set()


def test_a_stream_stops_getting_an_owners_events_once_they_leave_the_group_its_scope_names(rhub):
    """A role reading the workspaces of a group's members (``!group=lab``): once alice leaves
    the group, an open stream stops getting her events (it kept them for its life)."""
    ws = shared_workspace(rhub)
    other = rhub.api("POST", "workspaces", rhub.alice, json={"name": f"other {uuid.uuid4().hex[:6]}"}, expect=201)
    rhub.api("POST", f"workspaces/{other['id']}/shares", rhub.alice, json={"user": "uwslabreader"}, expect=201)
    rhub.api("POST", "groups/lab", json={"users": ["uwsalice"]}, expect=201)
    token, _ = new_token(rhub, "uwslabreader")
    sse, wsr = watch(rhub, ws, {"reader": token})["reader"]
    try:
        rhub.api("DELETE", "groups/lab/users", json={"users": ["uwsalice"]}, expect=200)

        def stopped() -> bool:
            """Nothing of ``ws`` came since the last look, up to an event of ``other`` after it."""
            seen = len(of(sse.events, ws)), len(of(wsr.events, ws))
            marks = len(of(sse.events, other)), len(of(wsr.events, other))
            touch(rhub, ws)
            touch(rhub, other)
            wait_for(
                lambda: len(of(sse.events, other)) > marks[0] and len(of(wsr.events, other)) > marks[1],
                15,
                what="the events of the workspace still shared",
            )
            return (len(of(sse.events, ws)), len(of(wsr.events, ws))) == seen

        wait_for(stopped, ENDS_WITHIN, interval=1, what="the stream to stop getting the events of alice's workspace")
    finally:
        sse.close()
        wsr.close()
        rhub.api("DELETE", "groups/lab")
