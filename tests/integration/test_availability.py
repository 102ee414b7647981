"""What one client can make the hub hold: request bodies and streams held open.

Each test sends what a hostile client would (anonymously where the hub reads it
before anyone is known) and checks the hub refuses it with a clear 4xx before
holding it.
"""

from __future__ import annotations

import json

import pytest
import requests

from ..helpers import declaring_length

#: what the hub reads whole of a request it has no more room for (UWSHub.max_request_body_bytes)
BODY_LIMIT = 1024 * 1024


@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_a_large_body_is_refused_before_it_is_read(hub, alice, who):
    token = alice if who == "user" else None
    # every route that reads a body whole: the hub's API (JupyterHub's and uws-hub's), UWS, HuBMAP, pages
    for path in ("/hub/api/workspaces", "/hub/api/users/alice/tokens", "/hub/api/uws/jobs", "/hub/login"):
        # sent to the hub's port (see declaring_length): a hub without the bound waits for the
        # whole body, and this read times out
        r = declaring_length(hub, "POST", path, token, 50 * 1024 * 1024)
        assert r.status_code == 413, (path, r.status_code, r.text[:300])
        answer = r.json()
        assert "max_request_body_bytes" in answer["message"], answer
        # the workspaces' creation takes seed files on top of the limit (twice UWSHub.max_seed_bytes)
        limit = BODY_LIMIT + (2 * 10 * 1024 * 1024 if path == "/hub/api/workspaces" else 0)
        assert f"limit of {limit} bytes" in answer["message"], answer


def test_a_body_under_the_limit_is_read_as_before(hub, alice):
    # a workspace's seed files may total max_seed_bytes (10 MiB), more than the limit:
    # that route takes them (base64, JSON-escaped) on top of it
    content = "x" * (3 * 1024 * 1024)
    r = requests.post(
        f"{hub.url}/hub/api/workspaces",
        headers={"Authorization": f"token {alice}"},
        json={"name": "large seed", "files": [{"path": "big.txt", "content": content}]},
        timeout=60,
    )
    assert r.status_code == 201, r.text[:300]
    wid = r.json()["id"]
    # elsewhere a body just under the limit is read and judged as before (422: no such job type)
    r = requests.post(
        f"{hub.url}/hub/api/workspaces/{wid}/jobs",
        headers={"Authorization": f"token {alice}"},
        data=json.dumps({"job_type": "x" * (BODY_LIMIT - 100)}),
        timeout=60,
    )
    assert r.status_code == 422, r.text[:300]
    hub.api("DELETE", f"workspaces/{wid}", alice)
