"""Live events: the SSE stream and the WebSocket, who sees what, resuming
without gaps, and a subscriber that stops reading."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid

import pytest
import websocket

from ..helpers import SSEReader, run_job, sse_replay
from ..hubutil import wait_for


def test_each_user_sees_only_their_own_events(hub, alice, bob):
    ws_a = hub.api("POST", "workspaces", alice, json={"name": f"ev-a {uuid.uuid4().hex[:6]}"}, expect=201)
    ws_b = hub.api("POST", "workspaces", bob, json={"name": f"ev-b {uuid.uuid4().hex[:6]}"}, expect=201)
    stream_a, stream_b = SSEReader(hub, alice), SSEReader(hub, bob)
    try:
        job_a = run_job(hub, alice, ws_a)
        job_b = run_job(hub, bob, ws_b)
        wait_for(lambda: "completed" in stream_a.job_statuses(job_a["id"]), 15, what="alice's events")
        wait_for(lambda: "completed" in stream_b.job_statuses(job_b["id"]), 15, what="bob's events")
        # every transition, in order, with increasing ids
        assert stream_a.job_statuses(job_a["id"]) == ["pending", "queued", "running", "stopping", "completed"]
        ids = [e["id"] for e in stream_a.events if e["id"] is not None]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(e["kind"] == "progress" for e in stream_a.events if e["id"] is None)
        # JupyterHub's spawn progress comes through too
        progress = [e for e in stream_a.events if e["kind"] == "progress" and e["job_id"] == job_a["id"]]
        assert progress and progress[0]["data"]["message"] == "Server requested"
        # the workspace's own status changes
        ws_statuses = [
            e["status"] for e in stream_a.events if e["kind"] == "workspace" and e["workspace_id"] == ws_a["id"]
        ]
        assert ws_statuses == ["active", "idle"]
        running = next(e for e in stream_a.events if e["kind"] == "job" and e["status"] == "running")
        assert running["data"]["url"] == f"/user/uwsalice/{ws_a['slug']}/"
        assert running["actor"] == "hub"
        stopping = next(e for e in stream_a.events if e["kind"] == "job" and e["status"] == "stopping")
        assert stopping["actor"] == "uwsalice"
        # nobody sees the other's events
        assert {e["owner_id"] for e in stream_a.events} == {stream_a.events[0]["owner_id"]}
        assert all(e["workspace_id"] != ws_a["id"] for e in stream_b.events)
        assert all(e["workspace_id"] != ws_b["id"] for e in stream_a.events)
    finally:
        stream_a.close()
        stream_b.close()


def test_filters_and_validation(hub, alice, bob):
    ws = hub.api("POST", "workspaces", alice, json={"name": f"ev-f {uuid.uuid4().hex[:6]}"}, expect=201)
    other = hub.api("POST", "workspaces", alice, json={"name": f"ev-g {uuid.uuid4().hex[:6]}"}, expect=201)
    stream = SSEReader(hub, alice, f"?workspace={ws['id']}")
    try:
        job = run_job(hub, alice, other)
        run_job(hub, alice, ws)
        wait_for(
            lambda: any(e["status"] == "completed" for e in stream.events if e["kind"] == "job"),
            15,
            what="the filtered stream's events",
        )
        assert {e["workspace_id"] for e in stream.events} == {ws["id"]}
        assert all(e["job_id"] != job["id"] for e in stream.events)
    finally:
        stream.close()
    for query in ("?last_event_id=abc", "?last_event_id=-1"):
        assert hub.request("GET", f"events{query}", alice).status_code == 400
    assert hub.request("GET", "events?workspace=abc", alice).status_code == 404
    assert hub.request("GET", "events").status_code == 403
    # bob asking for alice's workspace gets nothing of it
    stream = SSEReader(hub, bob, f"?workspace={ws['id']}&last_event_id=0")
    try:
        time.sleep(1)
        assert stream.events == []
    finally:
        stream.close()


def test_resume_after_reconnect_has_no_gap(hub, alice):
    ws = hub.api("POST", "workspaces", alice, json={"name": f"ev-r {uuid.uuid4().hex[:6]}"}, expect=201)
    stream = SSEReader(hub, alice, f"?workspace={ws['id']}")
    first = run_job(hub, alice, ws)
    wait_for(lambda: "completed" in stream.job_statuses(first["id"]), 15, what="the first job's events")
    last_seen = [e["id"] for e in stream.events if e["id"] is not None][-1]
    stream.close()
    # while disconnected
    second = run_job(hub, alice, ws)
    hub.api("PATCH", f"workspaces/{ws['id']}", alice, json={"description": "not a status change"})
    # reconnect as EventSource does, with Last-Event-ID
    resumed = SSEReader(hub, alice, f"?workspace={ws['id']}", last_event_id=last_seen)
    try:
        third = run_job(hub, alice, ws)
        wait_for(lambda: "completed" in resumed.job_statuses(third["id"]), 15, what="the resumed stream")
        ids = [e["id"] for e in resumed.events if e["id"] is not None]
        assert ids[0] > last_seen and ids == sorted(ids) and len(set(ids)) == len(ids)
        assert resumed.job_statuses(second["id"]) == ["pending", "queued", "running", "stopping", "completed"]
        assert resumed.job_statuses(third["id"]) == ["pending", "queued", "running", "stopping", "completed"]
        # exactly the stored events after last_seen: nothing missed, nothing twice
        replay = SSEReader(hub, alice, f"?workspace={ws['id']}", last_event_id=last_seen)
        wait_for(lambda: len(replay.events) >= len(ids), 15, what="a full replay")
        replay.close()
        assert [e["id"] for e in replay.events] == ids  # the stored ones: no progress messages
    finally:
        resumed.close()


def test_websocket_stream(hub, alice):
    ws = hub.api("POST", "workspaces", alice, json={"name": f"ev-w {uuid.uuid4().hex[:6]}"}, expect=201)
    conn = websocket.create_connection(
        hub.url.replace("http", "ws") + f"/hub/api/events/ws?workspace={ws['id']}",
        header=[f"Authorization: token {alice}"],
        timeout=30,
    )
    try:
        job = run_job(hub, alice, ws)
        statuses = []
        while "completed" not in statuses:
            event = json.loads(conn.recv())
            if event["kind"] == "job" and event["job_id"] == job["id"]:
                statuses.append(event["status"])
        assert statuses == ["pending", "queued", "running", "stopping", "completed"]
    finally:
        conn.close()
    # unauthenticated: refused before the upgrade
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(hub.url.replace("http", "ws") + "/hub/api/events/ws", timeout=10)
    assert e.value.status_code == 403


def _raw_stream(hub, token, rcvbuf: int = 1024, last_event_id: int | None = None) -> socket.socket:
    """An SSE request straight to the hub on a socket with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", hub.hub_port))
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
    sock.sendall(
        f"GET /hub/api/events HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n{resume}"
        "Connection: close\r\n\r\n".encode()
    )
    return sock


