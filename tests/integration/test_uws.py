"""The IVOA UWS 1.1 interface driven by pyvo from PyPI, unchanged, against a real hub whose
batch jobs run as real system users: create with a form POST (303), then
``AsyncTAPJob(url, session=s)``: phases, run and wait, results, execution duration (a real
time limit) and destruction (really destroying), errors, abort, delete; ``parse_job_list``
with each filter; blocking GETs; HTTP Basic; access as stranger, viewer, editor, admin and
anonymous; UWS's error answers. Every XML document served is checked against the
structure of UWS.xsd (tests/uwsxml.py)."""

from __future__ import annotations

import io
import json
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from pyvo.dal import DALQueryError, DALServiceError
from pyvo.dal.tap import AsyncTAPJob
from pyvo.io.uws import parse_job_list

from .. import uwsxml
from ..hubutil import REPO, record, wait_for
from ..uwsclient import (
    abort_when_executing,
    check_all_documents,
    checked,
    create,
    job_id,
    jobs_url,
    run_to_completion,
    session,
)

JOB = [sys.executable, str(REPO / "tests" / "batch_job.py")]
JOB_TYPES = {
    "minimal": {"display_name": "an interactive job type: no UWS job list", "cmd": ["true"]},
    "report": {
        "interactive": False,
        "cmd": [*JOB, "report", "{text}", "{count}", ["--loud", "{loud}"]],
        "parameters": {
            "text": {"type": "string", "required": True},
            "count": {"type": "int", "default": 3, "min": 1, "max": 10},
            "loud": {"type": "bool", "default": False},
        },
    },
    "exit": {
        "interactive": False,
        "cmd": [*JOB, "exit", "{code}"],
        "parameters": {"code": {"type": "int", "default": 0, "min": 0, "max": 255}},
    },
    "sleep": {
        "interactive": False,
        "cmd": [*JOB, "sleep", "{seconds}"],
        "parameters": {"seconds": {"type": "float", "default": 1, "min": 0, "max": 600}},
        "limits": {"time_limit": "1:00:00"},
    },
    "stubborn": {
        "interactive": False,
        "cmd": [*JOB, "stubborn", "{file}"],
        "parameters": {"file": {"type": "string", "required": True}},
    },
}
#: the hub's bound on a blocking wait; the no-wait checks below must answer well within it
MAX_WAIT = 8

CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.Authenticator.admin_users = {{"uwsadmin"}}
# long enough that a job ignoring SIGTERM (stubborn) ends when its test lets it
c.WorkspaceLocalProcessSpawner.kill_grace_seconds = 120
c.UWSHub.job_types = {JOB_TYPES!r}
c.IVOAUWS.max_wait_seconds = {MAX_WAIT}
"""


@pytest.fixture(scope="module")
def uhub(make_hub, system_users):
    hub = make_hub(CONFIG)
    hub.alice = hub.add_user("uwsalice")
    hub.bob = hub.add_user("uwsbob")
    hub.carol = hub.add_user("uwscarol")
    hub.admin = hub.add_user("uwsadmin", admin=True)
    return hub


@pytest.fixture(scope="module")
def alice(uhub):
    return session("uwsalice", uhub.alice)


# ---------------------------------------------------------------- pyvo, unchanged
def test_pyvo_runs_a_job_to_completion_and_downloads_its_results(uhub, alice):
    url = create(alice, uhub, "report", TEXT="hello; $(id)", Count="4", RUNID="run-1")
    job = AsyncTAPJob(url, session=alice)
    assert job.phase == "PENDING"
    assert job.job.runid == "run-1" and job.owner == "uwsalice" and job.job_id == job_id(url)
    job.execution_duration = 600
    assert job.execution_duration.value == 600
    when = datetime(2027, 12, 24, 10, 0, 0, 123000)
    job.destruction = when
    assert job.destruction.datetime == when
    assert job.phase == "PENDING"
    run_to_completion(job)
    [uri] = job.result_uris
    assert uri == f"{url}/results/report.json"
    report = json.loads(alice.get(uri, timeout=30).content)
    assert report["argv"] == ["hello; $(id)", "4"]
    parameters = {p.id_: p.content for p in job.job.parameters}
    assert parameters == {"text": "hello; $(id)", "count": "4", "loud": "false"}
    assert job.job.starttime is not None and job.job.endtime is not None
    check_all_documents(alice, url, jobs_url(uhub, "report"))
    # the same job through the JSON API
    model = uhub.api("GET", f"jobs/{job_id(url)}", uhub.alice, expect=200)
    assert (model["status"], model["run_id"], model["workspace"]) == ("completed", "run-1", "uws-jobs")
    assert model["resources"]["time_limit"] == "0:10:00"


def test_a_failing_job_is_error_with_its_message(uhub, alice):
    url = create(alice, uhub, "exit", code="3", PHASE="RUN")
    job = AsyncTAPJob(url, session=alice)
    job.wait(timeout=120)
    assert job.phase == "ERROR"
    with pytest.raises(DALQueryError, match="exited with status 3"):
        job.raise_if_error()
    summary = checked(alice.get(url, timeout=30), "job").find(f"{{{uwsxml.UWS}}}errorSummary")
    assert summary.attrib == {"type": "fatal", "hasDetail": "true"}
    error = alice.get(url + "/error", timeout=30)
    assert error.headers["Content-Type"].startswith("text/plain")
    assert "exited with status 3" in error.text and "exiting with 3" in error.text  # the reason, the log's end
    log = alice.get(url + "/log", timeout=30)
    assert log.status_code == 200 and "exiting with 3" in log.text


def test_abort_of_a_running_job_is_aborted_at_once_and_stays_so(uhub, alice):
    url = create(alice, uhub, "sleep", seconds="120", PHASE="RUN")
    abort_when_executing(uhub, uhub.alice, AsyncTAPJob(url, session=alice))
    # aborting again changes nothing; running it is what its state forbids: UWS's 403
    r = alice.post(url + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["Location"]) == (303, url)
    r = alice.post(url + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["Content-Type"].split(";")[0]) == (403, "text/plain"), r.text
    assert r.text == f"Job {job_id(url)} was started already: it can be run only once\n"


def test_delete_of_an_ended_job_removes_it_and_its_results(uhub, alice):
    url = create(alice, uhub, "report", text="x", PHASE="RUN")
    job = AsyncTAPJob(url, session=alice)
    job.wait(timeout=120)
    [uri] = job.result_uris
    assert alice.get(uri, timeout=30).status_code == 200
    job.delete()
    assert alice.get(url, timeout=30).status_code == 404
    assert alice.get(uri, timeout=30).status_code == 404
    assert uhub.request("GET", f"jobs/{job_id(url)}", uhub.alice).status_code == 404


def test_delete_of_a_running_job_aborts_it_then_deletes_it(uhub, alice):
    url = create(alice, uhub, "sleep", seconds="120", PHASE="RUN")
    # running (through the REST API: pyvo's wait would block for max_wait_seconds first)
    uhub.wait_job(int(job_id(url)), uhub.alice, {"running", "completed", "failed", "cancelled"}, timeout=120)
    assert AsyncTAPJob(url, session=alice).phase == "EXECUTING"
    r = alice.delete(url, allow_redirects=False, timeout=60)
    assert (r.status_code, r.headers["Location"]) == (303, jobs_url(uhub, "sleep"))
    assert alice.get(url, timeout=30).status_code == 404
    # ACTION=DELETE (for browsers) is the same
    url = create(alice, uhub, "sleep", seconds="120")
    r = alice.post(url, data={"action": "delete"}, allow_redirects=False, timeout=60)
    assert (r.status_code, r.headers["Location"]) == (303, jobs_url(uhub, "sleep"))
    assert alice.get(url, timeout=30).status_code == 404


def test_a_share_revoked_while_a_delete_waits_deletes_nothing(uhub, alice):
    """A DELETE of a running job stops it and waits for it to end: an editor whose share
    is revoked meanwhile deletes nothing, as a new DELETE of theirs would."""
    ws = uhub.api("POST", "workspaces", uhub.alice, json={"name": f"revoked {uuid.uuid4().hex[:6]}"}, expect=201)
    shares = f"workspaces/{ws['id']}/shares"
    share = uhub.api("POST", shares, uhub.alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    release = f"/tmp/uws-release-{uuid.uuid4().hex[:8]}"
    url = create(alice, uhub, "stubborn", file=release, PHASE="RUN", WORKSPACE=str(ws["id"]))
    jid = int(job_id(url))
    # running, and past the point where a stop would end it
    wait_for(lambda: "ignoring SIGTERM" in alice.get(url + "/log", timeout=30).text, 120, what="the job's start")
    editor = session("uwsbob", uhub.bob)
    answers = []
    deleting = threading.Thread(target=lambda: answers.append(editor.delete(url, allow_redirects=False, timeout=60)))
    deleting.start()
    try:
        # the DELETE stopped the job and waits for it to end, which it does only once released
        uhub.wait_job(jid, uhub.alice, {"stopping"})
        uhub.api("DELETE", f"{shares}/{share['id']}", uhub.alice, expect=200)
    finally:
        open(release, "w").close()
        deleting.join(60)
    [r] = answers
    assert r.status_code == 404, r.text  # bob no longer reads the workspace
    assert uhub.wait_job(jid, uhub.alice, {"completed", "cancelled", "failed"})["archived_at"] is None
    assert alice.get(url + "/destruction", timeout=30).text == ""


def test_the_execution_duration_is_the_jobs_real_time_limit(uhub, alice):
    url = create(alice, uhub, "sleep", seconds="60", EXECUTIONDURATION="2.0")
    job = AsyncTAPJob(url, session=alice)
    assert job.execution_duration.value == 2
    job.run()
    job.wait(timeout=120)
    assert job.phase == "ERROR"
    with pytest.raises(DALQueryError, match="time limit of 2 s"):
        job.raise_if_error()
    # more than the job type allows: the server substitutes its limit (UWS allows it)
    job = AsyncTAPJob(create(alice, uhub, "sleep"), session=alice)
    job.execution_duration = 7200
    assert job.execution_duration.value == 3600
    job.execution_duration = 0  # none: the job type's limit
    assert job.execution_duration.value == 3600


def test_a_result_named_in_bytes_no_utf8_is_listed(uhub, alice):
    """A job names its results as it likes, in bytes that are no UTF-8 too: the link to
    such a result (a URL, UTF-8) could not be made, and the job's document, the JSON
    API's job and every later read of them were a 500. Listed with U+FFFD in the name
    (no URL names the file: it is not found)."""
    url = create(alice, uhub, "report", text="x", PHASE="RUN")
    AsyncTAPJob(url, session=alice).wait(timeout=120)
    model = uhub.api("GET", f"jobs/{job_id(url)}", uhub.alice, expect=200)
    ws = uhub.api("GET", f"workspaces/{model['workspace_id']}", uhub.alice, expect=200)
    folder = uhub.workspaces_root / "uwsalice" / ws["slug"] / "results" / str(job_id(url))
    with open(bytes(folder) + b"/odd\xff.txt", "wb") as f:
        f.write(b"odd")
    document = checked(alice.get(url, timeout=30), "job")
    hrefs = [r.get(f"{{{uwsxml.XLINK}}}href") for r in document.find(f"{{{uwsxml.UWS}}}results")]
    assert hrefs == [f"{url}/results/odd%EF%BF%BD.txt", f"{url}/results/report.json"]
    assert alice.get(hrefs[0], timeout=30).status_code == 404
    results = uhub.api("GET", f"jobs/{job_id(url)}", uhub.alice, expect=200)["results"]
    assert [r["path"] for r in results] == [
        f"results/{job_id(url)}/odd\ufffd.txt",
        f"results/{job_id(url)}/report.json",
    ]


def test_destruction_archives_the_job_and_deletes_its_results(uhub, alice):
    url = create(alice, uhub, "report", text="x", PHASE="RUN")
    job = AsyncTAPJob(url, session=alice)
    job.wait(timeout=120)
    [uri] = job.result_uris
    job.destruction = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)
    wait_for(lambda: job.phase == "ARCHIVED", 60, what="the job to be archived")
    assert alice.get(uri, timeout=30).status_code == 404
    archived = checked(alice.get(url, timeout=30), "job")
    assert list(archived.find(f"{{{uwsxml.UWS}}}results")) == []
    listed = parse_job_list(io.BytesIO(alice.get(jobs_url(uhub, "report"), timeout=30).content))
    assert job_id(url) not in [j.jobid for j in listed]
    listed = parse_job_list(
        io.BytesIO(alice.get(jobs_url(uhub, "report"), params={"PHASE": "ARCHIVED"}, timeout=30).content)
    )
    assert job_id(url) in [j.jobid for j in listed]
    # what an archived job keeps: its record
    model = uhub.api("GET", f"jobs/{job_id(url)}", uhub.alice, expect=200)
    assert model["archived_at"] is not None and model["status"] == "completed"


def test_parse_job_list_with_each_filter(uhub):
    s = session("uwscarol", uhub.carol)
    list_url = jobs_url(uhub, "exit")
    first = create(s, uhub, "exit", code="0", PHASE="RUN")
    AsyncTAPJob(first, session=s).wait(timeout=120)
    middle = datetime.now(UTC)
    second = create(s, uhub, "exit", code="5", PHASE="RUN")
    AsyncTAPJob(second, session=s).wait(timeout=120)
    pending = create(s, uhub, "exit")

    def listed(**params):
        r = s.get(list_url, params=params, timeout=30)
        checked(r, "jobs")
        return [(j.jobid, j.phase) for j in parse_job_list(io.BytesIO(r.content))]

    ids = [job_id(u) for u in (pending, second, first)]
    assert listed() == [(ids[0], "PENDING"), (ids[1], "ERROR"), (ids[2], "COMPLETED")]
    assert listed(PHASE="ERROR") == [(ids[1], "ERROR")]
    assert listed(PHASE=["COMPLETED", "PENDING"]) == [(ids[0], "PENDING"), (ids[2], "COMPLETED")]
    assert listed(phase="executing") == []
    assert listed(AFTER=middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == [(ids[0], "PENDING"), (ids[1], "ERROR")]
    assert listed(LAST=2) == [(ids[0], "PENDING"), (ids[1], "ERROR")]
    assert listed(LAST=2, PHASE=["COMPLETED", "ERROR"]) == [(ids[1], "ERROR"), (ids[2], "COMPLETED")]
    jobs = parse_job_list(io.BytesIO(s.get(list_url, timeout=30).content))
    assert {j.ownerid for j in jobs} == {"uwscarol"}


# ---------------------------------------------------------------- blocking
def test_blocking_waits_only_while_it_should(uhub, alice):
    url = create(alice, uhub, "sleep", seconds="1")
    # the phase the client last saw is not the job's: no blocking (far less than MAX_WAIT)
    r = alice.get(url, params={"WAIT": "60", "PHASE": "EXECUTING"}, timeout=MAX_WAIT - 3)
    assert checked(r, "job").find(f"{{{uwsxml.UWS}}}phase").text == "PENDING"
    # WAIT=-1 (pyvo up to 1.9) is bounded by c.IVOAUWS.max_wait_seconds
    r = alice.get(url, params={"WAIT": "-1"}, timeout=MAX_WAIT + 30)
    assert checked(r, "job").find(f"{{{uwsxml.UWS}}}phase").text == "PENDING"
    # a change of phase ends the wait: a run from elsewhere while a client waits
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(alice.get(url, params={"WAIT": "-1"}, timeout=MAX_WAIT + 30))
    )
    waiter.start()
    alice.post(url + "/phase", data={"PHASE": "RUN"}, timeout=30)
    waiter.join()
    job = AsyncTAPJob(url, session=alice)
    job.wait(timeout=120)
    assert job.phase == "COMPLETED"
    # an ended job is never waited for
    r = alice.get(url, params={"WAIT": "60"}, timeout=MAX_WAIT - 3)
    assert checked(r, "job").find(f"{{{uwsxml.UWS}}}phase").text == "COMPLETED"
    assert answers[0].status_code == 200


def test_a_wait_over_the_streams_bound_is_answered_at_once(uhub, alice):
    """A UWS wait holds a subscription as an event stream does: past
    UWSHub.max_streams_per_user (20) of its user's, it is answered at once."""
    url = create(alice, uhub, "sleep", seconds="1")
    streams = []
    try:
        for _ in range(20):
            r = requests.get(
                f"{uhub.url}/hub/api/events", headers={"Authorization": f"token {uhub.alice}"}, stream=True, timeout=60
            )
            streams.append(r)
            assert r.status_code == 200
        # far less than MAX_WAIT: a hub that waited the whole of it answers too late
        r = alice.get(url, params={"WAIT": "60"}, timeout=MAX_WAIT - 3)
        assert checked(r, "job").find(f"{{{uwsxml.UWS}}}phase").text == "PENDING"
    finally:
        for r in streams:
            r.close()


