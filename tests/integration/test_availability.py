"""What one client can make the hub hold: request bodies and streams held open.

Each test sends what a hostile client would (anonymously where the hub reads it
before anyone is known) and checks the hub refuses it with a clear 4xx before
holding it.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import websocket

from ..helpers import MULTIUSER_CONFIG, declaring_length
from ..hubutil import wait_for

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
        # the workspaces' creation takes seed files on top of the limit (3 x UWSHub.max_seed_bytes)
        limit = BODY_LIMIT + (3 * 10 * 1024 * 1024 if path == "/hub/api/workspaces" else 0)
        assert f"limit of {limit} bytes" in answer["message"], answer


def test_a_length_in_other_digits_is_a_clear_refusal(hub, alice):
    # "²" (Latin-1, as HTTP/1.1 headers are read) is a digit to str.isdigit() and not to
    # int(): the length is judged as HTTP reads it (ASCII digits), a 400 from tornado,
    # not an error in the bound's check (no answer at all)
    for length in (b"\xb2", b"1\xb2"):
        with socket.create_connection(("127.0.0.1", hub.hub_port), timeout=30) as conn:
            # no body: the hub closes the connection after its answer
            conn.sendall(
                b"POST /hub/api/workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n"
            )
            status_line = conn.makefile("rb").readline()
        assert status_line.split()[1:2] == [b"400"], (length, status_line)
    r = requests.get(f"{hub.url}/hub/api/workspaces", headers={"Authorization": f"token {alice}"}, timeout=30)
    assert r.status_code == 200, r.text[:300]


def test_a_length_of_many_digits_is_a_clear_refusal(hub):
    # more digits than Python's int() reads by default (4300): a 413 like any other length
    # over the limit, not an error in the bound's check (no answer, a traceback logged)
    with socket.create_connection(("127.0.0.1", hub.hub_port), timeout=30) as conn:
        conn.sendall(
            b"POST /hub/api/workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
        )
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1:2] == [b"413"], status_line


def seeded_workspace(hub, token: str, name: str, path: str, content: str) -> int:
    """A new workspace's id, made through the proxy with a seed file of ``content`` (UTF-8)."""
    r = requests.post(
        f"{hub.url}/hub/api/workspaces",
        headers={"Authorization": f"token {token}"},
        json={"name": name, "files": [{"path": path, "content": content}]},
        timeout=120,
    )
    assert r.status_code == 201, (r.status_code, r.text[:300])
    return r.json()["id"]


def test_a_body_under_the_limit_is_read_as_before(hub, alice):
    # a workspace's seed files may total max_seed_bytes (10 MiB), more than the limit:
    # that route takes them (base64, JSON-escaped) on top of it
    wid = seeded_workspace(hub, alice, "large seed", "big.txt", "x" * (3 * 1024 * 1024))
    # elsewhere a body just under the limit is read and judged as before (422: no such job type)
    r = requests.post(
        f"{hub.url}/hub/api/workspaces/{wid}/jobs",
        headers={"Authorization": f"token {alice}"},
        data=json.dumps({"job_type": "x" * (BODY_LIMIT - 100)}),
        timeout=60,
    )
    assert r.status_code == 422, r.text[:300]
    hub.api("DELETE", f"workspaces/{wid}", alice)


def test_seed_text_not_in_ascii_is_taken_up_to_the_seed_limit(hub, alice):
    # 8 MiB of UTF-8 text (under max_seed_bytes, 10 MiB) in letters of two bytes, which
    # JSON as Python's json (and requests) writes it sends as \u00e9, six bytes each: a
    # body of 24 MiB, over what a body with seed files took (twice max_seed_bytes more: 21 MiB)
    content = "\u00e9" * (4 * 1024 * 1024)
    wid = seeded_workspace(hub, alice, "accented seed", "accents.txt", content)
    assert hub.api("GET", f"workspaces/{wid}/files/accents.txt", alice).content == content.encode()
    hub.api("DELETE", f"workspaces/{wid}", alice)


#: a batch job's code: 8 MiB of disk taken past the end of a file of no bytes (FALLOC_FL_KEEP_SIZE)
PREALLOCATE = (
    "import ctypes, os; fd = os.open('held', os.O_WRONLY | os.O_CREAT, 0o600);"
    " assert ctypes.CDLL(None).fallocate(fd, 1, ctypes.c_longlong(0), ctypes.c_longlong(8 << 20)) == 0"
)