#: an SSE workspace event received to the end of its data line
_WHOLE_WORKSPACE_EVENT = re.compile(rb"event: workspace\ndata: [^\n]*\n")


def _sse_events(data: bytes) -> list[tuple[str, dict]]:
    """(kind, data) of every event in a raw SSE response (chunked encoding left in: each
    event's lines are whole in one chunk)."""
    out, kind = [], None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            out.append((kind, json.loads(line[5:])))
    return out


def test_a_slow_reader_that_keeps_reading_gets_every_event(make_hub, system_users):
    """A reader slower than the events, with a per-subscriber queue far smaller than
    the burst, is never cut: what did not fit in its queue is replayed from the
    database, in order, nothing lost and nothing twice."""
    hub = make_hub("c.UWSHub.event_queue_size = 5\nc.UWSHub.system_users = True\n")
    token = hub.add_user("uwsalice")
    slow = _raw_stream(hub, token)
    received = b""
    try:
        slow.settimeout(10)
        received += slow.recv(4096)  # the headers: subscribed
        for i in range(60):
            hub.api("POST", "workspaces", token, json={"name": f"burst {i} " + "x" * 180}, expect=201)
        # the reader takes a little at a time, slowly, until it has every event
        deadline = time.monotonic() + 60
        while len(_WHOLE_WORKSPACE_EVENT.findall(received)) < 120 and time.monotonic() < deadline:
            time.sleep(0.02)
            chunk = slow.recv(2048)
            if not chunk:
                break
            received += chunk
    finally:
        slow.close()
    events = _sse_events(received)
    assert "overflow" not in [kind for kind, _ in events]
    ids = [e["id"] for _, e in events if e["id"] is not None]
    assert len(ids) == 120 and ids == sorted(ids) and len(set(ids)) == len(ids)
    # the same events a replay from the start gives: none missing
    stored = [e["id"] for e in sse_replay(hub, token, "last_event_id=0") if e["kind"] == "workspace"]
    assert ids == stored


def test_a_subscriber_that_stops_reading_is_dropped_and_resumes_without_loss(make_hub, system_users):
    """A reader that stops taking what is sent is cut off after
    ``event_stream_stall_seconds`` (it would otherwise hold a connection and its
    buffers for ever) while a live one goes on; reconnecting with the last id it
    got, it receives every event it missed."""
    hub = make_hub(
        "c.UWSHub.event_queue_size = 20\nc.UWSHub.event_stream_stall_seconds = 1\nc.UWSHub.system_users = True\n"
    )
    token = hub.add_user("uwsalice")
    stalled = _raw_stream(hub, token)
    live = SSEReader(hub, token)
    try:
        for i in range(150):
            hub.api("POST", "workspaces", token, json={"name": f"flood {i} " + "x" * 180}, expect=201)
        # the live reader got every event
        wait_for(
            lambda: len([e for e in live.events if e["kind"] == "workspace"]) >= 300,
            30,
            what="the live reader's events",
        )
        assert "overflow" not in live.kinds
        wait_for(lambda: "Dropping an event subscriber" in hub.log_text(), 30, what="the stalled reader's drop")
        # the stalled one was cut off, told why
        stalled.settimeout(10)
        received = b""
        while chunk := stalled.recv(65536):
            received += chunk
        events = _sse_events(received)
        assert events[-1][0] == "overflow"
        got = [e["id"] for kind, e in events if kind == "workspace"]
        assert len(got) < 300 and events[-1][1]["last_event_id"] == got[-1]
        assert hub.log_text().count("Dropping an event subscriber") == 1
    finally:
        stalled.close()
        live.close()
    # it resumes from the last event it got: the rest, nothing missed, nothing twice
    resumed = [e["id"] for e in sse_replay(hub, token, f"last_event_id={got[-1]}") if e["kind"] == "workspace"]
    assert got + resumed == [e["id"] for e in live.events if e["kind"] == "workspace"]