# ---------------------------------------------------------------- parameters, workspaces
def test_parameters_change_while_pending_only(uhub, alice):
    url = create(alice, uhub, "report", text="first")
    r = alice.post(url + "/parameters", data={"TEXT": "second", "loud": "true"}, allow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["Location"]) == (303, url)
    r = alice.post(url, data={"Count": "7"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    params = {p.attrib["id"]: p.text for p in checked(alice.get(url + "/parameters", timeout=30), "parameters")}
    assert params == {"text": "second", "count": "7", "loud": "true"}
    assert alice.get(url + "/parameters/text", timeout=30).text == "second"
    r = alice.post(url + "/parameters", data={"count": "99"}, timeout=30)
    assert (r.status_code, r.headers["Content-Type"].split(";")[0]) == (422, "text/plain")
    assert "parameters.count: must be at most 10" in r.text
    r = alice.post(url, data={"count": "0"}, timeout=30)
    assert r.status_code == 422 and "parameters.count: must be at least 1" in r.text
    alice.post(url + "/phase", data={"PHASE": "RUN"}, timeout=30)
    r = alice.post(url + "/parameters", data={"text": "third"}, timeout=30)
    assert r.status_code == 403 and "its parameters can be changed only before it starts" in r.text


def test_workspace_by_id_or_slug_and_the_default_one(uhub):
    s = session("uwsbob", uhub.bob)
    ws = uhub.api("POST", "workspaces", uhub.bob, json={"name": f"uws {uuid.uuid4().hex[:6]}"}, expect=201)
    for value in (str(ws["id"]), ws["slug"]):
        url = create(s, uhub, "exit", WORKSPACE=value)
        assert uhub.api("GET", f"jobs/{job_id(url)}", uhub.bob, expect=200)["workspace_id"] == ws["id"]
    url = create(s, uhub, "exit")
    model = uhub.api("GET", f"jobs/{job_id(url)}", uhub.bob, expect=200)
    default = uhub.api("GET", f"workspaces/{model['workspace_id']}", uhub.bob, expect=200)
    assert (default["slug"], default["name"]) == ("uws-jobs", "UWS jobs")
    r = s.post(jobs_url(uhub, "exit"), data={"WORKSPACE": "no-such-workspace"}, timeout=30)
    assert r.status_code == 404 and "no workspace 'no-such-workspace'" in r.text


# ---------------------------------------------------------------- access
def test_access_as_stranger_viewer_editor_admin_and_anonymous(uhub, alice):
    ws = uhub.api("POST", "workspaces", uhub.alice, json={"name": f"shared {uuid.uuid4().hex[:6]}"}, expect=201)
    uhub.api(
        "POST", f"workspaces/{ws['id']}/shares", uhub.alice, json={"user": "uwsbob", "level": "viewer"}, expect=201
    )
    uhub.api(
        "POST", f"workspaces/{ws['id']}/shares", uhub.alice, json={"user": "uwsadmin", "level": "editor"}, expect=201
    )
    url = create(alice, uhub, "sleep", seconds="120", WORKSPACE=str(ws["id"]))
    stranger, viewer = session("uwscarol", uhub.carol), session("uwsbob", uhub.bob)
    editor = session("uwsadmin", uhub.admin)  # an admin, and an editor of the workspace
    # a stranger: not found, everywhere, and not listed
    for path in ("", "/phase", "/results", "/parameters", "/error", "/owner", "/log"):
        assert stranger.get(url + path, timeout=30).status_code == 404, path
    assert stranger.post(url + "/phase", data={"PHASE": "RUN"}, timeout=30).status_code == 404
    assert stranger.delete(url, timeout=30).status_code == 404
    assert f'"{url}"' not in stranger.get(jobs_url(uhub, "sleep"), timeout=30).text
    # a viewer reads, but neither runs it nor reads its log
    assert checked(viewer.get(url, timeout=30), "job") is not None
    assert f'"{url}"' in viewer.get(jobs_url(uhub, "sleep"), timeout=30).text
    assert viewer.post(url + "/phase", data={"PHASE": "RUN"}, timeout=30).status_code == 403
    assert viewer.get(url + "/log", timeout=30).status_code == 403
    # an editor (and admin) acts on it
    r = editor.post(url + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    r = editor.post(url + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    assert AsyncTAPJob(url, session=alice).phase == "ABORTED"
    # anonymous, a wrong password (one with a NUL: a 500 on PostgreSQL before), another user's
    # token: 401, asking for Basic
    wrong = (session("uwsalice", "wrong"), session("uwsalice", "wr\x00ng"), session("uwsalice", uhub.bob))
    for s in (requests.Session(), *wrong):
        r = s.get(url, timeout=30)
        assert r.status_code == 401, r.text
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert r.headers["Content-Type"].startswith("text/plain")
    # the hub's own token header works too
    assert uhub.request("GET", url, uhub.alice).status_code == 200


def every_request(hub, url: str) -> list[tuple[str, str, dict]]:
    """(method, URL, form) of every operation of the UWS interface, on the job at ``url``."""
    gets = [
        "",
        "/phase",
        "/executionduration",
        "/destruction",
        "/error",
        "/quote",
        "/owner",
        "/results",
        "/results/report.json",
        "/parameters",
        "/parameters/text",
        "/log",
    ]
    posts = [
        ("", {"count": "2"}),
        ("/phase", {"PHASE": "RUN"}),
        ("/executionduration", {"EXECUTIONDURATION": "5"}),
        ("/destruction", {"DESTRUCTION": "2027-01-01"}),
        ("/parameters", {"count": "2"}),
    ]
    return [
        ("GET", jobs_url(hub, "report"), {}),
        ("POST", jobs_url(hub, "report"), {"text": "x"}),
        *(("GET", url + path, {}) for path in gets),
        *(("POST", url + path, form) for path, form in posts),
        ("DELETE", url, {}),
    ]


def test_without_the_scopes_or_credentials_nothing_is_done(uhub, alice):
    url = create(alice, uhub, "report", text="x")
    token = uhub.api("POST", "users/uwsalice/tokens", json={"scopes": ["read:users:name!user"]}, expect=201)["token"]
    weak = session("uwsalice", token)
    anonymous = requests.Session()
    anonymous.hooks["response"].append(lambda r, *args, **kwargs: record(r.request.method, r.url, r.status_code))
    for method, target, form in every_request(uhub, url):
        r = weak.request(method, target, data=form, allow_redirects=False, timeout=30)
        assert (r.status_code, r.headers["Content-Type"].split(";")[0]) == (403, "text/plain"), (target, r.text)
        r = anonymous.request(method, target, data=form, allow_redirects=False, timeout=30)
        assert r.status_code == 401, (target, r.text)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="uws-hub UWS"'
    assert AsyncTAPJob(url, session=alice).phase == "PENDING"


def test_a_destruction_time_takes_the_grant_that_deletes_the_results(uhub, alice):
    """A job's destruction deletes its results and log, as its deletion does: a token that
    may launch jobs but not write the workspace can set neither (a 403), and nothing goes."""
    url = create(alice, uhub, "report", text="kept", PHASE="RUN")
    job = AsyncTAPJob(url, session=alice)
    job.wait(timeout=120)
    [uri] = job.result_uris
    scopes = ["custom:uws:launch:jobs!user"]
    token = uhub.api("POST", "users/uwsalice/tokens", json={"scopes": scopes}, expect=201)["token"]
    launcher = session("uwsalice", token)
    past = "2000-01-01T00:00:00Z"
    for method, target, form in [
        ("DELETE", url, {}),
        ("POST", url + "/destruction", {"DESTRUCTION": past}),
        ("POST", jobs_url(uhub, "report"), {"text": "x", "DESTRUCTION": past}),
    ]:
        r = launcher.request(method, target, data=form, allow_redirects=False, timeout=30)
        assert r.status_code == 403, (method, target, r.status_code, r.text)
        assert "custom:uws:write:workspaces" in r.text, r.text
    assert launcher.get(url + "/destruction", timeout=30).text == ""
    assert job.phase == "COMPLETED" and alice.get(uri, timeout=30).status_code == 200
    # the same token still launches jobs, and sets their execution duration
    created = create(launcher, uhub, "report", text="x", EXECUTIONDURATION="60")
    assert launcher.get(created + "/executionduration", timeout=30).text == "60"


def test_basic_auth_is_for_the_uws_interface_only(uhub):
    r = requests.get(f"{uhub.url}/hub/api/jobs", auth=("uwsalice", uhub.alice), timeout=30)
    assert r.status_code == 403, r.text


def test_basic_auth_a_browser_keeps_cannot_be_used_by_other_sites(uhub, alice):
    """A browser that was given HTTP Basic credentials (its login prompt, after a 401 asking
    for Basic) sends them with every request to the hub, also one a page of another site
    makes: a form POST needs no CORS preflight. Such requests are refused (403) with Basic,
    whoever's credentials they carry, so a page elsewhere can neither run nor delete a job;
    the same requests from the hub's own pages, or from clients (no Origin), are served."""
    url = create(alice, uhub, "sleep", seconds="120")
    admin = session("uwsadmin", uhub.admin)
    evil = [
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
    ]
    for s in (alice, admin):
        for headers in evil:
            for method, target, form in [
                ("POST", url + "/phase", {"PHASE": "RUN"}),
                ("POST", url, {"ACTION": "DELETE"}),
                ("DELETE", url, {}),
                ("POST", jobs_url(uhub, "sleep"), {"seconds": "1"}),
                ("GET", url, {}),
            ]:
                r = s.request(method, target, data=form, headers=headers, allow_redirects=False, timeout=30)
                assert r.status_code == 403, (headers, method, target, r.status_code, r.text)
                assert "other sites" in r.text and r.headers["Content-Type"].startswith("text/plain")
    assert AsyncTAPJob(url, session=alice).phase == "PENDING"
    # the hub's own origin, and the hub's token header from anywhere (no browser sends it by itself)
    r = alice.get(url, headers={"Origin": uhub.url, "Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert r.status_code == 200, r.text
    r = uhub.request("GET", url, uhub.alice, headers={"Origin": "http://evil.example"})
    assert r.status_code == 200, r.text
    r = alice.post(url, data={"ACTION": "DELETE"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text


# ---------------------------------------------------------------- errors
def test_errors_are_uws_answers(uhub, alice):
    list_url = jobs_url(uhub, "report")
    url = create(alice, uhub, "report", text="x")
    cases = [
        (alice.get(f"{uhub.url}/hub/api/uws/minimal", timeout=30), 404, "No UWS job list 'minimal'"),
        (alice.get(f"{uhub.url}/hub/api/uws/nope/1", timeout=30), 404, "No UWS job list 'nope'"),
        (alice.get(f"{list_url}/999999", timeout=30), 404, "No such job"),
        (alice.get(f"{jobs_url(uhub, 'exit')}/{job_id(url)}", timeout=30), 404, "No such job"),
        (alice.get(list_url, params={"LAST": "0"}, timeout=30), 400, "LAST"),
        (alice.get(list_url, params={"PHASE": "DONE"}, timeout=30), 400, "not a UWS phase"),
        (alice.get(url, params={"WAIT": "soon"}, timeout=30), 400, "WAIT"),
        (
            alice.post(url + "/executionduration", data={"EXECUTIONDURATION": "-5"}, timeout=30),
            400,
            "EXECUTIONDURATION",
        ),
        (alice.post(url + "/destruction", data={"DESTRUCTION": "soon"}, timeout=30), 400, "ISO 8601"),
        # times that are ISO 8601 but no UTC time can be (a 500 before)
        *[
            (alice.post(url + "/destruction", data={"DESTRUCTION": t}, timeout=30), 400, "out of range")
            for t in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
        ],
        (alice.get(list_url, params={"AFTER": "0001-01-01T00:30:00+01:00"}, timeout=30), 400, "out of range"),
        (alice.post(list_url, data={"text": "x", "DESTRUCTION": "9999-12-31T23:00-02:00"}, timeout=30), 400, "range"),
        (alice.post(url + "/phase", data={"PHASE": "SUSPEND"}, timeout=30), 400, "neither RUN nor ABORT"),
        # printable to Python, but no XML document can hold it: the job's document and lists would not parse
        (alice.post(list_url, data={"text": "x", "RUNID": "run\uffff"}, timeout=30), 400, "RUNID"),
        (alice.post(list_url, data={"text": "x", "bogus": "1"}, timeout=30), 422, "parameters.bogus: unknown"),
        (alice.post(list_url, data={}, timeout=30), 422, "parameters.text: required"),
        (alice.post(list_url, data={"count": "ten", "text": "x"}, timeout=30), 422, "must be an integer"),
        (alice.post(list_url, files={"text": ("a.txt", b"x")}, timeout=30), 400, "uploads"),
        (alice.put(url, data="x", timeout=30), 405, "Method Not Allowed"),
    ]
    for r, status, text in cases:
        assert r.status_code == status, (r.request.method, r.url, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
        assert text in r.text, r.text
    # the atoms: text
    assert alice.get(url + "/phase", timeout=30).text == "PENDING"
    assert alice.get(url + "/quote", timeout=30).text == ""
    assert alice.get(url + "/destruction", timeout=30).text == ""
    assert alice.get(url + "/owner", timeout=30).text == "uwsalice"
    assert alice.get(url + "/executionduration", timeout=30).text == "0"
    with pytest.raises(DALServiceError):
        AsyncTAPJob(f"{list_url}/999999", session=alice)
