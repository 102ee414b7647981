"""Schemathesis against docs/openapi.yaml on a real hub: no 5xx, nothing undocumented.

Every operation of the document is called with requests generated from it
(its examples, the boundaries of every parameter and body field, then random
valid and invalid values), and every response must match the document: no
5xx, a documented status code, the documented content type and a body valid
against the documented schema; a request the document calls invalid must be
refused (4xx). Four callers:

- the owner, with the path parameters fixed to real ids (a workspace with
  files, a job, a share, their own user name, a group), so that the requests
  reach the handlers' depths rather than stopping at a 404;
- the owner with generated path parameters (ids that do not exist or are
  not numbers, names that are not names);
- a stranger, with the owner's real ids: besides matching the document, no
  request about the owner's workspace, job, share or quota may succeed;
- an administrator (a service with ``admin:users``), with the real ids, for the
  accounts and quota operations only they reach (last: it may disable the
  owner's account, which deletes the owner's tokens).

The hub's job types run the minimal test server (tests/minimal_server.py), so
launches are cheap; quotas are on, and the workspace is shared. Generation is
seeded and derandomized, and bounded (examples per operation, no shrinking, a
timeout per request), so that the module runs in a few minutes and the same
way in CI.
Nothing goes anywhere but the hub on 127.0.0.1.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from ..helpers import MINIMAL_CMD
from ..hubutil import REPO, record

SPEC_PATH = REPO / "docs" / "openapi.yaml"
SEED = 20261204
#: examples per operation and caller in the random phase (the examples and the
#: boundary cases of the coverage phase come on top)
MAX_EXAMPLES = 15
#: an event stream never ends: it is read this long (or until one event), then cut
STREAM_SECONDS = 1

FUZZ_CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.quota_interval_seconds = 2
c.UWSHub.quota_disk_bytes = 10 * 1024 * 1024
c.UWSHub.quota_concurrent_jobs = 2
c.UWSHub.quota_max_cpus = 4
c.UWSHub.quota_max_memory_bytes = "8G"
c.UWSHub.quota_max_gpus = 0
c.UWSHub.quota_core_hours = 1000
c.UWSHub.copy_retry_seconds = 1
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_types = {{
    "jupyterlab": {{"display_name": "Minimal as JupyterLab", "cmd": {MINIMAL_CMD!r}}},
    "short": {{"display_name": "Minimal, 3 s limit", "cmd": {MINIMAL_CMD!r}, "time_limit_seconds": 3}},
    "echo": {{"display_name": "Echo (a batch job, a UWS job list)", "interactive": False,
              "cmd": ["echo", "{{text}}"], "parameters": {{"text": {{"type": "string", "default": "hi"}}}}}},
}}
# a blocking GET of a UWS job (?WAIT=) answers within a request's timeout
c.IVOAUWS.max_wait_seconds = 1
"""

#: the checks: no 5xx, documented status, content type and body; invalid requests refused.
#: Not positive_data_acceptance: valid by the document is not valid by every rule
#: (an unknown job type, a name already taken, a user who does not exist: 4xx)
CHECKS = {
    "enabled": False,
    "not_a_server_error": {"enabled": True},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
    "negative_data_rejection": {"enabled": True},
}


#: the owner's things that path parameters name, made by :func:`fuzz_hub` on
#: the hub's own new database (so their ids are known before it starts)
REAL = {
    "workspace_id": 1,
    "job_id": 1,
    "share_id": 1,
    "user": "uwsalice",
    "group": "fuzzlab",
    "username": "uwsalice",
    "path": "data/a.csv",
    "job_type": "echo",
    "name": "text",
}
#: the owner's UWS job (of the batch job type ``echo``), which the UWS paths name
UWS_JOB = 2
#: the workspace the owner's DELETE deletes, so that the rest keep theirs
DOOMED = 2