#: UWSHub.max_streams_per_user of the streams' hub
MOST_STREAMS = 3
#: UWSHub.max_unfinished_batch_jobs_per_user of that hub
MOST_BATCH_JOBS = 2
#: UWSHub.max_job_log_bytes of that hub
MOST_LOG_BYTES = 1024 * 1024
#: UWSHub.max_file_operations_per_user of that hub
MOST_FILE_THREADS = 2

#: the streams' hub's disk, hung for folders named "hung" while the file GATE exists (as an
#: NFS server gone away, or a folder of millions of entries, holds a listing): each listing
#: there appends a line to GATE.entered first
HUNG_DISK = """
import os, time
from uws_hub.workspaces.storage import WorkspaceStorage

def _hung_list_dir(list_dir):
    def hung(self, directory, relpath, max_entries):
        if os.path.basename(relpath.rstrip("/")) == "hung" and os.path.exists(GATE):
            with open(GATE + ".entered", "a") as f:
                f.write("in\\n")
            deadline = time.monotonic() + 300
            while os.path.exists(GATE) and time.monotonic() < deadline:
                time.sleep(0.05)
        return list_dir(self, directory, relpath, max_entries)
    return hung

WorkspaceStorage.list_dir = _hung_list_dir(WorkspaceStorage.list_dir)
"""


@pytest.fixture(scope="module")
def hung_gate(tmp_path_factory):
    return tmp_path_factory.mktemp("hung") / "gate"


@pytest.fixture(scope="module")
def streams_hub(make_hub, system_users, hung_gate):
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(300)"]
    # 8 MiB of disk taken past the end of a file of no bytes (FALLOC_FL_KEEP_SIZE)
    prealloc = [sys.executable, "-c", PREALLOCATE]
    # 4 MiB of output (real bytes, no hole), then a wait
    chatty = [
        sys.executable,
        "-c",
        "import sys, time; sys.stdout.write('x' * (4 << 20)); sys.stdout.flush(); time.sleep(300)",
    ]
    config = (
        MULTIUSER_CONFIG
        + textwrap.dedent(
            f"""
        c.UWSHub.max_streams_per_user = {MOST_STREAMS}
        c.UWSHub.max_unfinished_batch_jobs_per_user = {MOST_BATCH_JOBS}
        c.UWSHub.job_types["sleeper"] = {{"display_name": "Sleeper", "interactive": False, "cmd": {sleeper!r}}}
        c.UWSHub.max_job_log_bytes = {MOST_LOG_BYTES}
        c.UWSHub.job_types["chatty"] = {{"display_name": "Chatty", "interactive": False, "cmd": {chatty!r}}}
        c.UWSHub.job_types["prealloc"] = {{"display_name": "Preallocates", "interactive": False, "cmd": {prealloc!r}}}
        c.UWSHub.max_file_operations_per_user = {MOST_FILE_THREADS}
        GATE = {str(hung_gate)!r}
        """
        )
        + HUNG_DISK
    )
    hub = make_hub(config)
    hub.alice = hub.add_user("uwsalice")
    hub.bob = hub.add_user("uwsbob")
    return hub


def events(hub, token) -> requests.Response:
    return hub.request("GET", "events", token, stream=True, timeout=60)


