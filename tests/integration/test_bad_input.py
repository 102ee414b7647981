"""Bad input gets a 4xx that says what is wrong, never a 500 (issue 11, finding 9).

Numbers a client sends are bounded before they reach SQL or arithmetic (one
pagination parser for every list, event ids, job resources), and strings that
are stored or looked up refuse NUL and other control characters (PostgreSQL
cannot store a NUL; a terminal escape in a name is trouble on every page).
"""

from __future__ import annotations

import json
import re
import typing
import uuid

import pytest
import requests
import websocket
import yaml

from ..helpers import launch
from ..hubutil import REPO

#: one past the largest SQL BIGINT: what overflowed the database drivers
TOO_BIG = str(2**63)


def lists(hub, alice, wid):
    """Every paginated list of the API, with the token that may read it."""
    return [
        ("workspaces", alice),
        ("jobs", alice),
        ("usage", alice),
        ("shares", alice),
        (f"workspaces/{wid}/shares", alice),
        (f"workspaces/{wid}/files", alice),
        ("accounts", hub.admin_token),
    ]


def test_pagination_is_bounded_on_every_list(hub, alice, workspace):
    for path, token in lists(hub, alice, workspace["id"]):
        for query, words in (
            (f"offset={TOO_BIG}", "offset"),
            ("offset=-1", "offset"),
            ("limit=0", "limit"),
            ("offset=" + "9" * 5000, "offset"),
            ("limit=1.5", "limit"),
        ):
            r = hub.request("GET", f"{path}?{query}", token)
            assert r.status_code == 400, (path, query[:40], r.status_code, r.text[:300])
            message = r.json()["message"]
            assert words in message and "integer" in message, (path, query[:40], message)
            assert len(message) < 300, message  # a huge value is not echoed whole
        # a page larger than the hub's largest is that largest page, as in JupyterHub's API
        page = hub.api("GET", f"{path}?limit=1000000&offset=0", token, expect=200)
        assert page["_pagination"]["limit"] == 200 and page["_pagination"]["offset"] == 0


def test_a_huge_last_event_id_is_refused_before_the_stream_starts(hub, alice):
    url = f"{hub.url}/hub/api/events"
    auth = {"Authorization": f"token {alice}"}
    for kw, name in (
        ({"params": {"last_event_id": TOO_BIG}}, "last_event_id"),
        ({"headers": {"Last-Event-ID": TOO_BIG}}, "Last-Event-ID header"),
    ):
        headers = {**auth, **kw.pop("headers", {})}
        with requests.get(url, headers=headers, stream=True, timeout=30, **kw) as r:
            assert r.status_code == 400, r.status_code
            assert name in r.json()["message"], r.text
    # the WebSocket: refused at the handshake, not opened and left silent
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            hub.url.replace("http", "ws") + f"/hub/api/events/ws?last_event_id={TOO_BIG}",
            header=[f"Authorization: token {alice}"],
            timeout=10,
        )
    assert refused.value.status_code == 400
    assert b"last_event_id" in refused.value.resp_body


def test_ids_past_the_id_columns_are_not_found(hub, alice, workspace):
    """Found by tests/test_fuzz.py on PostgreSQL: an id past 2**31 (the id
    columns are SQL INTEGERs) was a 500 on every route that takes one."""
    for big in (2**31, 2**62):
        for method, path in (
            ("GET", f"workspaces/{big}"),
            ("GET", f"workspaces/{big}/files"),
            ("POST", f"workspaces/{big}/jobs"),
            ("GET", f"jobs/{big}"),
            ("POST", f"jobs/{big}/stop"),
            ("GET", f"jobs?workspace={big}"),
            ("DELETE", f"workspaces/{workspace['id']}/shares/{big}"),
            ("POST", f"shares/{big}/decline"),
        ):
            r = hub.request(method, path, alice, json={"job_type": "minimal"} if method == "POST" else None)
            assert r.status_code == 404, (method, path, r.status_code, r.text[:300])
        with requests.get(
            f"{hub.url}/hub/api/events?workspace={big}",
            headers={"Authorization": f"token {alice}"},
            stream=True,
            timeout=30,
        ) as r:
            assert r.status_code == 404, r.status_code


