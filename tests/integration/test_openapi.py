"""docs/openapi.yaml against the real server.

Every endpoint is exercised on the shared multi-user hub, and every JSON body
it answers with is validated against the schema the document gives for that
path, method and status (response schemas forbid unknown properties, so a
field the server adds or drops fails here). Request bodies the tests send are
checked against the document too: valid ones must be accepted by both, and
bodies the document calls invalid must get a 422 from the server. Finally the
document and the hub's route table must list the same operations.
"""

from __future__ import annotations

import json
import re
import uuid
from types import SimpleNamespace

import pytest
import websocket
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .. import uwsxml
from ..helpers import declaring_length
from ..hubutil import REPO, record, wait_for

SPEC_PATH = REPO / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
BASE_URI = "urn:uws-hub:openapi"
REGISTRY = Registry().with_resource(BASE_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))
METHODS = ("get", "put", "post", "patch", "delete")


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator_for(ptr: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{BASE_URI}#{ptr}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def deref(ptr: str) -> tuple[str, dict]:
    """Follow a local $ref (responses are often references to components)."""
    node = SPEC
    for part in ptr.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if "$ref" in node:
        return deref(node["$ref"].removeprefix("#"))
    return ptr, node


def errors(instance, ptr: str) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator_for(ptr).iter_errors(instance)
    ]


def request_schema(template: str, method: str) -> str:
    return pointer("paths", template, method, "requestBody", "content", "application/json", "schema")


class Contract:
    """Checks responses against the document and records what was exercised."""

    def __init__(self, hub):
        self.hub = hub
        self.seen: set[tuple[str, str, str]] = set()

    def call(self, method: str, template: str, token: str | None, path: str | None = None, **kw):
        r = self.hub.request(method, "/hub/api" + (path or template), token, **kw)
        self.check(r, template, method)
        return r

    def check(self, r, template: str, method: str):
        method = method.lower()
        op = SPEC["paths"][template][method]
        status = str(r.status_code)
        assert status in op["responses"], (
            f"{method.upper()} {template} answered {status}, which docs/openapi.yaml does not list: {r.text[:300]}"
        )
        ptr, response = deref(pointer("paths", template, method, "responses", status))
        content = response.get("content", {})
        if "Location" in response.get("headers", {}):
            # a redirect (UWS's 303): where to, and no body
            assert r.headers.get("Location", "").startswith("http") and not r.content, (r.headers, r.text)
        elif "application/json" in content:
            assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
            problems = errors(r.json(), ptr + pointer("content", "application/json", "schema"))
            assert not problems, (
                f"{method.upper()} {template} {status} does not match the document: {problems}\n{r.text[:2000]}"
            )
        else:
            assert content, f"{method.upper()} {template} {status}: the document gives no content"
            media = r.headers.get("Content-Type", "").split(";")[0]
            assert media in content or "*/*" in content, f"{method.upper()} {template} {status}: {media}"
        self.saw(template, method, status)
        return r

    def saw(self, template: str, method: str, status: str):
        """An answer that was exercised (also for the session's status coverage)."""
        self.seen.add((template, method.lower(), status))
        record(method, "/hub/api" + template, int(status))


@pytest.fixture
def api(hub):
    return Contract(hub)


def copy_made(api: Contract, recipient: str, share_id: int, timeout: float) -> dict:
    """The accepted copy share, once its copy is done (fails if it failed)."""

    def copied():
        items = api.call("GET", "/shares", recipient, "/shares?status=accepted&limit=200").json()["items"]
        share = next(x for x in items if x["id"] == share_id)
        return share if share["copy"]["state"] in ("done", "failed") else None

    done = wait_for(copied, timeout, what="the copy")
    assert done["copy"]["state"] == "done", done["copy"]["error"]
    return done


def operations_in_spec() -> set[tuple[str, str]]:
    return {(path, m) for path, item in SPEC["paths"].items() for m in METHODS if m in item}


# ---------------------------------------------------------------- the document itself
def test_document_is_well_formed():
    assert SPEC["openapi"].startswith("3.1")
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    # every $ref resolves
    refs = set(re.findall(r"\$ref: \"?#([^\"\s}]+)", SPEC_PATH.read_text()))
    for ref in refs:
        deref(ref)
    # response objects forbid what they do not list
    for name in (
        "Workspace",
        "Job",
        "JobType",
        "FileEntry",
        "UploadResult",
        "DeleteResult",
        "Error",
        "Pagination",
        "WorkspacePage",
        "JobPage",
        "FilePage",
        "Account",
        "AccountPage",
        "Share",
        "SharePage",
        "Recipients",
        "Limits",
        "Quota",
        "GroupQuota",
        "Usage",
        "UsageItem",
        "UsagePage",
        "Notification",
        "NotificationPage",
    ):
        assert SPEC["components"]["schemas"][name]["additionalProperties"] is False, name


def test_document_lists_every_route_of_the_hub():
    """The hub's uws-hub API routes and the document's paths are the same operations."""
    from uws_hub.apihandlers import default_handlers
    from uws_hub.protocols.uws.config import IVOAUWS
    from uws_hub.protocols.uws.handlers import routes as uws_routes

    samples = {
        "workspace_id": "7",
        "job_id": "7",
        "path": "data/a.csv",
        "username": "alice",
        "share_id": "7",
        "event_id": "7",
        "user": "alice",
        "group": "lab",
        "job_type": "count-lines",
        "name": "threshold",
    }
    spec_ops = operations_in_spec()
    routed = set()
    for regex, handler, *_ in [*default_handlers, *uws_routes(IVOAUWS())]:
        methods = [
            m
            for m in METHODS
            if m in vars(handler) or any(m in vars(k) for k in handler.__mro__ if k.__module__.startswith("uws_hub"))
        ]
        matches = [
            path
            for path in SPEC["paths"]
            if re.fullmatch(regex, "/api" + re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path))
        ]
        assert matches, f"route {regex} ({handler.__name__}) is not in docs/openapi.yaml"
        for method in methods:
            for path in matches:
                routed.add((path, method))
    assert routed == spec_ops, (
        f"in the hub but not the document: {sorted(routed - spec_ops)};"
        f" in the document but not the hub: {sorted(spec_ops - routed)}"
    )