def test_streams_held_open_are_bounded_per_user(streams_hub):
    hub, alice = streams_hub, streams_hub.alice
    ws = hub.api("POST", "workspaces", alice, json={"name": f"streams {uuid.uuid4().hex[:6]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "sleeper"}, expect=202)
    hub.wait_job(job["id"], alice, {"running"})
    follow = f"jobs/{job['id']}/log/stream"
    held = [events(hub, alice), events(hub, alice)]
    try:
        held.append(hub.request("GET", follow, alice, stream=True, timeout=60))
        assert [r.status_code for r in held] == [200] * MOST_STREAMS
        # one more of any kind: a 429 saying why, or a WebSocket closed with 1013 (try again later)
        for r in (events(hub, alice), hub.request("GET", follow, alice, stream=True, timeout=60)):
            with r:
                assert r.status_code == 429, r.url  # (a stream's text never ends)
                assert "max_streams_per_user" in r.json()["message"] and int(r.headers["Retry-After"]) > 0
        conn = websocket.create_connection(
            hub.url.replace("http", "ws") + "/hub/api/events/ws", header=[f"Authorization: token {alice}"], timeout=30
        )
        opcode, data = conn.recv_data(control_frame=True)
        conn.close()
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1013, (opcode, data)
        assert b"max_streams_per_user" in data
        # others' streams are theirs
        with events(hub, streams_hub.bob) as r:
            assert r.status_code == 200
        # one closed, one more may open (once the hub saw the close)
        held.pop(0).close()

        def reopened():
            r = events(hub, alice)
            if r.status_code == 200:
                return r
            r.close()
            return None

        held.append(wait_for(reopened, 30, what="a stream's slot given back"))
    finally:
        for r in held:
            r.close()
        hub.api("POST", f"jobs/{job['id']}/stop", alice)


def test_unfinished_batch_jobs_are_bounded_per_user(streams_hub):
    """A batch launch is never refused for want of a slot; past a user's
    UWSHub.max_unfinished_batch_jobs_per_user unfinished ones it is a 429."""
    hub, alice, bob = streams_hub, streams_hub.alice, streams_hub.bob
    ws = hub.api("POST", "workspaces", alice, json={"name": f"loop {uuid.uuid4().hex[:6]}"}, expect=201)
    other = hub.api("POST", "workspaces", bob, json={"name": f"loop {uuid.uuid4().hex[:6]}"}, expect=201)
    launched = []
    try:
        for _ in range(MOST_BATCH_JOBS):
            launched.append(
                (alice, hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "sleeper"}, expect=202))
            )
        r = hub.request("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "sleeper"})
        assert r.status_code == 429, r.text
        assert "max_unfinished_batch_jobs_per_user" in r.json()["message"] and int(r.headers["Retry-After"]) > 0
        # another user's launches are theirs
        launched.append(
            (bob, hub.api("POST", f"workspaces/{other['id']}/jobs", bob, json={"job_type": "sleeper"}, expect=202))
        )
        # once one ended, the next launch is taken
        token, first = launched.pop(0)
        hub.api("POST", f"jobs/{first['id']}/stop", token)
        hub.wait_job(first["id"], token, {"cancelled", "completed", "failed"})
        launched.append(
            (alice, hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "sleeper"}, expect=202))
        )
    finally:
        for token, job in launched:
            hub.api("POST", f"jobs/{job['id']}/stop", token)


