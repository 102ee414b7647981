"""A job stopped at each point of its start (local spawner, node
configurable-http-proxy): it ends as before, no route of its server stays in the
proxy, and the hub logs no ERROR (conftest.py's check). A stop used to delete a
route that was never added (before the server listened) or that the interrupted
start had just taken out (its route added once the server listened), and
JupyterHub logged the proxy's 404 as an ERROR.

The points are made deterministic by the minimal test server's options
(tests/minimal_server.py): ``UWS_TEST_LISTEN_SECONDS`` holds it before it listens
(the job's process is up: it has its resource id), ``UWS_TEST_ANSWER_SECONDS``
holds it after it listens and before it answers JupyterHub's check (the hub added
its route early: it is in the proxy)."""

from __future__ import annotations

import uuid

import pytest

from uws_hub.reasons import STOPPED_OUTSIDE

from ..helpers import MINIMAL_CMD, shared_workspace
from ..hubutil import Hub, wait_for

TERMINAL = {"completed", "failed", "cancelled"}
# longer than any test waits: the stop is what ends the hold
HOLD = "600"

CONFIG = f"""
c.UWSHub.job_types = {{
    "minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}},
    "deaf": {{
        "display_name": "Minimal, listens late", "cmd": {MINIMAL_CMD!r},
        "env": {{"UWS_TEST_LISTEN_SECONDS": "{HOLD}"}},
    }},
    "mute": {{
        "display_name": "Minimal, answers late", "cmd": {MINIMAL_CMD!r},
        "env": {{"UWS_TEST_ANSWER_SECONDS": "{HOLD}"}},
    }},
}}
c.JupyterHub.load_roles.append({{"name": "halt-keeper", "scopes": ["admin:users", "list:users", "read:users"],
                                 "users": ["haltkeeper"]}})
"""


@pytest.fixture(scope="module")
def shub(make_hub):
    return make_hub(CONFIG)


def routes_of(hub: Hub, name: str) -> list[str]:
    """The routes to servers of user ``name`` in the proxy."""
    return [spec for spec in hub.api("GET", "proxy", expect=200) if spec.startswith(f"/user/{name}/")]


def launch(hub: Hub, job_type: str) -> tuple[str, str, dict]:
    name = f"halt{uuid.uuid4().hex[:8]}"
    token = hub.add_user(name)
    ws = hub.api("POST", "workspaces", token, json={"name": f"halt {uuid.uuid4().hex[:8]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": job_type}, expect=202)
    return name, token, job


def stop(hub: Hub, token: str, job: dict) -> dict:
    hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
    return hub.wait_job(job["id"], token, TERMINAL)


def test_stopped_at_once(shub):
    name, token, job = launch(shub, "deaf")
    assert stop(shub, token, job)["status"] == "cancelled"
    assert routes_of(shub, name) == []


def test_stopped_before_its_server_listens(shub):
    name, token, job = launch(shub, "deaf")
    wait_for(lambda: shub.api("GET", f"jobs/{job['id']}", token, expect=200)["resource_id"], 30, what="its process")
    assert routes_of(shub, name) == []
    assert stop(shub, token, job)["status"] == "cancelled"
    assert routes_of(shub, name) == []


def test_stopped_after_its_route_went_in_before_it_answers(shub):
    name, token, job = launch(shub, "mute")
    wait_for(lambda: routes_of(shub, name), 60, what="its route, added once it listens")
    assert shub.api("GET", f"jobs/{job['id']}", token, expect=200)["status"] in {"queued", "starting"}
    assert stop(shub, token, job)["status"] == "cancelled"
    assert routes_of(shub, name) == []


def test_stopped_once_running(shub):
    name, token, job = launch(shub, "minimal")
    assert shub.wait_job(job["id"], token, {"running"} | TERMINAL)["status"] == "running"
    assert routes_of(shub, name) != []
    assert stop(shub, token, job)["status"] == "completed"
    assert routes_of(shub, name) == []


@pytest.mark.parametrize("job_type", ["deaf", "mute"])
def test_stopped_during_its_start_with_jupyterhubs_server_api(shub, job_type):
    """What the admin panel's Stop of a starting server sends: the job stops, as with
    uws-hub's own stop (JupyterHub's own stop of a start under way answered 500)."""
    name, token, job = launch(shub, job_type)
    if job_type == "deaf":
        wait_for(lambda: shub.api("GET", f"jobs/{job['id']}", token, expect=200)["resource_id"], 30, what="its process")
    else:
        wait_for(lambda: routes_of(shub, name), 60, what="its route, added once it listens")
    # removing it while it starts is refused, saying what to do; the job starts on
    r = shub.request("DELETE", f"users/{name}/servers/{job['server_name']}", shub.admin_token, json={"remove": True})
    assert r.status_code == 409 and "stop it first" in r.text, r.text
    assert shub.api("GET", f"jobs/{job['id']}", token, expect=200)["status"] in ("pending", "queued")
    shub.api("DELETE", f"users/{name}/servers/{job['server_name']}", expect=202)
    end = shub.wait_job(job["id"], token, TERMINAL)
    assert (end["status"], end["reason"]) == ("cancelled", STOPPED_OUTSIDE)
    assert routes_of(shub, name) == []


def test_only_who_may_stop_a_starting_server_stops_it_with_jupyterhubs_server_api(shub):
    """The DELETE that stops a starting server as its job is refused, and stops nothing,
    to a stranger, the workspace's viewer and editor (a share gives no delete:servers), a
    user admin (admin:users only) and anonymously; the owner's own DELETE stops it."""
    owner = f"halt{uuid.uuid4().hex[:8]}"
    owner_token = shub.add_user(owner)
    others = {who: shub.add_user(f"{who}{uuid.uuid4().hex[:6]}") for who in ("stranger", "viewer", "editor")}
    keeper = shub.add_user("haltkeeper")
    names = {who: shub.api("GET", "user", token, expect=200)["name"] for who, token in others.items()}
    ws = shared_workspace(shub, owner_token, {names["viewer"]: "viewer", names["editor"]: "editor"})
    job = shub.api("POST", f"workspaces/{ws['id']}/jobs", owner_token, json={"job_type": "deaf"}, expect=202)
    wait_for(
        lambda: shub.api("GET", f"jobs/{job['id']}", owner_token, expect=200)["resource_id"], 30, what="its process"
    )
    path = f"users/{owner}/servers/{job['server_name']}"
    for who, token in [*others.items(), ("user admin", keeper), ("anonymous", None)]:
        for body in ({}, {"remove": True}):
            r = shub.request("DELETE", path, token, json=body)
            assert r.status_code in (401, 403, 404), (who, body, r.status_code, r.text)
    assert shub.api("GET", f"jobs/{job['id']}", owner_token, expect=200)["status"] in ("pending", "queued")
    shub.api("DELETE", path, owner_token, expect=202)
    end = shub.wait_job(job["id"], owner_token, TERMINAL)
    assert (end["status"], end["reason"]) == ("cancelled", STOPPED_OUTSIDE)
    assert routes_of(shub, owner) == []