# ---------------------------------------------------------------- request bodies
VALID_CREATE = [
    {"name": "x" * 255},
    {
        "name": "With files",
        "description": "d" * 10_000,
        "files": [{"path": "a/b.txt", "content": "hi"}, {"path": "c.bin", "content": "AAEC", "encoding": "base64"}],
    },
]
INVALID_CREATE = [
    {},
    {"name": ""},
    {"name": "x" * 256},
    {"name": 5},
    {"name": "x", "description": "d" * 10_001},
    {"name": "x", "color": "red"},
    {"name": "x", "files": [{"path": "", "content": "x"}]},
    {"name": "x", "files": [{"path": "a", "content": "x", "encoding": "rot13"}]},
    {"name": "x", "files": [{"path": "a"}]},
    {"name": "x", "files": [{"path": "a", "content": "x", "mode": 7}]},
    {"name": "x", "files": [{"path": f"f{i}", "content": ""} for i in range(1001)]},
]
INVALID_UPDATE = [
    {"name": ""},
    {"name": "x" * 256},
    {"description": "d" * 10_001},
    {"slug": "other"},
]
INVALID_LAUNCH = [
    {},
    {"job_type": ""},
    {"job_type": "j" * 64},
    {"job_type": "jupyterlab", "resource": ""},
    {"job_type": "jupyterlab", "extra": 1},
    {"job_type": "jupyterlab", "resources": {"cpus": 0}},
    {"job_type": "jupyterlab", "resources": {"cpus": 4097}},
    {"job_type": "jupyterlab", "resources": {"gpus": -1}},
    {"job_type": "jupyterlab", "resources": {"gpus": 65}},
    {"job_type": "jupyterlab", "resources": {"memory": "lots"}},
    {"job_type": "jupyterlab", "resources": {"time_limit": "1h"}},
    {"job_type": "jupyterlab", "resources": {"partition": "a/b"}},
    {"job_type": "jupyterlab", "resources": {"nodes": 2}},
]


INVALID_MOVE = [
    {},
    {"path": ""},
    {"path": "a" * 4097},
    {"path": "a\x1bb"},
    {"path": "a", "overwrite": "yes"},
    {"path": "a", "force": True},
]
INVALID_NEW_FILE = [{}, {"type": "file"}, {"type": "directory", "mode": 7}]
#: (method, file) of the files API's JSON bodies, each with the bodies the document refuses
INVALID_FILE_BODIES = [("PATCH", "README.md", b) for b in INVALID_MOVE] + [("POST", "new", b) for b in INVALID_NEW_FILE]


@pytest.mark.parametrize("method,path,body", INVALID_FILE_BODIES, ids=range(len(INVALID_FILE_BODIES)))
def test_bodies_the_document_refuses_are_refused_files(api, alice, workspace, method, path, body):
    template = "/workspaces/{workspace_id}/files/{path}"
    assert errors(body, request_schema(template, method.lower())), f"the document accepts {body}"
    r = api.call(method, template, alice, f"/workspaces/{workspace['id']}/files/{path}", json=body)
    assert r.status_code == 422, r.text


INVALID_ACCOUNT = [
    {},
    {"username": "docs-x"},
    {"username": "", "password": "a long password"},
    {"username": "u" * 256, "password": "a long password"},
    {"username": "docs-x", "password": ""},
    {"username": "docs-x", "password": "p" * 1025},
    {"username": "docs-x", "password": "a long password", "email": "e" * 321},
    {"username": "docs-x", "password": "a long password", "display_name": "d" * 256},
    {"username": "docs-x", "password": "a long password", "role": "boss"},
]
INVALID_ACCOUNT_UPDATE = [
    {"password": ""},
    {"email": "e" * 321},
    {"display_name": "d" * 256},
    {"admin": True},
]