def test_disk_preallocated_by_a_job_counts_on_its_workspace(streams_hub):
    """Space preallocated past a file's end takes disk without changing the file's size:
    the usage scan counted sizes only, so a job (or a terminal) held any amount of disk
    at no quota. The end of the job measures its workspace."""
    hub, alice = streams_hub, streams_hub.alice
    ws = hub.api("POST", "workspaces", alice, json={"name": f"prealloc {uuid.uuid4().hex[:6]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "prealloc"}, expect=202)
    assert hub.wait_job(job["id"], alice, {"completed", "failed"})["status"] == "completed"
    held = hub.workspaces_root / "uwsalice" / ws["slug"] / "held"
    assert held.stat().st_size == 0 and held.stat().st_blocks * 512 >= 8 << 20

    def measured():
        usage = hub.api("GET", f"workspaces/{ws['id']}", alice, expect=200)["disk_usage_bytes"]
        return usage if usage >= 8 << 20 else None

    assert wait_for(measured, 30, what="the preallocated disk counted") == held.stat().st_blocks * 512


def test_a_job_whose_log_takes_too_much_disk_is_stopped(streams_hub):
    """A job's log lies outside its workspace and counts on no quota: a job printing at
    full speed filled the job log directory's disk for everyone. Past
    UWSHub.max_job_log_bytes the job is stopped, failed, saying why."""
    hub, alice = streams_hub, streams_hub.alice
    ws = hub.api("POST", "workspaces", alice, json={"name": f"chatty {uuid.uuid4().hex[:6]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "chatty"}, expect=202)
    try:
        ended = hub.wait_job(job["id"], alice, {"completed", "failed", "cancelled"}, timeout=90)
    finally:
        hub.api("POST", f"jobs/{job['id']}/stop", alice)
    assert ended["status"] == "failed", ended
    assert ended["reason"] == (
        f"The job's output took more than {MOST_LOG_BYTES} bytes of the hub's disk (UWSHub.max_job_log_bytes)"
    )


def test_one_users_slow_file_operations_do_not_hold_up_others(streams_hub, hung_gate):
    """Every file operation holds a thread as long as the disk takes. Earlier versions ran
    them all in the event loop's default pool (at most 32 threads, six on a small
    machine): one user looping listings of a folder on a hung disk took every thread,
    and everyone else's file operations (and the hub's own work there) waited behind
    theirs. One user holds at most UWSHub.max_file_operations_per_user threads; their
    further operations wait in line behind their own."""
    hub, alice, bob = streams_hub, streams_hub.alice, streams_hub.bob
    ws = hub.api("POST", "workspaces", alice, json={"name": f"hung {uuid.uuid4().hex[:6]}"}, expect=201)
    other = hub.api("POST", "workspaces", bob, json={"name": f"hung {uuid.uuid4().hex[:6]}"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/files/hung", alice, json={"type": "directory"}, expect=201)
    entered = Path(f"{hung_gate}.entered")
    entered.unlink(missing_ok=True)
    hung_gate.touch()
    # more listings at once than the default pool has threads on any machine (32 at most)
    pool = ThreadPoolExecutor(40)
    held: list = []
    in_line = None
    try:

        def listing(relpath: str) -> requests.Response:
            return hub.request("GET", f"workspaces/{ws['id']}/files", alice, params={"path": relpath}, timeout=300)

        held = [pool.submit(listing, "hung") for _ in range(36)]
        wait_for(lambda: entered.exists() and entered.read_text().count("in") >= MOST_FILE_THREADS, 60)
        # another user's file operations answer (before: a timeout, every thread taken)
        r = hub.request("GET", f"workspaces/{other['id']}/files", bob, timeout=30)
        assert r.status_code == 200, r.text
        r = hub.request("GET", f"workspaces/{other['id']}/files/nothing-here.txt", bob, timeout=30)
        assert r.status_code == 404, r.text
        # alice's own wait in line behind hers: no more than her threads ever entered the disk
        in_line = pool.submit(listing, "")
        r = hub.request("GET", f"workspaces/{other['id']}/files", bob, timeout=30)
        assert r.status_code == 200, r.text
        assert not in_line.done() and not any(f.done() for f in held)
        assert entered.read_text().count("in") == MOST_FILE_THREADS
    finally:
        hung_gate.unlink(missing_ok=True)
        # once the disk answers again, every one of them is answered
        answers = [f.result(timeout=300).status_code for f in [*held, in_line] if f is not None]
        pool.shutdown()
    assert answers == [200] * 37
    hub.api("DELETE", f"workspaces/{ws['id']}", alice)
    hub.api("DELETE", f"workspaces/{other['id']}", bob)


#: folders that hang while GATE exists (a hung workspace disk, or the job log folder's): those
#: whose path ends with one of HUNG; making one appends a line to GATE.entered first
HUNG_FOLDERS = """
import os, time
_makedirs = os.makedirs

def _hung_makedirs(name, *args, **kwargs):
    if str(name).rstrip(os.sep).endswith(tuple(HUNG)) and os.path.exists(GATE):
        with open(GATE + ".entered", "a") as f:
            f.write("in\\n")
        deadline = time.monotonic() + 300
        while os.path.exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _makedirs(name, *args, **kwargs)

os.makedirs = _hung_makedirs
"""


def test_reading_a_jobs_log_does_no_disk_work_on_the_event_loop(make_hub, tmp_path):
    """A request for a batch job's log renders the job's launch (for its log's owner),
    which made the HOME of a job of the hub's own account (single-account mode) in
    the workspaces' storage: on the event loop, where a hung disk held the whole hub
    (every request, every user) until it answered. The HOME is made where the job is
    prepared, in its runner's thread."""
    gate = tmp_path / "gate"
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(300)"]
    hub = make_hub(
        MULTIUSER_CONFIG
        + textwrap.dedent(
            f"""
            c.UWSHub.system_users = False
            c.UWSHub.job_types["sleeper"] = {{"display_name": "Sleeper", "interactive": False, "cmd": {sleeper!r}}}
            GATE = {str(gate)!r}
            HUNG = {{"/.home"}}
            """
        )
        + HUNG_FOLDERS
    )
    ann, ben = hub.add_user("ann"), hub.add_user("ben")
    ws = hub.api("POST", "workspaces", ann, json={"name": "home"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", ann, json={"job_type": "sleeper"}, expect=202)
    running = hub.wait_job(job["id"], ann, {"running", "completed", "failed", "cancelled"})
    assert running["status"] == "running", running
    assert (hub.workspaces_root / "ann" / ".home").is_dir()
    gate.touch()
    pool = ThreadPoolExecutor(1)
    try:
        log = pool.submit(hub.request, "GET", f"jobs/{job['id']}/log", ann, timeout=300)
        # another user's request answers (before: a timeout, the event loop held)
        r = hub.request("GET", "workspaces", ben, timeout=30)
        assert r.status_code == 200, r.text
        assert log.result(timeout=30).status_code == 200
        assert not Path(f"{gate}.entered").exists()  # (nothing made the HOME again)
    finally:
        gate.unlink(missing_ok=True)
        pool.shutdown()
        hub.api("POST", f"jobs/{job['id']}/stop", ann)


@pytest.mark.parametrize("hung", [".home", "job log folder"])
def test_a_start_on_a_hung_disk_holds_up_no_one_else(make_hub, tmp_path, hung):
    """A server's start made its account's HOME (single-account mode: ``.home`` in the
    workspaces' storage) and the hub's job log folder on the event loop: a hung disk held
    the whole hub, every user's requests, until it answered. They are made in the start's
    thread: another user's request answers, and the start goes on once the disk does."""
    gate = tmp_path / "gate"
    logs = tmp_path / "logs"
    hung_path = "/.home" if hung == ".home" else str(logs)
    hub = make_hub(
        MULTIUSER_CONFIG
        + textwrap.dedent(
            f"""
            c.UWSHub.system_users = False
            c.UWSHub.job_log_dir = {str(logs)!r}
            GATE = {str(gate)!r}
            HUNG = {{{hung_path!r}}}
            """
        )
        + HUNG_FOLDERS
    )
    folder = hub.workspaces_root / "ann" / ".home" if hung == ".home" else logs
    ann, ben = hub.add_user("ann"), hub.add_user("ben")
    ws = hub.api("POST", "workspaces", ann, json={"name": "hung"}, expect=201)
    gate.touch()
    try:
        job = hub.api("POST", f"workspaces/{ws['id']}/jobs", ann, json={"job_type": "minimal"}, expect=202)
        wait_for(lambda: Path(f"{gate}.entered").exists(), 60, what="the start to reach the hung folder")
        # another user's request answers (before: a timeout, the event loop held)
        r = hub.request("GET", "workspaces", ben, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        gate.unlink(missing_ok=True)
    running = hub.wait_job(job["id"], ann, {"running", "completed", "failed", "cancelled"})
    assert running["status"] == "running", running
    assert folder.is_dir()
    hub.api("POST", f"jobs/{job['id']}/stop", ann)


@pytest.mark.expect_log_errors(r"cannot make the job's HOME folder", r"Unhandled error starting ann's server")
def test_a_start_whose_folder_cannot_be_made_fails_saying_which(make_hub, tmp_path):
    """A start's folders are made in its thread (:meth:`WorkspaceLaunch.make_folders`):
    one that cannot be made (single-account mode: a file where the owner's ``.home`` goes,
    which the owner's jobs, running as the hub's account, can leave) ends the job failed,
    saying which folder and why but not its path (the hub's storage layout), with no error
    page; the next start, once it can, runs."""
    hub = make_hub(MULTIUSER_CONFIG + "\nc.UWSHub.system_users = False\n")
    ann = hub.add_user("ann")
    ws = hub.api("POST", "workspaces", ann, json={"name": "nohome"}, expect=201)
    home = hub.workspaces_root / "ann" / ".home"
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a folder")
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", ann, json={"job_type": "minimal"}, expect=202)
    failed = hub.wait_job(job["id"], ann, {"running", "completed", "failed", "cancelled"})
    assert failed["status"] == "failed", failed
    # (before: "[Errno 17] File exists: '/<the hub's storage>/ann/.home'")
    assert failed["reason"] == "The server failed to start: cannot make the job's HOME folder: File exists"
    assert str(home) in hub.log_text()  # the operator's log says where
    home.unlink()
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", ann, json={"job_type": "minimal"}, expect=202)
    assert hub.wait_job(job["id"], ann, {"running", "completed", "failed", "cancelled"})["status"] == "running"
    hub.api("POST", f"jobs/{job['id']}/stop", ann)
