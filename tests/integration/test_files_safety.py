"""The files API cannot be frozen, raced out of a workspace or made to fail with a 500
(issue 11: findings 3, 4, 10 and the path parts of 9).

What a user's job (running as that user, with a terminal) can put in a workspace is
made here directly on disk in the workspace's directory: a FIFO, a socket, symlink
loops, a directory swapped with a symlink to outside while the hub reads, lists,
writes and copies the same path, links that climb out through other links.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..helpers import MULTIUSER_CONFIG, few_descriptors, make_deep
from ..hubutil import wait_for

OUTSIDE = b"OUTSIDE SECRET: the hub must never serve this"
#: how long the swap loop runs against each kind of request (a bound, not an assertion)
SWAP_SECONDS = 4


def on_disk(hub, ws) -> Path:
    return hub.workspaces_root / ws["owner"] / ws["slug"]


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".uws-upload-*")]


@pytest.fixture
def outside():
    """A directory outside every workspace, readable by root only (the hub), with a secret in it."""
    path = Path(tempfile.mkdtemp(prefix="uws-outside-"))
    (path / "secret.txt").write_bytes(OUTSIDE)
    (path / "only-outside.txt").write_bytes(OUTSIDE)
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copy_to_bob(hub, alice, bob, wid) -> dict:
    """Send a copy of alice's workspace to bob, accept it, and wait for the copy to end: the share."""
    invite = hub.api("POST", f"workspaces/{wid}/shares", alice, json={"kind": "copy", "user": "uwsbob"}, expect=201)
    hub.api("POST", f"shares/{invite['id']}/accept", bob, expect=202)
    return wait_for(
        lambda: next(
            (
                s
                for s in hub.api("GET", "shares?status=accepted", bob)["items"]
                if s["id"] == invite["id"] and s["copy"]["state"] in ("done", "failed")
            ),
            None,
        ),
        30,
        what="the copy",
    )


