"""The default proxy streams: JupyterHub's spawn-progress event stream arrives
event by event, through the proxy, while the server is still starting."""

from __future__ import annotations

import json

import websocket


def test_spawn_progress_streams_through_the_proxy(hub, alice, workspace):
    job = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    progress = f"/hub/api/users/uwsalice/servers/{workspace['slug']}/progress"
    events = []
    with hub.request("GET", progress, alice, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:") :])
            # what the job looked like when this event reached us
            status = hub.api("GET", f"jobs/{job['id']}", alice)["status"]
            events.append((event, status))
            if event.get("ready") or event.get("failed"):
                break
    assert events, "no progress events"
    first_event, status_at_first = events[0]
    assert status_at_first in ("pending", "queued"), (
        "the first progress event arrived only after the server was up: the proxy buffers the stream"
    )
    last_event, _ = events[-1]
    assert last_event.get("ready") is True, events
    assert last_event["url"] == f"/user/uwsalice/{workspace['slug']}/"
    assert hub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"


def test_websockets_pass_through_the_proxy(hub, alice, workspace):
    """JupyterLab's kernels talk over WebSockets: open one through the proxy."""
    job = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    assert hub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
    server = f"/user/uwsalice/{workspace['slug']}"
    kernel = hub.api("POST", f"{server}/api/kernels", alice, json={"name": "python3"}, expect=201)
    ws = websocket.create_connection(
        hub.url.replace("http", "ws") + f"{server}/api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {alice}"],
        timeout=30,
    )
    try:
        msg_id = "uws-test-1"
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "t",
                        "session": "s",
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": "print(6 * 7)",
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out = None
        while out is None:
            reply = json.loads(ws.recv())
            if reply.get("msg_type") == "stream" and reply["parent_header"].get("msg_id") == msg_id:
                out = reply["content"]["text"]
        assert out.strip() == "42"
    finally:
        ws.close()
