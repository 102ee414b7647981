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

from ..helpers import MINIMAL_CMD
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