def release(fifo: Path) -> None:
    """Open the FIFO for writing and close it: a hub blocked reading it (before the fix) gets EOF."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # nobody is reading it


# ---------------------------------------------------------------- finding 3: FIFOs and other special files
def test_a_fifo_is_refused_and_the_hub_keeps_answering(hub, alice, bob, workspace):
    directory = on_disk(hub, workspace)
    os.mkfifo(directory / "pipe")
    wid = workspace["id"]
    outcome = {}

    def download():
        try:
            outcome["response"] = hub.request("GET", f"workspaces/{wid}/files/pipe", alice, timeout=20)
        except Exception as e:  # a hub stuck on the FIFO: the request times out
            outcome["error"] = e

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    try:
        # while (and after) the FIFO is asked for, the hub answers everyone
        for _ in range(10):
            assert hub.request("GET", "workspaces", bob, timeout=10).status_code == 200
            assert hub.request("GET", f"workspaces/{wid}/files", alice, timeout=10).status_code == 200
        thread.join(20)
    finally:
        release(directory / "pipe")
        thread.join(20)
    assert "error" not in outcome, outcome
    r = outcome["response"]
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "Not a regular file: 'pipe' is a FIFO"
    # listing it, or writing under it, is refused just as clearly
    r = hub.request("GET", f"workspaces/{wid}/files?path=pipe", alice, timeout=10)
    assert (r.status_code, r.json()["message"]) == (400, "Not a directory: 'pipe'")
    r = hub.request("PUT", f"workspaces/{wid}/files/pipe/x.txt", alice, data=b"x", timeout=10)
    assert (r.status_code, r.json()["message"]) == (400, "Not a directory: 'pipe'")
    types = {e["name"]: e["type"] for e in hub.api("GET", f"workspaces/{wid}/files", alice)["items"]}
    assert types["pipe"] == "other"
    # nor is it opened as text, zipped or waited on by a delete or a move
    r = hub.request("GET", f"workspaces/{wid}/files/pipe?format=text", alice, timeout=10)
    assert (r.status_code, r.json()["message"]) == (400, "Not a regular file: 'pipe' is a FIFO")
    with zipfile.ZipFile(
        io.BytesIO(hub.request("GET", f"workspaces/{wid}/files/?format=zip", alice, timeout=10).content)
    ) as z:
        assert not [n for n in z.namelist() if n.endswith("/pipe")]
    hub.api("PATCH", f"workspaces/{wid}/files/pipe", alice, json={"path": "pipe2"}, expect=200, timeout=10)
    hub.api("DELETE", f"workspaces/{wid}/files/pipe2", alice, expect=200, timeout=10)
    assert not (directory / "pipe2").exists()


def test_a_socket_is_refused_by_its_type(hub, alice, workspace):
    directory = on_disk(hub, workspace)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(directory / "sock"))
        r = hub.request("GET", f"workspaces/{workspace['id']}/files/sock", alice, timeout=10)
    assert (r.status_code, r.json()["message"]) == (400, "Not a regular file: 'sock' is a socket")


# ---------------------------------------------------------------- finding 4: the swap race
@contextmanager
def swapping(directory: Path, outside: Path):
    """A thread that puts, in turn, a real directory and a symlink to ``outside`` at ``directory/race``."""
    real, link, race = directory / "real", directory / "link", directory / "race"
    real.mkdir(exist_ok=True)  # (a test may fill it first)
    (real / "secret.txt").write_bytes(b"inside\n")
    link.symlink_to(outside)
    stop = threading.Event()
    swaps = 0

    def swap():
        nonlocal swaps
        while not stop.is_set():
            for name in (real, link):
                try:
                    os.rename(name, race)
                except OSError:
                    # an upload made a directory 'race' while neither was there: clear it away
                    shutil.rmtree(race, ignore_errors=True)
                    continue
                os.rename(race, name)
                swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert swaps > 100, f"the swap loop hardly ran ({swaps} swaps)"


def until(seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


def test_swapping_a_directory_and_a_symlink_never_leaks_outside(hub, alice, bob, workspace, outside):
    directory = on_disk(hub, workspace)
    wid = workspace["id"]
    served = 0
    with swapping(directory, outside):
        for _ in until(SWAP_SECONDS):
            r = hub.request("GET", f"workspaces/{wid}/files/race/secret.txt", alice)
            assert OUTSIDE not in r.content, "a download served the file outside the workspace"
            if r.status_code == 200:
                served += 1
                assert r.content == b"inside\n"
            else:
                assert r.status_code in (400, 404), r.text
        for _ in until(SWAP_SECONDS):
            r = hub.request("GET", f"workspaces/{wid}/files?path=race", alice)
            assert r.status_code in (200, 400, 404), r.text
            assert "only-outside.txt" not in r.text, "a listing showed the directory outside the workspace"
        for i, _ in enumerate(until(SWAP_SECONDS)):
            r = hub.request("PUT", f"workspaces/{wid}/files/race/up-{i}.txt", alice, data=b"uploaded")
            assert r.status_code in (201, 400, 404), r.text
        copies = []
        for _ in until(SWAP_SECONDS):
            copies.append(copy_to_bob(hub, alice, bob, wid))
    assert served, "no download got through at all"
    # nothing was written outside, and no copy holds anything from outside
    assert sorted(p.name for p in outside.iterdir()) == ["only-outside.txt", "secret.txt"]
    assert [c for c in copies if c["copy"]["state"] == "done"], copies
    for share in copies:
        if share["copy"]["state"] != "done":
            continue
        copy = hub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200)
        tree = on_disk(hub, copy)
        assert not [p for p in tree.rglob("*") if p.name == "only-outside.txt"]
        assert not [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and OUTSIDE in p.read_bytes()]
        hub.api("DELETE", f"workspaces/{copy['id']}", bob, expect=202)


def test_swapping_while_deleting_moving_and_zipping_never_touches_outside(hub, alice, workspace, outside):
    """Files and folders of the same names inside (in 'real') and outside: every
    delete, move and zip through 'race' (now 'real', now a link to outside) acts
    inside or is refused, and no zip holds anything from outside."""
    directory = on_disk(hub, workspace)
    wid = workspace["id"]
    count = 150
    for where in (directory / "real", outside):
        where.mkdir(exist_ok=True)
        for i in range(count):
            (where / f"f{i}.txt").write_bytes(OUTSIDE if where == outside else b"inside\n")
            (where / f"d{i}").mkdir()
            (where / f"d{i}" / "x.txt").write_bytes(OUTSIDE if where == outside else b"inside\n")
            (where / f"m{i}.txt").write_bytes(OUTSIDE if where == outside else b"inside\n")
    for i in range(count):
        (directory / f"in{i}.txt").write_bytes(b"moved in\n")
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    answers: set[int] = set()
    with swapping(directory, outside):
        for i in range(count):
            for method, path, kw in [
                ("DELETE", f"race/f{i}.txt", {}),
                ("DELETE", f"race/d{i}?recursive=1", {}),
                ("PATCH", f"race/m{i}.txt", {"json": {"path": f"out-{i}.txt"}}),
                ("PATCH", f"in{i}.txt", {"json": {"path": f"race/in{i}.txt"}}),
            ]:
                r = hub.request(method, f"workspaces/{wid}/files/{path}", alice, **kw)
                assert r.status_code in (200, 400, 404), (method, path, r.text)
                answers.add(r.status_code)
            if i % 10 == 0:
                for path in ("race?format=zip", "?format=zip"):
                    r = hub.request("GET", f"workspaces/{wid}/files/{path}", alice)
                    assert r.status_code in (200, 400, 404), r.text
                    assert OUTSIDE not in r.content, "a zip holds a file outside the workspace"
    assert 200 in answers, answers
    # outside, nothing went, nothing came, nothing changed
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before
    assert all(p.read_bytes() == OUTSIDE for p in outside.rglob("*") if p.is_file())
    assert not [p for p in directory.rglob("*") if p.is_file() and not p.is_symlink() and OUTSIDE in p.read_bytes()]


# ---------------------------------------------------------------- finding 10: links that climb out through links
def test_a_copy_leaves_out_links_that_resolve_outside_through_other_links(hub, alice, bob, workspace):
    theirs = hub.api("POST", "workspaces", bob, json={"name": f"bob's {uuid.uuid4().hex[:6]}"}, expect=201)
    directory = on_disk(hub, workspace)
    (directory / "l1").symlink_to(".")
    # lexically 'root-name/uwsbob/<slug>' (inside); resolved, three levels above the workspace
    chain = f"l1/l1/l1/../../../{hub.workspaces_root.name}/uwsbob/{theirs['slug']}"
    (directory / "chain").symlink_to(chain)
    (directory / "sub").mkdir()
    (directory / "sub" / "up").symlink_to("../l1/README.md")
    wid = workspace["id"]
    r = hub.request("GET", f"workspaces/{wid}/files?path=chain", alice)
    assert (r.status_code, r.json()["message"]) == (400, "Path resolves outside the workspace: 'chain'")
    assert hub.request("GET", f"workspaces/{wid}/files/sub/up", alice).content == b"# hello\n"

    share = copy_to_bob(hub, alice, bob, wid)
    assert share["copy"]["state"] == "done", share
    copy = on_disk(hub, hub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200))
    assert not os.path.lexists(copy / "chain")
    assert os.readlink(copy / "l1") == "." and os.readlink(copy / "sub" / "up") == "../l1/README.md"
    assert (copy / "sub" / "up").read_bytes() == b"# hello\n"


def test_the_hubs_own_names_are_out_of_reach(hub, alice, bob, workspace):
    """``.uws-…`` names are the hub's (uploads under way, SLURM job output, which can
    hold a server's token while it runs): no request lists, reads or writes them,
    by their name or through a link, and copies leave them out."""
    directory = on_disk(hub, workspace)
    (directory / ".uws-jobs").mkdir()
    (directory / ".uws-jobs" / "job-1.log").write_text("JUPYTERHUB_API_TOKEN=0123456789abcdef0123456789abcdef\n")
    (directory / "logs").symlink_to(".uws-jobs")
    wid = workspace["id"]
    names = [e["name"] for e in hub.api("GET", f"workspaces/{wid}/files", alice, expect=200)["items"]]
    assert ".uws-jobs" not in names and "logs" in names
    for path in (".uws-jobs/job-1.log", "logs/job-1.log", "sub/../.uws-jobs/job-1.log"):
        r = hub.request("GET", f"workspaces/{wid}/files/{path}", alice)
        assert r.status_code == 400 and "the hub's own" in r.json()["message"], (path, r.text)
    for query in (".uws-jobs", "logs"):
        assert hub.request("GET", f"workspaces/{wid}/files?path={query}", alice).status_code == 400
    r = hub.request("PUT", f"workspaces/{wid}/files/.uws-jobs/planted.log", alice, data=b"x")
    assert r.status_code == 400 and not (directory / ".uws-jobs" / "planted.log").exists()

    share = copy_to_bob(hub, alice, bob, wid)
    assert share["copy"]["state"] == "done", share
    copy = on_disk(hub, hub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200))
    assert not os.path.lexists(copy / ".uws-jobs") and not os.path.lexists(copy / "logs")
    assert (copy / "README.md").exists()


# ---------------------------------------------------------------- finding 9: bad paths get a 400 that says why
@pytest.mark.parametrize("name", ["a" * 256, "é" * 128])
def test_a_name_over_255_bytes_is_a_400(hub, alice, workspace, name):
    wid = workspace["id"]
    message = f"Name longer than 255 bytes ({len(name.encode())} bytes): {name[:20]!r}..."
    for method, path in [
        ("GET", f"workspaces/{wid}/files/{name}"),
        ("GET", f"workspaces/{wid}/files/dir/{name}/x"),
        ("GET", f"workspaces/{wid}/files?path={name}"),
        ("PUT", f"workspaces/{wid}/files/{name}"),
        ("PUT", f"workspaces/{wid}/files/{name}/x.txt"),
    ]:
        r = hub.request(method, path, alice, data=b"x" if method == "PUT" else None)
        assert (r.status_code, r.json()["message"]) == (400, message), (method, path, r.text)
    r = hub.request("POST", "workspaces", alice, json={"name": "long seed", "files": [{"path": name, "content": ""}]})
    assert (r.status_code, r.json()["message"]) == (422, f"Seed file refused: {message}")


def test_a_symlink_loop_is_a_400(hub, alice, workspace):
    directory = on_disk(hub, workspace)
    (directory / "loop").symlink_to("loop")
    (directory / "ping").symlink_to("pong")
    (directory / "pong").symlink_to("ping")
    wid = workspace["id"]
    for method, path, shown in [
        ("GET", f"workspaces/{wid}/files?path=loop", "loop"),
        ("GET", f"workspaces/{wid}/files?path=ping/x", "ping/x"),
        ("GET", f"workspaces/{wid}/files/ping", "ping"),
        ("PUT", f"workspaces/{wid}/files/loop/x.txt", "loop/x.txt"),
        ("PUT", f"workspaces/{wid}/files/pong", "pong"),
    ]:
        r = hub.request(method, path, alice, data=b"x" if method == "PUT" else None)
        assert r.status_code == 400, (method, path, r.text)
        assert r.json()["message"] == f"Too many levels of symbolic links (a loop?) in {shown!r}"


# ---------------------------------------------------------------- descriptors: no path or tree takes them all
#: folders deep: more than the descriptors the hub is given (few_descriptors), far more than MAX_DEPTH
DEEP = 1500
MAX_DEPTH = 256


def test_a_path_thousands_of_folders_deep_is_a_400_and_makes_nothing(hub, alice, workspace):
    """Each folder a walk goes through stays open until it comes back: a path of 1100 folders
    took 1100 of the hub's descriptors at once (all it had: a 500, and everyone's requests
    failed meanwhile). Paths deeper than MAX_DEPTH folders are refused, by every method."""
    wid = workspace["id"]
    deep = "d/" * 1100
    directory = on_disk(hub, workspace)
    with few_descriptors(hub):
        for method, path, body in [
            ("POST", f"workspaces/{wid}/files/{deep}x", {"json": {"type": "directory"}}),
            ("PUT", f"workspaces/{wid}/files/{deep}x.txt", {"data": b"x"}),
            ("PUT", f"workspaces/{wid}/files/{'d/' * (MAX_DEPTH + 1)}x.txt", {"data": b"x"}),
            ("PATCH", f"workspaces/{wid}/files/README.md", {"json": {"path": f"{deep}x"}}),
            ("GET", f"workspaces/{wid}/files?path={deep}", {}),
            ("GET", f"workspaces/{wid}/files/{deep}x.txt", {}),
            ("DELETE", f"workspaces/{wid}/files/{deep}x.txt", {}),
        ]:
            r = hub.request(method, path, alice, **body)
            assert r.status_code == 400, (method, r.status_code, r.text[:300])
            assert f"more than {MAX_DEPTH} folders deep" in r.json()["message"], r.text[:300]
            assert sorted(p.name for p in directory.iterdir()) == ["README.md"], method
        # as deep as allowed is fine
        r = hub.request("PUT", f"workspaces/{wid}/files/{'d/' * MAX_DEPTH}x.txt", alice, data=b"x")
        assert r.status_code == 201, r.text[:300]
        assert hub.request("GET", f"workspaces/{wid}/files", alice).status_code == 200


def test_a_tree_thousands_of_folders_deep_is_zipped_copied_and_deleted_with_few_descriptors(hub, alice, bob, workspace):
    """A job can make a tree of any depth: zipping, copying, listing its results and deleting
    it held a descriptor per folder (a 1500-deep tree: more than the hub had). Zips, copies and
    listings leave out what is deeper than MAX_DEPTH folders; a deletion removes all of it."""
    wid = workspace["id"]
    directory = on_disk(hub, workspace)
    make_deep(directory, DEEP, b"at the bottom")
    try:
        with few_descriptors(hub):
            r = hub.request("GET", f"workspaces/{wid}/files/?format=zip", alice)
            assert r.status_code == 200, r.text[:300]
            names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
            # folders "d" below the zip's top folder (the workspace's slug, which may end in "d")
            depth = max(n.split("/")[1:].count("d") for n in names)
            assert depth == MAX_DEPTH and not any(n.endswith("leaf.txt") for n in names)
            share = copy_to_bob(hub, alice, bob, wid)
            assert share["copy"]["state"] == "done", share
            assert hub.request("GET", f"workspaces/{wid}/files?path={'d/' * 10}", alice).status_code == 200
            r = hub.request("DELETE", f"workspaces/{wid}/files/d?recursive=1", alice)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["freed_bytes"] == len(b"at the bottom")
            assert sorted(p.name for p in directory.iterdir()) == ["README.md"]
    finally:
        # a tree this deep left behind breaks every later walk of the tests' workspaces
        # (Python's recursive rglob and rmtree): rm removes it without recursion
        subprocess.run(["rm", "-rf", str(directory / "d")], check=False)


# ---------------------------------------------------------------- finding 9: no temporary files left behind
def send_partial_upload(hub, token, wid, path, sent: bytes, length: int, direct: bool) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", hub.hub_port if direct else hub.port, timeout=30)
    conn.putrequest("PUT", f"/hub/api/workspaces/{wid}/files/{path}")
    conn.putheader("Authorization", f"token {token}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    conn.send(sent)
    return conn


@pytest.mark.parametrize("direct", [False, True], ids=["through the proxy", "to the hub"])
def test_an_interrupted_upload_leaves_no_temporary_file(hub, alice, workspace, direct):
    directory = on_disk(hub, workspace)
    conn = send_partial_upload(hub, alice, workspace["id"], "big.bin", b"x" * 300_000, 1_000_000, direct)
    wait_for(lambda: temp_files(directory), 10, what="the upload's temporary file")
    conn.close()
    wait_for(lambda: not temp_files(directory), 10, what="the temporary file to be removed")
    assert not (directory / "big.bin").exists()


def test_an_upload_that_cannot_be_put_in_place_is_a_400_and_leaves_nothing(hub, alice, workspace):
    """A directory appears where the file is going while its body arrives."""
    directory = on_disk(hub, workspace)
    conn = send_partial_upload(hub, alice, workspace["id"], "target", b"x" * 1000, 2000, direct=False)
    wait_for(lambda: temp_files(directory), 10, what="the upload's temporary file")
    (directory / "target").mkdir()
    conn.send(b"x" * 1000)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 400, body
    assert b"A directory exists at 'target'" in body
    assert not temp_files(directory)


def test_stale_temporary_files_are_swept_and_never_copied(make_hub, system_users):
    hub = make_hub(MULTIUSER_CONFIG)
    alice, bob = hub.add_user("uwsalice"), hub.add_user("uwsbob")
    ws = hub.api(
        "POST",
        "workspaces",
        alice,
        json={"name": "leftovers", "files": [{"path": "sub/data.txt", "content": "data\n"}]},
        expect=201,
    )
    directory = on_disk(hub, ws)
    # left by a hub that was killed during uploads
    for path in (directory / ".uws-upload-0123456789abcdef", directory / "sub" / ".uws-upload-fedcba9876543210"):
        path.write_bytes(b"half an upload")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    hub.stop()
    hub.start()
    wait_for(lambda: not temp_files(directory), 30, what="the usage scan to sweep the leftovers")
    assert (directory / "sub" / "data.txt").read_bytes() == b"data\n"
    # one of this hub's own uploads, under way: not swept, and not copied either
    live = directory / ".uws-upload-00000000aaaaaaaa"
    live.write_bytes(b"an upload under way")
    share = copy_to_bob(hub, alice, bob, ws["id"])
    assert share["copy"]["state"] == "done", share
    copy = hub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200)
    assert sorted(str(p.relative_to(on_disk(hub, copy))) for p in on_disk(hub, copy).rglob("*")) == [
        "sub",
        "sub/data.txt",
    ]
    assert copy["disk_usage_bytes"] == len("data\n")
    assert live.exists()