@pytest.mark.parametrize(
    "resources, words",
    [
        ({"memory": "9" * 5000}, "memory"),
        ({"memory": "9" * 17 + "T"}, "memory"),
        ({"memory": "2000T"}, "1024T"),
        ({"time_limit": "9" * 5000}, "time_limit"),
        ({"time_limit": "9" * 12}, "365 days"),
        ({"time_limit": "400-00:00:00"}, "365 days"),
    ],
)
def test_resource_numbers_are_bounded(hub, alice, workspace, resources, words):
    r = hub.request(
        "POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "minimal", "resources": resources}
    )
    assert r.status_code == 422, r.text[:300]
    message = r.json()["message"]
    assert words in message and "set_int_max_str_digits" not in message, message
    assert hub.api("GET", f"jobs?workspace={workspace['id']}", alice)["items"] == []


@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\x07", "\x9b"])
def test_control_characters_are_refused_in_stored_strings(hub, alice, bob, workspace, bad):
    name = f"ctl {uuid.uuid4().hex[:6]}"
    wid = workspace["id"]
    for method, path, token, body, field in [
        ("POST", "workspaces", alice, {"name": name + bad}, "name"),
        ("POST", "workspaces", alice, {"name": name, "description": "a" + bad}, "description"),
        ("PATCH", f"workspaces/{wid}", alice, {"name": "x" + bad}, "name"),
        ("PATCH", f"workspaces/{wid}", alice, {"description": bad}, "description"),
        ("POST", f"workspaces/{wid}/shares", alice, {"kind": "copy", "user": "uwsbob", "name": "c" + bad}, "name"),
        ("POST", f"workspaces/{wid}/shares", alice, {"user": "uwsbob" + bad}, "user"),
        ("POST", f"workspaces/{wid}/jobs", alice, {"job_type": "minimal" + bad}, "job_type"),
        (
            "POST",
            "accounts",
            hub.admin_token,
            {"username": "ctl" + uuid.uuid4().hex[:6], "password": "a long password", "display_name": "d" + bad},
            "display_name",
        ),
        ("PATCH", "accounts/uwsadmin", hub.admin_token, {"email": "e" + bad + "@example.org"}, "email"),
    ]:
        r = hub.request(method, path, token, json=body)
        assert r.status_code == 422, (method, path, body, r.status_code, r.text[:300])
        message = r.json()["message"]
        assert field in message and "control character" in message, message
        assert f"(found U+{ord(bad[0]):04X} at position" in message, message
    assert name not in [w["name"] for w in hub.api("GET", "workspaces", alice)["items"]]
    assert hub.api("GET", f"workspaces/{wid}", alice)["name"] == workspace["name"]
    # lines and tabs are fine in a description
    ws = hub.api("POST", "workspaces", alice, json={"name": name, "description": "one\ntwo\r\n\tthree"}, expect=201)
    assert ws["description"] == "one\ntwo\r\n\tthree"