@pytest.fixture(scope="module")
def fuzz_hub(make_hub, system_users):
    hub = make_hub(FUZZ_CONFIG)
    hub.owner = hub.add_user("uwsalice")
    hub.stranger = hub.add_user("uwsbob")
    hub.add_user("uwscarol")
    files = [{"path": "README.md", "content": "# hi\n"}, {"path": "data/a.csv", "content": "a,b\n1,2\n"}]
    ws = hub.api("POST", "workspaces", hub.owner, json={"name": "fuzz", "files": files}, expect=201)
    doomed = hub.api("POST", "workspaces", hub.owner, json={"name": "fuzz doomed"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", hub.owner, json={"job_type": "jupyterlab"}, expect=202)
    assert hub.wait_job(job["id"], hub.owner, {"running", "failed"})["status"] == "running"
    hub.api("POST", f"jobs/{job['id']}/stop", hub.owner, expect=202)
    hub.wait_job(job["id"], hub.owner, {"completed"})
    r = hub.request("POST", f"{hub.url}/hub/api/uws/echo", hub.owner, data={"WORKSPACE": ws["id"], "PHASE": "RUN"})
    assert r.status_code == 303, r.text
    uws_job = int(r.headers["Location"].rsplit("/", 1)[1])
    assert hub.wait_job(uws_job, hub.owner, {"completed", "failed"})["status"] == "completed"
    share = hub.api("POST", f"workspaces/{ws['id']}/shares", hub.owner, json={"user": "uwscarol"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", hub.owner, json={"kind": "copy", "user": "uwscarol"}, expect=201)
    hub.api("POST", f"groups/{REAL['group']}", json={"users": ["uwsalice"]}, expect=201)
    hub.api("POST", "accounts", json={"username": "uwsalice", "password": "a long password"}, expect=201)
    assert (ws["id"], doomed["id"], job["id"], uws_job, share["id"]) == (
        REAL["workspace_id"],
        DOOMED,
        REAL["job_id"],
        UWS_JOB,
        REAL["share_id"],
    ), "a new database numbers from 1"
    yield hub
    # leave nothing running (with the admin's token: the admin's fuzzing may have deleted the users')
    for j in hub.api("GET", "jobs?status=pending,queued,running", hub.admin_token, expect=200)["items"]:
        hub.request("POST", f"jobs/{j['id']}/stop", hub.admin_token)


def load_schema(real_ids: bool) -> schemathesis.BaseSchema:
    """The document with this module's configuration; ``real_ids``: path
    parameters are the owner's real things (:data:`REAL`), not generated."""
    operations = [{"include-path": "/events", "request-timeout": STREAM_SECONDS, "max-stream-events": 1}]
    if real_ids:
        operations.append({"include-operation-id": "deleteWorkspace", "parameters": {"path.workspace_id": DOOMED}})
        operations.append({"include-path-regex": "^/uws/", "parameters": {"path.job_id": UWS_JOB}})
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # the caller's token is the test's (a missing one is tested elsewhere) ...
                "with-security-parameters": False,
                # ... and unknown query parameters are ignored, as in JupyterHub's API
                "allow-extra-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": CHECKS,
            "parameters": {f"path.{name}": value for name, value in REAL.items()} if real_ids else {},
            "operations": operations,
        }
    )
    return schemathesis.openapi.from_path(SPEC_PATH, config=config)


real_ids = load_schema(real_ids=True)
generated_ids = load_schema(real_ids=False)

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def call_and_check(hub, case, token: str):
    """Call the hub as the holder of ``token`` and validate the response against the document."""
    response = case.call_and_validate(base_url=hub.url + "/hub/api", headers={"Authorization": f"token {token}"})
    record(case.method, "/hub/api" + case.formatted_path, response.status_code)
    return response


@real_ids.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_owner(case, fuzz_hub):
    call_and_check(fuzz_hub, case, fuzz_hub.owner)


@generated_ids.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_owner_with_generated_ids(case, fuzz_hub):
    call_and_check(fuzz_hub, case, fuzz_hub.owner)


@real_ids.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_stranger(case, fuzz_hub):
    response = call_and_check(fuzz_hub, case, fuzz_hub.stranger)
    # (other methods than the operation's, e.g. OPTIONS, get JupyterHub's empty CORS answer)
    # (a UWS job list is everyone's: a job type's, not the owner's)
    owners = set(case.path_parameters or {}) - {"job_type"}
    if owners and case.method.upper() == case.operation.method.upper():
        # every path parameter is the owner's: their workspace, job, share, name or group
        assert not 200 <= response.status_code < 300, (
            f"{case.method} {case.formatted_path} answered {response.status_code} to a stranger: {response.text[:300]}"
        )


@real_ids.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_admin(case, fuzz_hub):
    call_and_check(fuzz_hub, case, fuzz_hub.admin_token)
