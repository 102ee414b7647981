"""The files API beyond one file at a time, on a real hub: new folders, moving
and renaming, deleting, folders as zip files, uploads that must not replace a
file; who may do each (owner, editor, viewer, stranger, anonymous).

Path safety against a job that swaps directories meanwhile is in
test_files_safety.py; deleting over the disk quota in test_quotas.py.
"""

from __future__ import annotations

import io
import os
import pwd
import stat
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

from ..helpers import MULTIUSER_CONFIG, READ_TIMEOUT_AFTER_A_CUT, declaring_length
from ..hubutil import wait_for

OUTSIDE = b"outside the workspace: never zipped"


def on_disk(hub, ws) -> Path:
    return hub.workspaces_root / ws["owner"] / ws["slug"]


def files(wid: int, path: str = "") -> str:
    return f"workspaces/{wid}/files/{path}"


def refused(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()["message"]


def all_refused(hub, token, wid: int, cases) -> None:
    """Each (method, path, JSON body, status, message) is refused with that status and
    message; a message of None: any (the field errors of a 422)."""
    for method, path, body, status, message in cases:
        r = hub.request(method, files(wid, path), token, json=body)
        got = refused(r, status)
        assert message is None or got == message, (method, path, body, got)


def usage(hub, token, wid) -> int:
    return hub.api("GET", f"workspaces/{wid}", token, expect=200)["disk_usage_bytes"]


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_bytes(OUTSIDE)
    return path


def test_new_folders(hub, alice, workspace):
    wid = workspace["id"]
    made = hub.api("POST", files(wid, "results/2026"), alice, json={"type": "directory"}, expect=201)
    assert {k: made[k] for k in ("name", "path", "type")} == {
        "name": "2026",
        "path": "results/2026",
        "type": "directory",
    }
    directory = on_disk(hub, workspace) / "results" / "2026"
    assert directory.is_dir() and directory.stat().st_uid == pwd.getpwnam("uwsalice").pw_uid
    folder = {"type": "directory"}
    all_refused(
        hub,
        alice,
        wid,
        [
            ("POST", "results/2026", folder, 409, "'results/2026' already exists"),
            ("POST", "README.md/x", folder, 400, "Not a directory: 'README.md'"),
            ("POST", ".uws-mine", folder, 400, "Names starting with '.uws-' are the hub's own: '.uws-mine'"),
            ("POST", "", folder, 400, "A folder path is required"),
        ],
    )
    assert "type" in refused(hub.request("POST", files(wid, "x"), alice, json={"type": "file"}), 422)
    assert refused(hub.request("POST", files(wid, "x"), alice), 400) == "The request body must be a JSON object"
    assert refused(hub.request("POST", files(wid, "x"), alice, data="{"), 400) == "Invalid JSON in body of request"
    assert not (on_disk(hub, workspace) / "x").exists()


def test_moving_and_renaming(hub, alice, workspace, outside):
    wid, directory = workspace["id"], on_disk(hub, workspace)
    r = hub.request("PATCH", files(wid, "README.md"), alice, json={"path": "docs/README.md"})
    assert refused(r, 404) == "No such directory: 'docs'"
    hub.api("POST", files(wid, "docs"), alice, json={"type": "directory"}, expect=201)
    moved = hub.api("PATCH", files(wid, "README.md"), alice, json={"path": "docs/README.md"}, expect=200)
    assert (moved["path"], moved["type"], moved["size"]) == ("docs/README.md", "file", 8)
    assert (directory / "docs" / "README.md").read_bytes() == b"# hello\n" and not (directory / "README.md").exists()
    renamed = hub.api("PATCH", files(wid, "docs"), alice, json={"path": "notes"}, expect=200)
    assert (renamed["path"], renamed["type"]) == ("notes", "directory")

    # replacing a file only when asked; its bytes leave the usage
    hub.api("PUT", files(wid, "new.md"), alice, data=b"new\n", expect=201)
    before = usage(hub, alice, wid)
    r = hub.request("PATCH", files(wid, "new.md"), alice, json={"path": "notes/README.md"})
    assert refused(r, 409) == "'notes/README.md' already exists"
    hub.api("PATCH", files(wid, "new.md"), alice, json={"path": "notes/README.md", "overwrite": True}, expect=200)
    assert (directory / "notes" / "README.md").read_bytes() == b"new\n"
    assert usage(hub, alice, wid) == before - len(b"# hello\n")
    r = hub.request("PATCH", files(wid, "notes/README.md"), alice, json={"path": "notes", "overwrite": True})
    assert refused(r, 409) == "A folder exists at 'notes'"

    # a link is moved itself; nothing goes outside, nothing of the hub's is touched
    (directory / "out").symlink_to(outside)
    hub.api("PATCH", files(wid, "out"), alice, json={"path": "notes/out"}, expect=200)
    assert os.readlink(directory / "notes" / "out") == str(outside)
    all_refused(
        hub,
        alice,
        wid,
        [
            (
                "PATCH",
                "notes/README.md",
                {"path": "notes/out/README.md"},
                400,
                "Path resolves outside the workspace: 'notes/out/README.md'",
            ),
            ("PATCH", "notes", {"path": "notes/deeper"}, 400, "Cannot move 'notes' into itself"),
            (
                "PATCH",
                "notes",
                {"path": ".uws-jobs"},
                400,
                "Names starting with '.uws-' are the hub's own: '.uws-jobs'",
            ),
            ("PATCH", "nope", {"path": "nope2"}, 404, "No such file or folder: 'nope'"),
            ("PATCH", "", {"path": "x"}, 400, "The workspace's top folder cannot be moved"),
            ("PATCH", "notes", {"path": ""}, 422, None),
            ("PATCH", "notes", {"path": "a\nb"}, 422, None),
        ],
    )
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_deleting(hub, alice, workspace, outside):
    wid, directory = workspace["id"], on_disk(hub, workspace)
    hub.api("PUT", files(wid, "data/raw/a.bin"), alice, data=b"a" * 100, expect=201)
    hub.api("PUT", files(wid, "data/b.bin"), alice, data=b"b" * 50, expect=201)
    before = usage(hub, alice, wid)
    r = hub.request("DELETE", files(wid, "data"), alice)
    assert refused(r, 409) == "Folder 'data' is not empty; delete it with ?recursive=1"
    assert hub.api("DELETE", files(wid, "data/b.bin"), alice, expect=200) == {
        "path": "data/b.bin",
        "type": "file",
        "freed_bytes": 50,
    }
    assert usage(hub, alice, wid) == before - 50
    gone = hub.api("DELETE", files(wid, "data?recursive=1"), alice, expect=200)
    assert (gone["type"], gone["freed_bytes"]) == ("directory", 100)
    assert sorted(p.name for p in directory.iterdir()) == ["README.md"]
    assert usage(hub, alice, wid) == before - 150
    hub.api("POST", files(wid, "empty"), alice, json={"type": "directory"}, expect=201)
    assert hub.api("DELETE", files(wid, "empty?recursive=0"), alice, expect=200)["freed_bytes"] == 0
    # a link goes, not what it points at
    (directory / "out").symlink_to(outside)
    gone = hub.api("DELETE", files(wid, "out?recursive=1"), alice, expect=200)
    assert gone["type"] == "symlink" and (outside / "secret.txt").read_bytes() == OUTSIDE

    (directory / ".uws-jobs").mkdir()
    all_refused(
        hub,
        alice,
        wid,
        [
            ("DELETE", "data", None, 404, "No such file or folder: 'data'"),
            ("DELETE", "", None, 400, "The workspace's top folder cannot be deleted; delete the workspace instead"),
            ("DELETE", "README.md?recursive=yes", None, 400, "recursive must be 1 or 0 (true or false), not 'yes'"),
            (
                "DELETE",
                ".uws-jobs?recursive=1",
                None,
                400,
                "Names starting with '.uws-' are the hub's own: '.uws-jobs'",
            ),
        ],
    )
    assert (directory / ".uws-jobs").is_dir() and (directory / "README.md").exists()


def test_a_folder_downloads_as_a_zip(hub, alice, workspace, outside):
    wid, directory = workspace["id"], on_disk(hub, workspace)
    hub.api("PUT", files(wid, "data/table.csv"), alice, data=b"a,b\n1,2\n" * 1000, expect=201)
    hub.api("POST", files(wid, "data/empty"), alice, json={"type": "directory"}, expect=201)
    (directory / "data" / "latest").symlink_to("table.csv")
    (directory / "data" / "secret").symlink_to(outside / "secret.txt")
    (directory / "data" / ".uws-upload-0123456789abcdef").write_bytes(b"half an upload")
    os.mkfifo(directory / "data" / "pipe")
    r = hub.request("GET", files(wid, "data?format=zip"), alice)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''data.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["data/", "data/empty/", "data/latest", "data/table.csv"]
        assert z.read("data/table.csv") == b"a,b\n1,2\n" * 1000
        # a link inside stays a link
        assert stat.S_ISLNK(z.getinfo("data/latest").external_attr >> 16) and z.read("data/latest") == b"table.csv"
    assert OUTSIDE not in r.content

    # the whole workspace: an empty path
    r = hub.request("GET", files(wid, "?format=zip"), alice)
    assert r.headers["Content-Disposition"] == f"attachment; filename*=UTF-8''{workspace['slug']}.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert f"{workspace['slug']}/README.md" in z.namelist()
    r = hub.request("GET", files(wid, "README.md?format=zip"), alice)
    assert refused(r, 400) == "Not a directory: 'README.md'"
    r = hub.request("GET", files(wid, "data?format=tar"), alice)
    assert refused(r, 400) == "Unknown format 'tar': the formats here are 'zip' and 'text'"
    assert refused(hub.request("GET", files(wid, "nope?format=zip"), alice), 404) == "No such directory: 'nope'"


def test_a_folder_of_more_than_100000_entries_is_no_zip_nor_listing(hub, alice, workspace):
    """A zip's directory of entries is kept in memory until its end (about half a kilobyte
    an entry), and files of no bytes cost no disk quota: a folder of millions of them took
    the hub's memory at each download. Over UWSHub.zip_max_entries (100000) it is a 422."""
    wid, directory = workspace["id"], on_disk(hub, workspace)
    (directory / "many" / "few").mkdir(parents=True)
    (directory / "many" / "few" / "a.txt").write_bytes(b"a")
    fd = os.open(directory / "many", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(100_000):
            os.close(os.open(f"e{i}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    for path, shown in (("many", "'many'"), ("", "The workspace")):
        r = hub.request("GET", files(wid, f"{path}?format=zip"), alice)
        assert refused(r, 422) == (
            f"{shown} holds more than 100000 files and folders, too many for one zip file;"
            " download the folders in it one at a time"
        )
    r = hub.request("GET", files(wid, "many/few?format=zip"), alice)
    assert r.status_code == 200 and zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["few/", "few/a.txt"]
    # nor is it listed (UWSHub.folder_max_entries, 100000): a listing keeps every entry until
    # it is sorted (a folder of a million of them held 400 MB of the hub's memory per request)
    r = hub.request("GET", f"workspaces/{wid}/files?path=many", alice)
    assert refused(r, 422) == (
        "'many' holds more than 100000 files and folders, too many to list"
        " (UWSHub.folder_max_entries); list its contents from a job or JupyterLab"
    )
    assert [e["name"] for e in hub.api("GET", f"workspaces/{wid}/files?path=many/few", alice, expect=200)["items"]] == [
        "a.txt"
    ]
    assert "many" in [e["name"] for e in hub.api("GET", f"workspaces/{wid}/files", alice, expect=200)["items"]]


def _socket_buffers_mib() -> int:
    """The most that two TCP connections' buffers hold (both ends' receive and send
    buffers), in MiB: a machine with large buffers (here 32 MiB receive) holds 64 MiB."""

    def most(name: str) -> int:
        return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])

    return 2 * (most("tcp_rmem") + most("tcp_wmem")) // (1024 * 1024)


@pytest.mark.parametrize(
    "what, lost",
    [("?format=zip", "share"), ("noise.bin", "share"), ("noise.bin", "token")],
    ids=["a zip, share revoked", "a file, share revoked", "a file, token deleted"],
)
def test_a_download_under_way_is_cut_off_once_its_reader_loses_the_workspace(make_hub, system_users, what, lost):
    """A zip is made as it is read, and a large file is sent, for as long as its reader
    likes: a viewer whose share was revoked (or whose token was deleted) meanwhile got
    the rest of the folder (or of the file) after that. The reader's right is asked
    again every ``stream_recheck_seconds``, as streams ask it: the download is cut off
    (not ended early, which would look like a whole, smaller zip)."""
    hub = make_hub(MULTIUSER_CONFIG + "c.UWSHub.stream_recheck_seconds = 1\n")
    alice = hub.add_user("uwsalice")
    hub.add_user("uwscarol")
    ws = hub.api("POST", "workspaces", alice, json={"name": f"zip {uuid.uuid4().hex[:6]}"}, expect=201)
    share = hub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwscarol", "level": "viewer"}, expect=201
    )
    minted = hub.api("POST", "users/uwscarol/tokens", json={"note": "download"}, expect=201)
    lose = {
        "share": lambda: hub.api("DELETE", f"workspaces/{ws['id']}/shares/{share['id']}", alice, expect=200),
        "token": lambda: hub.api("DELETE", f"users/uwscarol/tokens/{minted['id']}", expect=204),
    }[lost]
    block = os.urandom(1024 * 1024)
    with open(on_disk(hub, ws) / "noise.bin", "wb") as f:
        for _ in range(_socket_buffers_mib() + 16):
            f.write(block)
    size = (_socket_buffers_mib() + 16) * len(block)
    received = 0
    # (the proxy leaves its reader waiting when the hub cuts a download off: a read timeout,
    # short, as data that still flows comes at once)
    with hub.request(
        "GET", files(ws["id"], what), minted["token"], stream=True, timeout=(15, READ_TIMEOUT_AFTER_A_CUT)
    ) as r:
        assert r.status_code == 200, r.text
        chunks = r.iter_content(64 * 1024)
        received += len(next(chunks))  # the buffers between fill: the hub waits for the reader
        lose()
        time.sleep(2)  # past a recheck: the next piece asks again
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in chunks:
                received += len(chunk)
    assert received < size
    # the owner's download is whole
    with hub.request("GET", files(ws["id"], what), alice) as r:
        if what == "?format=zip":
            assert zipfile.ZipFile(io.BytesIO(r.content)).namelist()[-1] == f"{ws['slug']}/noise.bin"
        else:
            assert len(r.content) == size


def test_a_reader_downloads_at_most_two_zips_at_once(hub, alice, workspace):
    """A zip is made as it is read: one read slowly stays open as long as its reader wants,
    holding a descriptor per folder it is in and memory per entry. One reader (a viewer
    here) gets two at once (UWSHub.max_zip_downloads_per_user), then a 429; others are not
    held up, and once one of the two ends the reader gets another."""
    wid, directory = workspace["id"], on_disk(hub, workspace)
    viewer = hub.add_user("uwscarol")
    hub.api("POST", f"workspaces/{wid}/shares", alice, json={"user": "uwscarol", "level": "viewer"}, expect=201)
    (directory / "big").mkdir()
    # incompressible (deflate looks back 32 KiB only) and more than the four sockets between
    # hold (client <- proxy <- hub), so a zip read slowly cannot end by filling their buffers
    block = os.urandom(1024 * 1024)
    with open(directory / "big" / "noise.bin", "wb") as f:
        for _ in range(_socket_buffers_mib() + 16):
            f.write(block)
    url = files(wid, "big?format=zip")
    slow = [hub.request("GET", url, viewer, stream=True) for _ in range(2)]
    # kept: an iterator of a chunked answer that is dropped closes its connection (urllib3)
    reading = [r.iter_content(1024) for r in slow]
    try:
        for r, chunks in zip(slow, reading, strict=True):
            assert r.status_code == 200, r.text
            next(chunks)  # a reader that reads slowly: the zip stays open
        r = hub.request("GET", url, viewer)
        assert (
            refused(r, 429) == "You are downloading 2 zip files already, the most at once; try again when one is done"
        )
        assert r.headers["Retry-After"] == "10"
        # others are not held up (the owner, an admin), nor the reader's other requests
        for token in (alice, hub.admin_token):
            assert hub.request("GET", files(wid, "README.md?format=zip"), token).status_code == 400
            with hub.request("GET", url, token, stream=True) as other:
                assert other.status_code == 200
        assert hub.request("GET", files(wid, "README.md"), viewer).status_code == 200
    finally:
        slow[0].close()
    # the hub notices a closed download at its next write
    again = wait_for(
        lambda: (r := hub.request("GET", url, viewer, stream=True)).status_code != 429 and r,
        15,
        what="a zip download slot",
    )
    assert again.status_code == 200, again.text
    again.close()
    slow[1].close()


def test_an_upload_that_must_not_replace_a_file(hub, alice, workspace):
    wid = workspace["id"]
    create_only = {"If-None-Match": "*"}
    r = hub.request("PUT", files(wid, "README.md"), alice, data=b"replaced", headers=create_only)
    assert refused(r, 412) == "'README.md' already exists"
    assert hub.request("GET", files(wid, "README.md"), alice).content == b"# hello\n"
    hub.api("PUT", files(wid, "new.txt"), alice, data=b"new", headers=create_only, expect=201)
    # (without the header, a file is replaced, as before)
    hub.api("PUT", files(wid, "new.txt"), alice, data=b"newer", expect=201)


def test_small_text_files_are_read_and_saved_as_text(hub, alice, workspace):
    """The page's text view: a small UTF-8 file as JSON, saved back only over the
    version read (If-Match), only as UTF-8 text, within the text limit."""
    wid, directory = workspace["id"], on_disk(hub, workspace)
    hub.api("PUT", files(wid, "notes/todo.md"), alice, data="héllo ✓\n".encode(), expect=201)
    read = hub.request("GET", files(wid, "notes/./todo.md?format=text"), alice)
    assert read.status_code == 200, read.text
    assert read.text == "héllo ✓\n"
    assert read.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert read.headers["X-Content-Type-Options"] == "nosniff" and "Content-Disposition" not in read.headers
    version = read.headers["ETag"]
    assert version == hub.request("GET", files(wid, "notes/todo.md"), alice).headers["ETag"]
    before = usage(hub, alice, wid)

    # saved over the version read: a new version
    text = "héllo ✓\nsaved from the page\n"
    r = hub.request(
        "PUT", files(wid, "notes/todo.md?format=text"), alice, data=text.encode(), headers={"If-Match": version}
    )
    assert r.status_code == 201, r.text
    assert (directory / "notes" / "todo.md").read_text() == text
    assert r.headers["ETag"] != version
    assert r.headers["ETag"] == hub.request("GET", files(wid, "notes/todo.md?format=text"), alice).headers["ETag"]
    assert usage(hub, alice, wid) == before + len(b"saved from the page\n")
    # ... but not over a version changed since (by a job, say), nor one deleted since
    r = hub.request("PUT", files(wid, "notes/todo.md?format=text"), alice, data=b"stale", headers={"If-Match": version})
    assert refused(r, 412) == "'notes/todo.md' changed since it was read"
    r = hub.request("PUT", files(wid, "gone.md?format=text"), alice, data=b"stale", headers={"If-Match": version})
    assert refused(r, 412) == "'gone.md' was deleted since it was read"
    assert (directory / "notes" / "todo.md").read_text() == text and not (directory / "gone.md").exists()

    # what is no text to edit
    (directory / "latin1.txt").write_bytes("h\xe9".encode("latin-1"))
    (directory / "nul.bin").write_bytes(b"a\x00b")
    (directory / "big.log").write_bytes(b"x" * (1024 * 1024 + 1))
    for path, message in [
        ("latin1.txt", "'latin1.txt' is not UTF-8 text (byte 1 is not UTF-8)"),
        ("nul.bin", "'nul.bin' is not text (it holds NUL bytes)"),
        ("big.log", "'big.log' has 1048577 bytes, more than the 1048576 of a text to edit"),
    ]:
        assert refused(hub.request("GET", files(wid, f"{path}?format=text"), alice), 422) == message
    assert refused(hub.request("GET", files(wid, "notes?format=text"), alice), 400) == (
        "'notes' is a directory; list directories with ?path="
    )
    assert refused(hub.request("GET", files(wid, "no.md?format=text"), alice), 404) == "No such file: 'no.md'"
    r = hub.request("PUT", files(wid, "notes/todo.md?format=text"), alice, data=b"caf\xe9")
    assert refused(r, 422) == "'notes/todo.md' is not UTF-8 text (byte 3 is not UTF-8)"
    r = declaring_length(hub, "PUT", f"/hub/api/{files(wid, 'notes/todo.md?format=text')}", alice, 1024 * 1024 + 1)
    assert refused(r, 413) == "File larger than the limit of 1048576 bytes"
    assert (directory / "notes" / "todo.md").read_text() == text
    assert not [p for p in directory.rglob(".uws-*")], "a refused save leaves no temporary file"
    r = hub.request("PUT", files(wid, "notes/todo.md?format=zip"), alice, data=b"x")
    assert refused(r, 400) == "Unknown format 'zip': the formats here are 'text'"
    assert usage(hub, alice, wid) == before + len(b"saved from the page\n")


def test_json_bodies_are_bounded(hub, alice, workspace):
    """The JSON bodies of POST and PATCH are held in memory: a large one is refused unread
    (from its Content-Length; sent to the hub's port, see declaring_length)."""
    for method in ("PATCH", "POST"):
        r = declaring_length(hub, method, f"/hub/api/{files(workspace['id'], 'README.md')}", alice, 70_000)
        assert refused(r, 413) == "Request body larger than the limit of 65536 bytes"


def test_who_may_change_files(hub, alice, bob, workspace):
    """Owner, editor and admin change files, a viewer only reads (a zip, a text too),
    a stranger sees nothing, and nobody without credentials anything."""
    carol, stranger = hub.add_user("uwscarol"), hub.add_user(f"stranger{uuid.uuid4().hex[:6]}")
    wid = workspace["id"]
    shares = f"workspaces/{wid}/shares"
    hub.api("POST", shares, alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    hub.api("POST", shares, alice, json={"user": "uwscarol", "level": "viewer"}, expect=201)
    for who, token, change, read in [
        ("owner", alice, None, 200),
        ("editor", bob, None, 200),
        ("viewer", carol, 403, 200),
        ("stranger", stranger, 404, 404),
        ("admin", hub.admin_token, None, 200),
        ("anonymous", None, 403, 403),
    ]:
        name = who
        for method, path, kw, ok in [
            ("POST", files(wid, name), {"json": {"type": "directory"}}, 201),
            ("PATCH", files(wid, name), {"json": {"path": name + "-renamed"}}, 200),
            ("PUT", files(wid, f"{name}-renamed/f.txt"), {"data": b"f"}, 201),
            ("PUT", files(wid, f"{name}-renamed/f.txt?format=text"), {"data": b"text"}, 201),
            ("DELETE", files(wid, f"{name}-renamed?recursive=1"), {}, 200),
        ]:
            r = hub.request(method, path, token, **kw)
            assert r.status_code == (change or ok), (who, method, path, r.status_code, r.text)
        assert hub.request("GET", files(wid, "?format=zip"), token).status_code == read, who
        assert hub.request("GET", files(wid, "README.md?format=text"), token).status_code == read, who
    assert sorted(p.name for p in on_disk(hub, workspace).iterdir()) == ["README.md"]
    # a token that may only read cannot change anything either
    read_only = hub.api(
        "POST", "users/uwsalice/tokens", json={"scopes": ["custom:uws:read:workspaces!user"]}, expect=201
    )["token"]
    r = hub.request("DELETE", files(wid, "README.md"), read_only)
    assert r.status_code == 403 and "custom:uws:write:workspaces" in r.json()["message"]


@pytest.mark.expect_log_errors(r"Failed to delete workspace \d+")
def test_a_mount_in_a_deleted_workspace_is_left_as_it_is(hub, alice):
    """An admin may bind a data set into a workspace: deleting the workspace removed
    what was mounted there too, as root (and a deleted user's, with ``deleted_users_data
    = "remove"``). The deletion stops at the mount, in ``error``, saying why; the data
    set is whole; once unmounted, the deletion goes through."""
    ws = hub.api("POST", "workspaces", alice, json={"name": f"mount {uuid.uuid4().hex[:6]}"}, expect=201)
    mount = on_disk(hub, ws) / "shared"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        (mount / "dataset.csv").write_text("everyone's")
        hub.api("DELETE", f"workspaces/{ws['id']}", alice, expect=202)
        wait_for(lambda: hub.api("GET", f"workspaces/{ws['id']}", alice)["status"] == "error", 15, what="the deletion")
        reason = hub.api("GET", f"workspaces/{ws['id']}", alice)["status_reason"]
        assert "holds a mount of another file system ('shared')" in reason, reason
        assert (mount / "dataset.csv").read_text() == "everyone's"
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    hub.api("DELETE", f"workspaces/{ws['id']}", alice, expect=202)
    wait_for(lambda: hub.request("GET", f"workspaces/{ws['id']}", alice).status_code == 404, 15, what="the deletion")
