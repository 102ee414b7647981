"""Live events: the SSE stream and the WebSocket, who sees what, resuming
without gaps, and a subscriber that stops reading."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import websocket

from ..helpers import SSEReader, run_job
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
        ws_statuses = [e["status"] for e in stream_a.events if e["kind"] == "workspace"
                       and e["workspace_id"] == ws_a["id"]]
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
        wait_for(lambda: any(e["status"] == "completed" for e in stream.events if e["kind"] == "job"), 15,
                 what="the filtered stream's events")
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
        header=[f"Authorization: token {alice}"], timeout=30,
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


def test_a_subscriber_that_stops_reading_is_dropped(make_hub, system_users):
    """With a small per-subscriber queue, a stalled reader is cut off (it would
    otherwise hold every event in the hub's memory) while a live one goes on."""
    hub = make_hub("c.UWSHub.event_queue_size = 20\nc.UWSHub.system_users = True\n")
    token = hub.add_user("uwsalice")
    # a reader that never reads, with tiny socket buffers, straight to the hub
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.connect(("127.0.0.1", hub.hub_port))
    stalled.sendall(f"GET /hub/api/events HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\nConnection: close\r\n\r\n".encode())
    live = SSEReader(hub, token)
    try:
        for i in range(150):
            hub.api("POST", "workspaces", token, json={"name": f"flood {i} " + "x" * 180}, expect=201)
        # the live reader got every event
        wait_for(lambda: len([e for e in live.events if e["kind"] == "workspace"]) >= 300, 30,
                 what="the live reader's events")
        assert "overflow" not in live.kinds
        # the stalled one was cut off, told why
        stalled.settimeout(10)
        received = b""
        while chunk := stalled.recv(65536):
            received += chunk
        assert b"event: overflow" in received
        assert received.count(b"event: workspace") < 300
        assert hub.log_text().count("Dropping an event subscriber") == 1
    finally:
        stalled.close()
        live.close()