def test_a_lone_surrogate_in_a_json_body_is_refused(hub, alice, workspace):
    """JSON may escape half of a UTF-16 pair alone (``"\\ud800"``), which is no character:
    no UTF-8 can carry it, so neither the database, a file nor an answer could. Each body
    is a 400 that says so, and nothing of it is kept (a seed file's content, a
    description or a share's user with one was a 500 before)."""
    wid = workspace["id"]
    name = f"half {uuid.uuid4().hex[:6]}"
    for method, path, body in [
        ("POST", "workspaces", '{"name": "' + name + ' \\ud800"}'),
        ("POST", "workspaces", '{"name": "' + name + '", "files": [{"path": "a.txt", "content": "\\udfff"}]}'),
        ("PATCH", f"workspaces/{wid}", '{"description": "one half: \\udbff"}'),
        ("POST", f"workspaces/{wid}/jobs", '{"job_type": "minimal", "\\ud800": 1}'),
        ("POST", f"workspaces/{wid}/shares", '{"user": "uwsbob\\ud800"}'),
    ]:
        r = hub.request(method, path, alice, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (method, path, r.status_code, r.text[:300])
        assert "surrogate" in r.json()["message"], r.text[:300]
    assert not [w for w in hub.api("GET", "workspaces", alice)["items"] if w["name"].startswith(name)]
    assert hub.api("GET", f"workspaces/{wid}", alice)["description"] == workspace["description"]
    # a whole character escaped as its pair is text as any other
    r = hub.request("PATCH", f"workspaces/{wid}", alice, json={"description": "\U0001f600"})
    assert r.status_code == 200 and r.json()["description"] == "\U0001f600", r.text[:300]


def test_a_nul_in_any_path_parameter_is_refused(hub, alice):
    """Every operation of docs/openapi.yaml with a path parameter, which documents the 400."""
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    for template, operations in spec["paths"].items():
        for method in sorted(operations.keys() & {"get", "put", "post", "patch", "delete"}):
            if "{" not in template:
                continue
            path = re.sub(r"\{\w+\}", "a%00b", template)
            # no body: the URL is refused before one is read (a body left unread on the
            # proxy's kept-alive connection would fail the next request with a 503)
            r = hub.request(method.upper(), path.lstrip("/"), alice)
            # JSON everywhere, but text in the UWS interface (as UWS answers)
            json_answer = r.headers.get("Content-Type", "").startswith("application/json")
            message = r.json()["message"] if json_answer else r.text.strip()
            assert (r.status_code, message) == (400, "The URL must not contain NUL characters (%00)"), (
                method,
                path,
                r.text[:300],
            )
            assert "400" in operations[method]["responses"], f"docs/openapi.yaml: {method} {template} lists no 400"


def test_a_streamed_upload_refused_before_its_body_says_the_connection_closes(hub, alice):
    """Tornado closes the connection after refusing a streamed request whose body it did
    not read; without ``Connection: close`` the proxy reused it for its next request,
    which failed with a 503 (seen in CI after a refused POST to the files endpoint)."""
    direct = f"http://127.0.0.1:{hub.hub_port}/hub/api/workspaces/a%00b/files/a%00b"
    for method in ("POST", "PUT", "PATCH"):
        r = hub.request(method, direct, alice)
        assert (r.status_code, r.headers.get("Connection")) == (400, "close"), (method, r.headers)
    # a request whose body was read keeps its connection
    r = hub.request("GET", f"http://127.0.0.1:{hub.hub_port}/hub/api/workspaces/a%00b", alice)
    assert r.status_code == 400 and r.headers.get("Connection") != "close"


def test_a_nul_in_the_url_is_refused(hub, alice, workspace):
    for path in (
        "quotas/uws%00alice",
        "quotas/groups/g%00",
        "accounts/a%00b",
        f"workspaces/{workspace['id']}/files/a%00b",
        "share-recipients?q=uws%00",
    ):
        token = hub.admin_token if "groups" in path or "accounts" in path else alice
        r = hub.request("GET", path, token)
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
        assert "NUL" in r.json()["message"], r.text


def test_a_bad_percent_escape_in_the_path_is_a_4xx_through_the_proxy(hub, alice, workspace):
    """A %-escape that does not decode (not UTF-8, or cut short), anywhere in the path: the
    hub's or the server's own 4xx. Node configurable-http-proxy decodes the path to find
    its route, and answered the error that raises with a 500 (uws_hub.proxy)."""
    job = launch(hub, alice, workspace)
    try:
        assert hub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
        server = f"/user/uwsalice/{workspace['slug']}"
        for path in (
            "/hub/api/uws/x/1/parameters/%ff",
            f"/hub/api/workspaces/{workspace['id']}/files/%E0%A4%A",
            "/hub/%ff",
            "/hub/workspaces/%ff",
            "/hub/user/uwsalice/no-such-server/%E0%A4%A",
            f"{server}/%ff",
        ):
            status, body = hub.raw_request("GET", path, alice)
            assert 400 <= status < 500, (path, status, body[:300])
        # where no route is, the hub's redirect into /hub/ (above), as for any path
        for path in ("/%ff", "/user/uwsalice/no-such-server/%E0%A4%A"):
            assert hub.raw_request("GET", path, alice)[0] == 302, path
        # a path that decodes reaches the server as before, as it was sent
        status, body = hub.raw_request("GET", f"{server}/caf%C3%A9", alice)
        assert (status, json.loads(body)["path"]) == (200, f"{server}/caf%C3%A9")
    finally:
        hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)


def test_a_nul_sent_to_jupyterhubs_own_routes_is_refused(hub, alice):
    """JupyterHub's own handlers, which the hub serves beside its own, passed a NUL on to
    the database: PostgreSQL cannot hold or compare one, so each was a 500 there, and the
    hub's session, which every request shares, was rolled back (the token endpoint, which
    anyone may call, too). Each is a 400 that says why, in either database."""
    oauth = {"client_secret": "x", "grant_type": "authorization_code", "redirect_uri": "http://x/"}
    for method, path, token, kw in [
        ("GET", "groups/a%00b", hub.admin_token, {}),
        ("POST", "users/uwsalice/tokens", alice, {"json": {"note": "a\u0000b"}}),
        ("POST", "oauth2/token", None, {"data": {**oauth, "client_id": "a\u0000b", "code": "c"}}),
        ("POST", "oauth2/token", None, {"data": {**oauth, "client_id": "a", "code": "c\u0000d"}}),
        ("GET", "oauth2/authorize?response_type=code&client_id=a%00b", alice, {}),
    ]:
        r = hub.request(method, path, token, **kw)
        assert r.status_code == 400 and "NUL" in r.text, (method, path, r.status_code, r.text[:300])
    # half of a UTF-16 pair, which no database holds either, as on the hub's own API
    r = hub.request("POST", "users/uwsalice/tokens", alice, data='{"note": "a\\ud800"}')
    assert r.status_code == 400 and "surrogate" in r.text, (r.status_code, r.text[:300])
    assert [t for t in hub.api("GET", "users/uwsalice/tokens", alice)["api_tokens"] if "a\x00b" in t["note"]] == []