@pytest.mark.parametrize("body", INVALID_ACCOUNT, ids=range(len(INVALID_ACCOUNT)))
def test_bodies_the_document_refuses_are_refused_account(api, hub, body):
    assert errors(body, request_schema("/accounts", "post")), f"the document accepts {body}"
    r = api.call("POST", "/accounts", hub.admin_token, json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", INVALID_ACCOUNT_UPDATE, ids=range(len(INVALID_ACCOUNT_UPDATE)))
def test_bodies_the_document_refuses_are_refused_account_update(api, hub, body):
    template = "/accounts/{username}"
    assert errors(body, request_schema(template, "patch")), f"the document accepts {body}"
    # the shared hub's first admin has a local account
    r = api.call("PATCH", template, hub.admin_token, "/accounts/uwsadmin", json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", INVALID_CREATE, ids=range(len(INVALID_CREATE)))
def test_bodies_the_document_refuses_are_refused_create(api, alice, body):
    assert errors(body, request_schema("/workspaces", "post")), f"the document accepts {body}"
    r = api.call("POST", "/workspaces", alice, json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", INVALID_UPDATE, ids=range(len(INVALID_UPDATE)))
def test_bodies_the_document_refuses_are_refused_update(api, alice, workspace, body):
    template = "/workspaces/{workspace_id}"
    assert errors(body, request_schema(template, "patch")), f"the document accepts {body}"
    r = api.call("PATCH", template, alice, f"/workspaces/{workspace['id']}", json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", INVALID_LAUNCH, ids=range(len(INVALID_LAUNCH)))
def test_bodies_the_document_refuses_are_refused_launch(api, alice, workspace, body):
    template = "/workspaces/{workspace_id}/jobs"
    assert errors(body, request_schema(template, "post")), f"the document accepts {body}"
    r = api.call("POST", template, alice, f"/workspaces/{workspace['id']}/jobs", json=body)
    assert r.status_code == 422, r.text


def test_bodies_the_document_accepts_are_accepted(api, alice):
    for body in VALID_CREATE:
        body = {**body, "name": body["name"][:-8] + uuid.uuid4().hex[:8]}
        assert not errors(body, request_schema("/workspaces", "post"))
        r = api.call("POST", "/workspaces", alice, json=body)
        assert r.status_code == 201, r.text
        ws = r.json()
        assert len(ws["slug"]) <= 63
        assert api.call("DELETE", "/workspaces/{workspace_id}", alice, f"/workspaces/{ws['id']}").status_code == 202


# ---------------------------------------------------------------- every endpoint


# ---------------------------------------------------------------- every endpoint, section by section
#: the sections below, which together exercise every operation of the document
#: (run in this order: the jobs section deletes the workspaces the files section used)
SECTIONS = {"workspaces", "files", "jobs", "accounts", "sharing", "quotas", "events", "uws"}
#: operations whose success only a real SLURM job can give: the wake takes a starting
#: SLURM job's own server token, which only the job's environment holds. Their success is
#: tested on the real SLURM (test_slurm.py::test_a_jobs_wake_starts_a_poll_cycle); here,
#: their refusals.
SUCCEEDS_ELSEWHERE = {("/jobs/{job_id}/wake", "post")}


@pytest.fixture(scope="module")
def contract(hub):
    """One record of what the sections exercised; once all have run, every operation
    of the document must have been, with its success status."""
    api = Contract(hub)
    api.sections = set()
    yield api
    if api.sections == SECTIONS:
        exercised = {(path, method) for path, method, status in api.seen if status.startswith(("2", "101", "303"))}
        assert exercised | SUCCEEDS_ELSEWHERE == operations_in_spec(), sorted(operations_in_spec() - exercised)
        statuses = {status for _, _, status in api.seen}
        assert {"200", "201", "202", "303", "400", "403", "404", "409", "413", "422"} <= statuses


@pytest.fixture(scope="module")
def read_only(hub, alice):
    """A token of alice's that may only read her workspaces."""
    return hub.api("POST", "users/uwsalice/tokens", json={"scopes": ["custom:uws:read:workspaces!user"]}, expect=201)[
        "token"
    ]


@pytest.fixture(scope="module")
def made(hub, alice, contract, read_only):
    """Two workspaces of alice's, made through the API as the document says."""
    api = contract
    tag = uuid.uuid4().hex[:8]
    body = {
        "name": f"OpenAPI {tag}",
        "description": "contract test",
        "files": [{"path": "README.md", "content": "# hi\n"}],
    }
    assert not errors(body, request_schema("/workspaces", "post"))
    ws = api.call("POST", "/workspaces", alice, json=body).json()
    assert ws["status"] == "idle" and ws["slug"] == f"openapi-{tag}"
    wid = ws["id"]
    second = api.call("POST", "/workspaces", alice, json={"name": f"OpenAPI second {tag}"}).json()
    assert api.call("POST", "/workspaces", alice, json={"name": f"openapi {tag}"}).status_code == 409
    assert api.call("POST", "/workspaces", alice, data="not json").status_code == 400
    assert api.call("POST", "/workspaces", alice, json=[1]).status_code == 400
    assert api.call("POST", "/workspaces", alice, json={"name": "   "}).status_code == 422
    assert api.call("POST", "/workspaces", hub.admin_token, json={"name": "svc"}).status_code == 400
    assert api.call("POST", "/workspaces", read_only, json={"name": "ro"}).status_code == 403

    return SimpleNamespace(tag=tag, ws=ws, wid=wid, second=second)


def test_workspaces_match_the_document(hub, alice, bob, contract, read_only, made):
    api, ws, wid = contract, made.ws, made.wid
    api.sections.add("workspaces")
    page = api.call("GET", "/workspaces", alice).json()
    assert wid in [w["id"] for w in page["items"]]
    page = api.call("GET", "/workspaces", alice, "/workspaces?limit=1").json()
    assert page["_pagination"]["limit"] == 1 and page["_pagination"]["next"] is not None
    page = api.call("GET", "/workspaces", alice, "/workspaces?status=idle&offset=0").json()
    assert all(w["status"] == "idle" for w in page["items"])
    r = api.call(
        "GET", "/workspaces", alice, "/workspaces", headers={"Accept": "application/jupyterhub-pagination+json"}
    )
    assert r.json()["_pagination"]["limit"] == 50
    assert api.call("GET", "/workspaces", alice, "/workspaces?status=bogus").status_code == 400
    assert api.call("GET", "/workspaces", alice, "/workspaces?limit=abc").status_code == 400
    assert api.call("GET", "/workspaces", None).status_code == 403

    item = "/workspaces/{workspace_id}"
    assert api.call("GET", item, alice, f"/workspaces/{wid}").json()["id"] == wid
    assert api.call("GET", item, bob, f"/workspaces/{wid}").status_code == 404
    assert api.call("GET", item, alice, "/workspaces/abc").status_code == 404
    assert api.call("GET", item, None, f"/workspaces/{wid}").status_code == 403
    patched = api.call("PATCH", item, alice, f"/workspaces/{wid}", json={"description": "changed"}).json()
    assert patched["description"] == "changed" and patched["slug"] == ws["slug"]
    assert api.call("PATCH", item, alice, f"/workspaces/{wid}", json={"name": "   "}).status_code == 422
    assert api.call("PATCH", item, alice, f"/workspaces/{wid}", data="{").status_code == 400
    assert api.call("PATCH", item, read_only, f"/workspaces/{wid}", json={"name": "x"}).status_code == 403
    assert api.call("PATCH", item, bob, f"/workspaces/{wid}", json={"name": "x"}).status_code == 404


def test_files_match_the_document(hub, alice, bob, contract, read_only, made):
    api, wid = contract, made.wid
    api.sections.add("files")
    files, file = "/workspaces/{workspace_id}/files", "/workspaces/{workspace_id}/files/{path}"
    up = api.call("PUT", file, alice, f"/workspaces/{wid}/files/data/counts.csv", data=b"a,b\n1,2\n").json()
    assert up == {"path": "data/counts.csv", "size": 8}
    assert api.call("PUT", file, alice, f"/workspaces/{wid}/files/data", data=b"x").status_code == 400
    assert api.call("PUT", file, read_only, f"/workspaces/{wid}/files/ro.txt", data=b"x").status_code == 403
    assert api.call("PUT", file, bob, f"/workspaces/{wid}/files/planted.txt", data=b"x").status_code == 404
    # over the size limit: refused from the Content-Length, before the body is read
    too_large = declaring_length(hub, "PUT", f"/hub/api/workspaces/{wid}/files/huge.bin", alice, 11 * 1024**3)
    api.check(too_large, file, "put")
    assert too_large.status_code == 413

    listing = api.call("GET", files, alice, f"/workspaces/{wid}/files").json()
    assert listing["path"] == "" and [e["name"] for e in listing["items"]] == ["data", "README.md"]
    listing = api.call("GET", files, alice, f"/workspaces/{wid}/files?path=data&limit=1").json()
    assert listing["path"] == "data" and listing["items"][0]["type"] == "file"
    assert api.call("GET", files, alice, f"/workspaces/{wid}/files?path=nope").status_code == 404
    assert api.call("GET", files, alice, f"/workspaces/{wid}/files?path=../x").status_code == 400
    assert api.call("GET", files, alice, f"/workspaces/{wid}/files?path=README.md").status_code == 400
    assert api.call("GET", files, None, f"/workspaces/{wid}/files").status_code == 403

    r = api.call("GET", file, alice, f"/workspaces/{wid}/files/data/counts.csv")
    assert r.status_code == 200 and r.content == b"a,b\n1,2\n"
    assert "attachment" in r.headers["Content-Disposition"]
    assert api.call("GET", file, alice, f"/workspaces/{wid}/files/missing.txt").status_code == 404
    assert api.call("GET", file, alice, f"/workspaces/{wid}/files/..%2Fx").status_code in (400, 404)
    assert api.call("GET", file, None, f"/workspaces/{wid}/files/data/counts.csv").status_code == 403
    r = api.call("GET", file, alice, f"/workspaces/{wid}/files/data?format=zip")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    assert api.call("GET", file, alice, f"/workspaces/{wid}/files/data?format=rar").status_code == 400
    r = api.call("PUT", file, alice, f"/workspaces/{wid}/files/README.md", data=b"x", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    # the text view: read, save over the version read, refusals
    r = api.call("GET", file, alice, f"/workspaces/{wid}/files/data/counts.csv?format=text")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain; charset=utf-8"
    saved = api.call(
        "PUT",
        file,
        alice,
        f"/workspaces/{wid}/files/data/counts.csv?format=text",
        data=b"a,b\n1,2\n",
        headers={"If-Match": r.headers["ETag"]},
    )
    assert saved.status_code == 201 and saved.headers["ETag"] != r.headers["ETag"]
    r = api.call(
        "PUT",
        file,
        alice,
        f"/workspaces/{wid}/files/data/counts.csv?format=text",
        data=b"a,b\n",
        headers={"If-Match": r.headers["ETag"]},
    )
    assert r.status_code == 412
    assert api.call("PUT", file, alice, f"/workspaces/{wid}/files/t.txt?format=text", data=b"\xff").status_code == 422
    api.call("PUT", file, alice, f"/workspaces/{wid}/files/t.bin", data=b"\x00\x01")
    assert api.call("GET", file, alice, f"/workspaces/{wid}/files/t.bin?format=text").status_code == 422
    r = declaring_length(hub, "PATCH", f"/hub/api/workspaces/{wid}/files/t.bin", alice, 70_000)
    assert api.check(r, file, "patch").status_code == 413
    assert api.call("DELETE", file, alice, f"/workspaces/{wid}/files/t.bin").status_code == 200

    # folders, moves, deletes
    body = {"type": "directory"}
    assert not errors(body, request_schema(file, "post"))
    made = api.call("POST", file, alice, f"/workspaces/{wid}/files/results/a", json=body).json()
    assert made["type"] == "directory"
    assert api.call("POST", file, alice, f"/workspaces/{wid}/files/results/a", json=body).status_code == 409
    assert api.call("POST", file, alice, f"/workspaces/{wid}/files/results/b", data="{").status_code == 400
    assert api.call("POST", file, read_only, f"/workspaces/{wid}/files/b", json=body).status_code == 403
    assert api.call("POST", file, bob, f"/workspaces/{wid}/files/b", json=body).status_code == 404
    move = {"path": "results/a/counts.csv", "overwrite": False}
    assert not errors(move, request_schema(file, "patch"))
    moved = api.call("PATCH", file, alice, f"/workspaces/{wid}/files/data/counts.csv", json=move).json()
    assert moved["path"] == "results/a/counts.csv"
    r = api.call("PATCH", file, alice, f"/workspaces/{wid}/files/README.md", json={"path": "results/a"})
    assert r.status_code == 409
    assert api.call("PATCH", file, alice, f"/workspaces/{wid}/files/nope", json={"path": "x"}).status_code == 404
    assert (
        api.call("PATCH", file, alice, f"/workspaces/{wid}/files/results", json={"path": "results/x"}).status_code
        == 400
    )
    assert api.call("PATCH", file, read_only, f"/workspaces/{wid}/files/results", json={"path": "x"}).status_code == 403
    assert api.call("DELETE", file, alice, f"/workspaces/{wid}/files/results").status_code == 409
    gone = api.call("DELETE", file, alice, f"/workspaces/{wid}/files/results?recursive=1").json()
    assert gone == {"path": "results", "type": "directory", "freed_bytes": 8}
    assert api.call("DELETE", file, alice, f"/workspaces/{wid}/files/results").status_code == 404
    assert api.call("DELETE", file, alice, f"/workspaces/{wid}/files/").status_code == 400
    assert api.call("DELETE", file, read_only, f"/workspaces/{wid}/files/README.md").status_code == 403


def test_jobs_match_the_document(hub, alice, bob, contract, read_only, made):
    api, ws, wid, second = contract, made.ws, made.wid, made.second
    api.sections.add("jobs")
    item = "/workspaces/{workspace_id}"
    types = api.call("GET", "/job-types", alice).json()
    assert "jupyterlab" in [t["name"] for t in types]
    assert api.call("GET", "/job-types", None).status_code == 403
    launch = "/workspaces/{workspace_id}/jobs"
    body = {"job_type": "jupyterlab", "resources": {"cpus": 1, "memory": "1G"}}
    assert not errors(body, request_schema(launch, "post"))
    assert api.call("POST", launch, read_only, f"/workspaces/{wid}/jobs", json=body).status_code == 403
    assert api.call("POST", launch, bob, f"/workspaces/{wid}/jobs", json=body).status_code == 404
    assert api.call("POST", launch, alice, f"/workspaces/{wid}/jobs", json={"job_type": "nope"}).status_code == 422
    assert api.call("POST", launch, alice, f"/workspaces/{wid}/jobs", data="{").status_code == 400
    jobs_before = api.call("GET", "/jobs", alice).json()["_pagination"]["total"]
    job = api.call("POST", launch, alice, f"/workspaces/{wid}/jobs", json=body).json()
    assert job["status"] in ("pending", "queued") and job["resources"] == {"cpus": 1, "memory": "1G"}
    assert api.call("POST", launch, alice, f"/workspaces/{wid}/jobs", json=body).status_code == 409
    active = api.call("GET", item, alice, f"/workspaces/{wid}").json()
    assert active["status"] == "active" and active["active_job"]["id"] == job["id"]

    one = "/jobs/{job_id}"
    job = hub.wait_job(job["id"], alice, {"running", "failed"})
    running = api.call("GET", one, alice, f"/jobs/{job['id']}").json()
    assert running["status"] == "running", running["reason"]
    assert running["url"] == f"/user/uwsalice/{ws['slug']}/lab"
    assert api.call("GET", one, bob, f"/jobs/{job['id']}").status_code == 404
    assert api.call("GET", one, alice, "/jobs/0").status_code == 404
    assert api.call("GET", one, None, f"/jobs/{job['id']}").status_code == 403
    # only a starting SLURM job's own server token wakes the hub (its 204: SUCCEEDS_ELSEWHERE)
    wake = "/jobs/{job_id}/wake"
    assert api.call("POST", wake, alice, f"/jobs/{job['id']}/wake").status_code == 403
    assert api.call("POST", wake, None, f"/jobs/{job['id']}/wake").status_code == 403

    jobs = api.call("GET", "/jobs", alice, f"/jobs?workspace={wid}&status=pending,queued,running").json()
    assert [j["id"] for j in jobs["items"]] == [job["id"]]
    assert api.call("GET", "/jobs", alice).json()["_pagination"]["total"] == jobs_before + 1
    assert api.call("GET", "/jobs", alice, "/jobs?status=bogus").status_code == 400
    assert api.call("GET", "/jobs", alice, "/jobs?workspace=abc").status_code == 404
    assert api.call("GET", "/jobs", None).status_code == 403

    # deleting is refused while the job runs
    assert api.call("DELETE", item, alice, f"/workspaces/{wid}").status_code == 409

    stop = "/jobs/{job_id}/stop"
    assert api.call("POST", stop, read_only, f"/jobs/{job['id']}/stop").status_code == 403
    assert api.call("POST", stop, bob, f"/jobs/{job['id']}/stop").status_code == 404
    stopping = api.call("POST", stop, alice, f"/jobs/{job['id']}/stop")
    assert stopping.status_code == 202 and stopping.json()["status"] in ("stopping", "completed")
    done = hub.wait_job(job["id"], alice, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed" and done["reason"] == "Stopped on request"
    again = api.call("POST", stop, alice, f"/jobs/{job['id']}/stop")
    assert again.status_code == 200 and again.json()["status"] == "completed"
    assert api.call("GET", one, alice, f"/jobs/{job['id']}").json()["url"] is None

    # a job that fails has its reason
    broken = api.call("POST", launch, alice, f"/workspaces/{second['id']}/jobs", json={"job_type": "broken"}).json()
    failed = hub.wait_job(broken["id"], alice, {"failed", "running", "completed"}, timeout=30)
    failed = api.call("GET", one, alice, f"/jobs/{failed['id']}").json()
    assert failed["status"] == "failed" and "exited with status 3" in failed["reason"]
    output = "/jobs/{job_id}/output"
    out = api.call("GET", output, alice, f"/jobs/{failed['id']}/output").json()
    assert "boom: the server cannot start" in out["output"]
    assert api.call("GET", output, bob, f"/jobs/{failed['id']}/output").status_code == 404
    assert api.call("GET", output, None, f"/jobs/{failed['id']}/output").status_code == 403

    # a batch job: parameters, its log (whole, a range, followed), its results, deleting it
    batch = {"job_type": "echo", "parameters": {"text": "contract"}}
    assert not errors(batch, request_schema(launch, "post"))
    echo = api.call("POST", launch, alice, f"/workspaces/{second['id']}/jobs", json=batch).json()
    assert echo["interactive"] is False and echo["parameters"] == {"text": "contract"}
    bad = {"job_type": "echo", "parameters": {"text": 5}}
    assert api.call("POST", launch, alice, f"/workspaces/{second['id']}/jobs", json=bad).status_code == 422
    assert api.call("DELETE", one, alice, f"/jobs/{echo['id']}").status_code == 409
    echo = hub.wait_job(echo["id"], alice, {"completed", "failed", "cancelled"})
    assert echo["status"] == "completed" and echo["exit_code"] == 0 and echo["results"] == []
    jobs = api.call("GET", "/jobs", alice, f"/jobs?workspace={second['id']}&job_type=echo").json()
    assert [j["id"] for j in jobs["items"]] == [echo["id"]]
    log = "/jobs/{job_id}/log"
    assert api.call("GET", log, alice, f"/jobs/{echo['id']}/log").text == "contract\n"
    tail = api.call("GET", log, alice, f"/jobs/{echo['id']}/log", headers={"Range": "bytes=-3"})
    assert (tail.status_code, tail.text) == (206, "ct\n")
    assert api.call("GET", log, alice, f"/jobs/{echo['id']}/log", headers={"Range": "bytes=50-"}).status_code == 416
    assert api.call("GET", log, alice, f"/jobs/{echo['id']}/log", headers={"Range": "rows=1"}).status_code == 400
    assert api.call("GET", log, alice, f"/jobs/{failed['id']}/log").status_code == 409
    assert api.call("GET", log, bob, f"/jobs/{echo['id']}/log").status_code == 404
    assert api.call("GET", log, None, f"/jobs/{echo['id']}/log").status_code == 403
    stream = "/jobs/{job_id}/log/stream"
    with hub.request("GET", f"/hub/api/jobs/{echo['id']}/log/stream", alice, stream=True) as r:
        api.check(r, stream, "get")
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert "data: contract" in r.text and "event: end" in r.text
    assert api.call("GET", stream, alice, f"/jobs/{echo['id']}/log/stream?offset=-1").status_code == 400
    assert api.call("GET", stream, alice, f"/jobs/{failed['id']}/log/stream").status_code == 409
    assert api.call("GET", stream, bob, f"/jobs/{echo['id']}/log/stream").status_code == 404
    assert api.call("GET", stream, None, f"/jobs/{echo['id']}/log/stream").status_code == 403
    assert api.call("DELETE", one, read_only, f"/jobs/{echo['id']}").status_code == 403
    assert api.call("DELETE", one, bob, f"/jobs/{echo['id']}").status_code == 404
    assert api.call("DELETE", one, alice, f"/jobs/{echo['id']}?results=yes").status_code == 400
    assert api.call("DELETE", one, alice, f"/jobs/{echo['id']}?results=true").json()["id"] == echo["id"]
    assert api.call("GET", one, alice, f"/jobs/{echo['id']}").status_code == 404

    # deleting: the workspace answers deleting until it is gone
    assert api.call("DELETE", item, read_only, f"/workspaces/{wid}").status_code == 403
    assert api.call("DELETE", item, bob, f"/workspaces/{wid}").status_code == 404
    deleting = api.call("DELETE", item, alice, f"/workspaces/{wid}").json()
    assert deleting["status"] == "deleting" and deleting["active_job"] is None
    api.call("DELETE", item, alice, f"/workspaces/{second['id']}")


def test_accounts_match_the_document(hub, alice, contract, made):
    api, tag = contract, made.tag
    api.sections.add("accounts")
    admin = hub.admin_token
    name = f"uwsdoc{tag}"
    body = {
        "username": name,
        "password": "a long password",
        "email": f"{name}@example.org",
        "display_name": "Doc Tester",
    }
    assert not errors(body, request_schema("/accounts", "post"))
    account = api.call("POST", "/accounts", admin, json=body).json()
    assert (account["username"], account["disabled"], account["admin"]) == (name, False, False)
    assert api.call("POST", "/accounts", admin, json=body).status_code == 409
    assert api.call("POST", "/accounts", admin, json={**body, "username": "Not Valid"}).status_code == 422
    assert (
        api.call("POST", "/accounts", admin, json={**body, "username": name + "x", "password": "short"}).status_code
        == 422
    )
    assert api.call("POST", "/accounts", admin, data="{").status_code == 400
    assert api.call("POST", "/accounts", alice, json=body).status_code == 403
    accounts = api.call("GET", "/accounts", admin, "/accounts?limit=500").json()
    assert name in [a["username"] for a in accounts["items"]]
    assert api.call("GET", "/accounts", alice).status_code == 403
    assert api.call("GET", "/accounts", admin, "/accounts?offset=x").status_code == 400
    one_account = "/accounts/{username}"
    assert api.call("GET", one_account, admin, f"/accounts/{name}").json()["email"] == f"{name}@example.org"
    assert api.call("GET", one_account, admin, "/accounts/no-such-account").status_code == 404
    assert api.call("GET", one_account, alice, f"/accounts/{name}").status_code == 403
    changed = api.call("PATCH", one_account, admin, f"/accounts/{name}", json={"disabled": True, "unlock": True}).json()
    assert changed["disabled"] is True and changed["locked"] is False
    assert api.call("PATCH", one_account, admin, f"/accounts/{name}", json={"password": "short"}).status_code == 422
    assert api.call("PATCH", one_account, admin, f"/accounts/{name}", json={"admin": True}).status_code == 422
    assert api.call("PATCH", one_account, admin, "/accounts/no-such-account", json={"unlock": True}).status_code == 404
    assert api.call("PATCH", one_account, admin, f"/accounts/{name}", data="{").status_code == 400
    hub.api("DELETE", f"users/{name}", expect=204)  # JupyterHub's API; deletes the account too


def test_sharing_match_the_document(hub, alice, bob, contract, read_only, made):
    api, tag = contract, made.tag
    api.sections.add("sharing")
    item = "/workspaces/{workspace_id}"
    shared = api.call("POST", "/workspaces", alice, json={"name": f"OpenAPI shared {tag}"}).json()
    sid, shares = shared["id"], "/workspaces/{workspace_id}/shares"
    spath = f"/workspaces/{sid}/shares"
    body = {"user": "uwsbob", "level": "editor"}
    assert not errors(body, request_schema(shares, "post"))
    grant = api.call("POST", shares, alice, spath, json=body)
    assert grant.status_code == 201
    grant = grant.json()
    assert (grant["kind"], grant["level"], grant["status"], grant["copy"]) == (
        "collaborate",
        "editor",
        "accepted",
        None,
    )
    changed = api.call("POST", shares, alice, spath, json={"user": "uwsbob", "level": "viewer"})
    assert changed.status_code == 200 and changed.json()["id"] == grant["id"]
    for bad in ({"user": "uwsbob", "group": "x"}, {"kind": "copy", "group": "x"}, {"user": "uwsbob", "level": "boss"}):
        assert errors(bad, request_schema(shares, "post")) or bad.get("kind") == "copy"
        assert api.call("POST", shares, alice, spath, json=bad).status_code == 422
    assert api.call("POST", shares, alice, spath, json={"user": "nobody-at-all"}).status_code == 400
    assert api.call("POST", shares, alice, spath, data="{").status_code == 400
    assert api.call("POST", shares, bob, spath, json={"user": "uwsbob"}).status_code == 403  # a viewer
    assert api.call("POST", shares, read_only, spath, json={"user": "uwsbob"}).status_code == 403
    assert grant["id"] in [x["id"] for x in api.call("GET", shares, alice, spath).json()["items"]]
    assert api.call("GET", shares, bob, spath).status_code == 403
    assert api.call("GET", shares, alice, "/workspaces/999999/shares").status_code == 404
    assert api.call("POST", shares, alice, "/workspaces/999999/shares", json={"user": "uwsbob"}).status_code == 404
    invite = api.call("POST", shares, alice, spath, json={"kind": "copy", "user": "uwsbob", "name": f"Copy {tag}"})
    assert invite.status_code == 201 and invite.json()["status"] == "pending"
    invite = invite.json()
    assert api.call("POST", shares, alice, spath, json={"kind": "copy", "user": "uwsbob"}).status_code == 409
    received = api.call("GET", "/shares", bob, "/shares?status=pending,accepted").json()["items"]
    assert {invite["id"], grant["id"]} <= {x["id"] for x in received}
    assert api.call("GET", "/shares", bob, "/shares?status=nope").status_code == 400
    assert api.call("GET", "/shares", hub.admin_token).status_code == 400
    assert api.call("GET", "/shares", None).status_code == 403
    accept, decline = "/shares/{share_id}/accept", "/shares/{share_id}/decline"
    assert api.call("POST", accept, alice, f"/shares/{invite['id']}/accept").status_code == 404
    assert api.call("POST", accept, bob, f"/shares/{grant['id']}/accept").status_code == 409
    assert api.call("POST", accept, bob, "/shares/abc/accept").status_code == 404
    assert api.call("POST", accept, hub.admin_token, f"/shares/{invite['id']}/accept").status_code == 400
    assert api.call("POST", accept, read_only, f"/shares/{invite['id']}/accept").status_code == 403
    assert api.call("POST", accept, bob, f"/shares/{invite['id']}/accept").status_code == 202

    done = copy_made(api, bob, invite["id"], 30)
    api.call("DELETE", item, bob, f"/workspaces/{done['copy']['workspace_id']}")
    # bob's notifications of it: listed, read, dismissed (his only)
    notes = api.call("GET", "/notifications", bob, "/notifications?unread=true").json()["items"]
    assert notes and all(n["kind"] == "notification" and n["read_at"] is None for n in notes)
    note, read, dismiss = notes[0]["id"], "/notifications/{event_id}/read", "/notifications/{event_id}"
    assert api.call("POST", read, alice, f"/notifications/{note}/read").status_code == 404
    assert api.call("POST", read, bob, f"/notifications/{note}/read").json()["read_at"] is not None
    assert api.call("DELETE", dismiss, bob, f"/notifications/{note}").json()["dismissed_at"] is not None
    assert api.call("DELETE", dismiss, bob, "/notifications/abc").status_code == 404
    assert api.call("POST", read, None, f"/notifications/{note}/read").status_code == 403
    assert api.call("DELETE", dismiss, None, f"/notifications/{note}").status_code == 403
    assert api.call("GET", "/notifications", hub.admin_token).status_code == 400
    assert api.call("GET", "/notifications", None).status_code == 403
    declined = api.call("POST", decline, bob, f"/shares/{invite['id']}/decline")
    assert (declined.status_code, declined.json()["message"]) == (409, "This invitation was accepted")
    carol = hub.add_user("uwscarol")
    other = api.call("POST", shares, alice, spath, json={"kind": "copy", "user": "uwscarol"}).json()
    assert api.call("POST", decline, bob, f"/shares/{other['id']}/decline").status_code == 404
    assert api.call("POST", decline, carol, f"/shares/{other['id']}/decline").json()["status"] == "declined"
    assert api.call("POST", decline, carol, f"/shares/{grant['id']}/decline").status_code in (404, 409)
    assert api.call("POST", decline, carol, "/shares/0/decline").status_code == 404
    assert api.call("POST", decline, hub.admin_token, f"/shares/{other['id']}/decline").status_code == 400
    assert api.call("POST", decline, read_only, f"/shares/{other['id']}/decline").status_code == 403
    assert api.call("POST", decline, carol, f"/shares/{grant['id']}/decline").status_code == 404
    assert api.call("POST", accept, carol, f"/shares/{other['id']}/accept").status_code == 409
    found = api.call("GET", "/share-recipients", alice, "/share-recipients?q=uwsbo").json()
    assert [u["name"] for u in found["users"]] == ["uwsbob"]
    assert api.call("GET", "/share-recipients", alice).status_code == 400
    assert api.call("GET", "/share-recipients", None, "/share-recipients?q=x").status_code == 403
    one_share = "/workspaces/{workspace_id}/shares/{share_id}"
    assert api.call("DELETE", one_share, bob, f"{spath}/{grant['id']}").status_code == 403
    assert api.call("DELETE", one_share, alice, f"{spath}/{grant['id']}").json()["id"] == grant["id"]
    assert api.call("DELETE", one_share, alice, f"{spath}/{grant['id']}").status_code == 404
    assert api.call("GET", item, bob, f"/workspaces/{sid}").status_code == 404
    api.call("DELETE", item, alice, f"/workspaces/{sid}")


def test_quotas_match_the_document(hub, alice, contract, made):
    api, tag = contract, made.tag
    api.sections.add("quotas")

    def settled():
        items = api.call("GET", "/workspaces", alice, "/workspaces?limit=500").json()["items"]
        return None if any(w["status"] == "deleting" for w in items) else items

    alices = wait_for(settled, 30, what="alice's deletions to end")
    quota, admin = "/quotas/{user}", hub.admin_token
    mine = api.call("GET", quota, alice, "/quotas/uwsalice").json()
    # her usage is what her workspaces measure (no write is under way)
    assert mine["user"] == "uwsalice" and mine["usage"]["disk_bytes"] == sum(
        w["disk_usage_bytes"] for w in alices if w["owner"] == "uwsalice"
    )
    assert api.call("GET", quota, alice, "/quotas/uwsbob").status_code == 404
    assert api.call("GET", quota, None, "/quotas/uwsalice").status_code == 403
    limits = {
        "disk_bytes": 10**12,
        "core_hours": 100.5,
        "concurrent_jobs": 4,
        "max_cpus": 8,
        "max_memory_bytes": 2**35,
        "max_gpus": 1,
    }
    assert not errors(limits, request_schema(quota, "put"))
    assert api.call("PUT", quota, alice, "/quotas/uwsalice", json=limits).status_code == 403
    set_ = api.call("PUT", quota, admin, "/quotas/uwsalice", json={"override": limits}).json()
    assert set_["override"] == limits and set_["limits"] == limits
    # what a GET shows can be PUT back as it is; the flat shape of earlier releases still works
    assert api.call("PUT", quota, admin, "/quotas/uwsalice", json={"override": set_["override"]}).json() == set_
    assert api.call("PUT", quota, admin, "/quotas/uwsalice", json=limits).json()["override"] == limits
    for bad in ({"disk_bytes": -1}, {"core_hours": "lots"}, {"cpus": 1}):
        assert errors(bad, request_schema(quota, "put"))
        assert api.call("PUT", quota, admin, "/quotas/uwsalice", json=bad).status_code == 422
    assert api.call("PUT", quota, admin, "/quotas/uwsalice", data="{").status_code == 400
    assert api.call("PUT", quota, admin, "/quotas/nobody-at-all", json={}).status_code == 404
    assert api.call("PUT", quota, admin, "/quotas/uwsalice", json={}).json()["override"] is None
    group, gquota = f"oa-{tag}", "/quotas/groups/{group}"
    hub.api("POST", f"groups/{group}", json={"users": ["uwsalice"]}, expect=201)
    assert api.call("GET", gquota, admin, f"/quotas/groups/{group}").json()["override"] is None
    assert (
        api.call("PUT", gquota, admin, f"/quotas/groups/{group}", json={"concurrent_jobs": 3}).json()["override"][
            "concurrent_jobs"
        ]
        == 3
    )
    assert api.call("GET", quota, alice, "/quotas/uwsalice").json()["limits"]["concurrent_jobs"] == 3
    assert api.call("PUT", gquota, admin, f"/quotas/groups/{group}", json={"max_gpus": -2}).status_code == 422
    assert api.call("PUT", gquota, admin, f"/quotas/groups/{group}", data="[").status_code == 400
    assert api.call("GET", gquota, alice, f"/quotas/groups/{group}").status_code == 403
    assert api.call("GET", gquota, admin, "/quotas/groups/no-such-group").status_code == 404
    assert api.call("PUT", gquota, alice, f"/quotas/groups/{group}", json={}).status_code == 403
    assert api.call("PUT", gquota, admin, "/quotas/groups/no-such-group", json={}).status_code == 404
    assert api.call("PUT", gquota, admin, f"/quotas/groups/{group}", json={}).json()["override"] is None
    assert [u["user"] for u in api.call("GET", "/usage", alice).json()["items"]] == ["uwsalice"]
    everyone = api.call("GET", "/usage", admin, "/usage?sort=disk_bytes&order=desc&limit=200").json()["items"]
    assert {"uwsalice", "uwsbob"} <= {u["user"] for u in everyone}
    assert [u["disk_bytes"] for u in everyone] == sorted((u["disk_bytes"] for u in everyone), reverse=True)
    assert api.call("GET", "/usage", admin, "/usage?sort=bogus").status_code == 400
    assert api.call("GET", "/usage", None).status_code == 403
    assert api.call("PUT", quota, admin, "/quotas/uwsalice", json={"override": None}).json()["override"] is None


def test_events_match_the_document(hub, alice, contract, made):
    api, wid = contract, made.wid
    api.sections.add("events")
    event_schema = pointer("components", "schemas", "Event")
    with hub.request("GET", f"/hub/api/events?workspace={wid}&last_event_id=0", alice, stream=True) as r:
        api.check(r, "/events", "get")
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(chunk_size=None, decode_unicode=True):
            if line.startswith("data:"):
                event = json.loads(line[5:])
                assert not errors(event, event_schema), errors(event, event_schema)
                assert event["workspace_id"] == wid
                break
    assert api.call("GET", "/events", alice, "/events?last_event_id=x").status_code == 400
    assert api.call("GET", "/events", alice, "/events?workspace=abc").status_code == 404
    assert api.call("GET", "/events", None).status_code == 403
    conn = websocket.create_connection(
        hub.url.replace("http", "ws") + f"/hub/api/events/ws?workspace={wid}&last_event_id=0",
        header=[f"Authorization: token {alice}"],
        timeout=30,
    )
    event = json.loads(conn.recv())
    conn.close()
    assert not errors(event, event_schema) and event["workspace_id"] == wid
    api.saw("/events/ws", "get", "101")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(hub.url.replace("http", "ws") + "/hub/api/events/ws", timeout=10)
    assert refused.value.status_code == 403
    api.saw("/events/ws", "get", "403")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            hub.url.replace("http", "ws") + "/hub/api/events/ws?workspace=abc",
            header=[f"Authorization: token {alice}"],
            timeout=10,
        )
    assert refused.value.status_code == 404
    api.saw("/events/ws", "get", "404")


def test_what_is_under_way_refuses_changes(hub, alice, bob, api):
    """A workspace being deleted refuses changes, and a copy being made cannot be withdrawn.

    Both last as long as the files take to remove or copy: a workspace of many
    files (made on disk) keeps each under way far longer than one request takes.
    """
    ws = api.call("POST", "/workspaces", alice, json={"name": f"OpenAPI busy {uuid.uuid4().hex[:8]}"}).json()
    directory = hub.workspaces_root / ws["owner"] / ws["slug"]
    for i in range(100):
        (directory / f"d{i}").mkdir()
        for j in range(200):
            (directory / f"d{i}" / f"f{j}").write_bytes(b"x")

    spath, one_share = f"/workspaces/{ws['id']}/shares", "/workspaces/{workspace_id}/shares/{share_id}"
    invite = api.call(
        "POST", "/workspaces/{workspace_id}/shares", alice, spath, json={"kind": "copy", "user": "uwsbob"}
    )
    invite = invite.json()
    api.call("POST", "/shares/{share_id}/accept", bob, f"/shares/{invite['id']}/accept")
    r = api.call("DELETE", one_share, alice, f"{spath}/{invite['id']}")
    assert (r.status_code, r.json()["message"]) == (409, "The copy is being made; delete the share when it is done")

    done = copy_made(api, bob, invite["id"], 120)
    item = "/workspaces/{workspace_id}"
    api.call("DELETE", item, bob, f"/workspaces/{done['copy']['workspace_id']}")

    assert api.call("DELETE", item, alice, f"/workspaces/{ws['id']}").status_code == 202
    r = api.call("PATCH", item, alice, f"/workspaces/{ws['id']}", json={"description": "too late"})
    assert (r.status_code, r.json()["message"]) == (409, "The workspace is being deleted")
    wait_for(
        lambda: hub.request("GET", f"workspaces/{ws['id']}", alice).status_code == 404,
        120,
        what="the workspace to be deleted",
    )


def test_uws_matches_the_document(hub, alice, bob, contract, read_only, made):
    """The UWS interface (batch job type ``echo``): XML and text as the document says,
    each XML document checked against UWS.xsd's structure too."""
    api = contract
    api.sections.add("uws")
    wid = hub.api("POST", "workspaces", alice, json={"name": f"OpenAPI UWS {made.tag}"}, expect=201)["id"]
    jobs, job = "/uws/{job_type}", "/uws/{job_type}/{job_id}"

    def call(method, template, token, path, **kw):
        r = api.call(method, template, token, path, **kw)
        if r.headers.get("Content-Type", "").startswith("application/xml"):
            uwsxml.check(r.content)
        return r

    assert call("GET", jobs, alice, "/uws/echo").status_code == 200
    assert call("GET", jobs, alice, "/uws/jupyterlab").status_code == 404
    assert call("GET", jobs, alice, "/uws/echo?LAST=0").status_code == 400
    assert call("GET", jobs, read_only, "/uws/echo").status_code == 200
    assert call("POST", jobs, read_only, "/uws/echo", data={"WORKSPACE": wid}).status_code == 403
    assert call("POST", jobs, alice, "/uws/echo", data={"WORKSPACE": wid, "bogus": "1"}).status_code == 422
    assert call("POST", jobs, alice, "/uws/echo", data={"WORKSPACE": wid, "LAST": "1"}).status_code == 400
    r = call("POST", jobs, alice, "/uws/echo", data={"WORKSPACE": wid, "text": "hi", "RUNID": "contract"})
    jid = r.headers["Location"].rsplit("/", 1)[1]
    here = f"/uws/echo/{jid}"
    assert call("GET", job, alice, here + "?WAIT=1&PHASE=QUEUED").status_code == 200
    assert call("GET", job, alice, here + "?WAIT=x").status_code == 400
    assert call("GET", job, bob, here).status_code == 404
    for sub in (
        "phase",
        "executionduration",
        "destruction",
        "error",
        "quote",
        "owner",
        "results",
        "parameters",
        "parameters/{name}",
        "log",
    ):
        path = here + "/" + sub.replace("{name}", "text")
        assert call("GET", job + "/" + sub, alice, path).status_code == 200, sub
        assert call("GET", job + "/" + sub, bob, path).status_code == 404, sub
    assert call("GET", job + "/parameters/{name}", alice, here + "/parameters/nope").status_code == 404
    assert call("POST", job, alice, here, data={"text": "changed"}).status_code == 303
    assert call("POST", job + "/parameters", alice, here + "/parameters", data={"text": "again"}).status_code == 303
    assert call("POST", job + "/parameters", alice, here + "/parameters", data={"nope": "1"}).status_code == 422
    assert (
        call(
            "POST", job + "/executionduration", alice, here + "/executionduration", data={"EXECUTIONDURATION": "60"}
        ).status_code
        == 303
    )
    assert (
        call(
            "POST", job + "/executionduration", alice, here + "/executionduration", data={"EXECUTIONDURATION": "x"}
        ).status_code
        == 400
    )
    assert (
        call(
            "POST", job + "/destruction", alice, here + "/destruction", data={"DESTRUCTION": "2027-01-01T00:00:00Z"}
        ).status_code
        == 303
    )
    assert call("POST", job + "/destruction", alice, here + "/destruction", data={}).status_code == 400
    assert call("POST", job + "/phase", read_only, here + "/phase", data={"PHASE": "RUN"}).status_code == 403
    assert call("POST", job + "/phase", alice, here + "/phase", data={"PHASE": "RUN"}).status_code == 303
    assert call("POST", job + "/phase", alice, here + "/phase", data={"PHASE": "RUN"}).status_code == 403
    wait_for(lambda: call("GET", job + "/phase", alice, here + "/phase").text == "COMPLETED", 60, what="the job")
    # a file in the job's results folder is one of its results
    hub.api("PUT", f"workspaces/{wid}/files/results/{jid}/out.txt", alice, data=b"out", expect=201)
    assert 'id="out.txt"' in call("GET", job + "/results", alice, here + "/results").text
    r = call("GET", job + "/results/{path}", alice, f"{here}/results/out.txt")
    assert (r.status_code, r.content) == (200, b"out")
    assert call("GET", job + "/results/{path}", alice, f"{here}/results/nope").status_code == 404
    assert call("POST", job, alice, here, data={"ACTION": "DELETE"}).status_code == 303
    r = call("POST", jobs, alice, "/uws/echo", data={"WORKSPACE": wid, "PHASE": "RUN"})
    assert call("DELETE", job, alice, "/uws/echo/" + r.headers["Location"].rsplit("/", 1)[1]).status_code == 303
    assert call("DELETE", job, alice, here).status_code == 404