def test_an_unknown_method_with_a_body_is_a_405_through_the_proxy(hub, alice, workspace):
    """Found by tests/test_fuzz.py: a QUERY with a body on the files endpoint (whose
    uploads are streamed) was refused before its body was read, the hub closed the
    connection while the proxy still sent, and the proxy answered 503."""
    url = f"workspaces/{workspace['id']}/files/data.csv"
    for size in (0, 200_000, 400_000) * 3:
        for method in ("QUERY", "PROPFIND"):
            r = hub.request(method, url, alice, data=b"x" * size)
            assert (r.status_code, r.json()["message"]) == (405, "Method Not Allowed"), (method, size, r.text[:200])
    # the connection the proxy keeps is fine for the next request
    assert hub.request("PUT", url, alice, data=b"a,b\n").status_code == 201


def test_found_by_the_fuzzer(hub, alice, workspace):
    """What tests/test_fuzz.py found besides finding 9: a missing JSON body was
    taken for {} (a PUT of a quota without one removed the override), JSON's
    false was taken for the number 0, a bad Last-Event-ID was ignored beside a
    last_event_id, and the WebSocket endpoint answered a plain request with an
    HTML 400 page."""
    hub.api("PUT", "quotas/uwsalice", json={"concurrent_jobs": 7}, expect=200)
    for method, path, token in (
        ("PUT", "quotas/uwsalice", hub.admin_token),
        ("PATCH", f"workspaces/{workspace['id']}", alice),
    ):
        r = hub.request(method, path, token)
        assert r.status_code == 400 and "must be a JSON object" in r.json()["message"], (path, r.text[:300])
    assert hub.api("GET", "quotas/uwsalice", alice)["override"]["concurrent_jobs"] == 7
    for body in ({"max_gpus": False}, {"concurrent_jobs": "3"}):
        r = hub.request("PUT", "quotas/uwsalice", hub.admin_token, json=body)
        assert r.status_code == 422 and "valid integer" in r.json()["message"], (body, r.text[:300])
    assert hub.api("GET", "quotas/uwsalice", alice)["override"]["concurrent_jobs"] == 7
    hub.api("PUT", "quotas/uwsalice", json={}, expect=200)
    with requests.get(
        f"{hub.url}/hub/api/events?last_event_id=0",
        stream=True,
        timeout=30,
        headers={"Authorization": f"token {alice}", "Last-Event-ID": "x"},
    ) as r:
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["message"]
    r = hub.request("GET", "events/ws", alice)
    assert r.status_code == 400 and "WebSocket" in r.json()["message"], r.text[:300]


def test_every_request_string_is_checked_for_control_characters():
    """The rule holds for request models yet to come: every string field of
    every request body model in uws_hub.apihandlers refuses control characters,
    except those listed here with the reason."""
    import importlib
    import pkgutil

    from pydantic import BaseModel, TypeAdapter, ValidationError

    import uws_hub.apihandlers as package

    not_text = {
        ("SeedFileModel", "content"): "file content, any bytes",
        ("SeedFileModel", "path"): "a file name: the storage refuses NUL and checks the path",
        ("AccountCreateModel", "password"): "hashed, never stored or shown",
        ("AccountPatchModel", "password"): "hashed, never stored or shown",
    }
    checked = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for model in vars(module).values():
            if not (isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == module.__name__):
                continue
            for name, field in model.model_fields.items():
                if "str" not in str(field.annotation) or (model.__name__, name) in not_text:
                    continue
                constrained = (
                    typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
                )
                adapter = TypeAdapter(constrained)
                for bad in ("ab\x00c", "ab\x1bc"):
                    with pytest.raises(ValidationError):
                        adapter.validate_python(bad)
                checked.append((model.__name__, name))
    assert ("WorkspaceCreateModel", "name") in checked and ("ShareCreateModel", "user") in checked
