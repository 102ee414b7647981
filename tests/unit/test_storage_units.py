"""Path safety in uws_hub.storage (and the copy that uses it), with no hub: on a
temporary directory, as a user's job would change it."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from uws_hub.workspaces.archive import PIECE_BYTES
from uws_hub.workspaces.copying import copy_tree
from uws_hub.workspaces.paths import FileConflict, NotFound, NotText, Owner, PathError, etag
from uws_hub.workspaces.storage import TEXT_MAX_BYTES, Freed, Precondition, WorkspaceStorage

from ..helpers import OUTSIDE


def read(store, directory, relpath) -> bytes:
    f, _ = store.open_read(directory, relpath)
    with f:
        return f.read()


@pytest.mark.parametrize("relpath", ["..", "../x", "a/../../x", "/etc/passwd", "a\x00b", "./../x"])
def test_paths_that_leave_are_refused(storage, relpath):
    store, directory = storage
    for call in (
        lambda d, p: store.list_dir(d, p, 1000),
        store.open_read,
        lambda d, p: store.start_upload(d, p, Owner()),
    ):
        with pytest.raises(PathError):
            call(directory, relpath)


def test_symlinks_are_followed_only_beneath_the_workspace(storage, tmp_path):
    store, directory = storage
    ws = Path(directory)
    (ws / "sub").mkdir()
    (ws / "sub" / "f.txt").write_bytes(b"f")
    (ws / "out").symlink_to(tmp_path / "outside" / "secret.txt")
    (ws / "outdir").symlink_to(tmp_path / "outside")
    (ws / "in").symlink_to("sub")
    (ws / "sub" / "top").symlink_to("..")
    (ws / "sub" / "up2").symlink_to("../..")
    (ws / "l1").symlink_to(".")
    (ws / "chain").symlink_to(f"l1/l1/l1/../../../{tmp_path.name}/outside/secret.txt")
    (ws / "climb").symlink_to("../ws/sub/f.txt")  # lexically fine, but climbs above the root first
    for relpath in ("out", "outdir/secret.txt", "sub/up2/x", "chain", "climb"):
        with pytest.raises(PathError, match="outside the workspace"):
            store.open_read(directory, relpath)
    with pytest.raises(PathError, match="outside the workspace"):
        store.list_dir(directory, "outdir", 1000)
    with pytest.raises(PathError, match="outside the workspace"):
        store.start_upload(directory, "outdir/planted", Owner())
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["only-outside.txt", "secret.txt"]
    # inside, links work, and paths are named as resolved
    assert read(store, directory, "in/f.txt") == b"f"
    assert read(store, directory, "sub/top/l1/sub/f.txt") == b"f"
    assert [e.path for e in store.list_dir(directory, "in", 1000) if e.name == "f.txt"] == ["sub/f.txt"]
    assert "sub" in [e.name for e in store.list_dir(directory, "sub/top", 1000)]
    with pytest.raises(PathError, match="is a directory"):
        store.open_read(directory, "sub/top")
    with pytest.raises(PathError, match="A directory exists at 'sub/top'"):
        store.start_upload(directory, "sub/top", Owner())
    # an upload to a link replaces the file it points at (inside)
    store.write_file(directory, "in/new/g.txt", b"g", Owner())
    assert (ws / "sub" / "new" / "g.txt").read_bytes() == b"g"
    (ws / "g-link").symlink_to("sub/new/g.txt")
    store.write_file(directory, "g-link", b"G", Owner())
    assert (ws / "sub" / "new" / "g.txt").read_bytes() == b"G" and (ws / "g-link").is_symlink()


def test_upload_is_atomic(storage):
    store, directory = storage
    store.write_file(directory, "f.txt", b"old", Owner())
    upload = store.start_upload(directory, "f.txt", Owner())
    upload.write(b"new half")
    # until commit, the old file is intact and the temporary one is not listed
    assert open(os.path.join(directory, "f.txt"), "rb").read() == b"old"
    assert [e.name for e in store.list_dir(directory, "", 1000)] == ["f.txt"]
    upload.abort()
    upload.write(b"after the client went away: ignored")
    assert open(os.path.join(directory, "f.txt"), "rb").read() == b"old"
    assert sorted(os.listdir(directory)) == ["f.txt"]
    upload = store.start_upload(directory, "deep/er/g.txt", Owner())
    upload.write(b"data")
    upload.commit()
    assert (upload.replaced_bytes, upload.path) == (0, "deep/er/g.txt")
    assert open(os.path.join(directory, "deep", "er", "g.txt"), "rb").read() == b"data"
    # a directory appears where the file goes: refused, and the temporary file goes
    upload = store.start_upload(directory, "late", Owner())
    os.mkdir(os.path.join(directory, "late"))
    with pytest.raises(PathError, match="A directory exists at 'late'"):
        upload.commit()
    assert sorted(os.listdir(directory)) == ["deep", "f.txt", "late"]
    # its folder is deleted meanwhile (with the temporary file in it)
    upload = store.start_upload(directory, "gone/h.txt", Owner())
    shutil.rmtree(os.path.join(directory, "gone"))
    with pytest.raises(NotFound, match="The folder of 'gone/h.txt' was deleted during the upload"):
        upload.commit()


def test_list_and_usage(storage):
    store, directory = storage
    store.write_file(directory, "a/b.txt", b"12345", Owner())
    store.write_file(directory, "c.txt", b"123", Owner())
    entries = store.list_dir(directory, "", 1000)
    assert [(e.name, e.type) for e in entries] == [("a", "directory"), ("c.txt", "file")]
    assert [e.path for e in store.list_dir(directory, "a", 1000)] == ["a/b.txt"]
    assert store.usage_bytes(directory) == 8
    with pytest.raises(NotFound, match="No such directory: 'missing'"):
        store.list_dir(directory, "missing", 1000)
    with pytest.raises(NotFound, match="No such file: 'a/missing'"):
        store.open_read(directory, "a/missing")
    with pytest.raises(PathError, match="Not a directory: 'c.txt'"):
        store.list_dir(directory, "c.txt", 1000)
    with pytest.raises(PathError, match="Not a directory: 'c.txt'"):
        store.write_file(directory, "c.txt/d.txt", b"x", Owner())
    with pytest.raises(PathError, match="is a directory"):
        store.open_read(directory, "a")


def test_directory_names_are_checked(storage):
    store, _ = storage
    for owner, slug in [("..", "x"), ("a/b", "x"), ("a", ".."), ("a", "")]:
        with pytest.raises(PathError):
            store.directory_for(owner, slug)


def test_special_files_are_refused_by_type_without_blocking(storage):
    store, directory = storage
    ws = Path(directory)
    os.mkfifo(ws / "pipe")
    (ws / "pipe-link").symlink_to("pipe")
    outcome = {}

    def open_fifo():
        try:
            store.open_read(directory, "pipe-link")
        except PathError as e:
            outcome["refused"] = str(e)

    thread = threading.Thread(target=open_fifo, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked opening it (the code before the fix): let it go
        os.close(os.open(ws / "pipe", os.O_WRONLY | os.O_NONBLOCK))
    assert outcome == {"refused": "Not a regular file: 'pipe-link' is a FIFO"}
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(ws / "sock"))
        with pytest.raises(PathError, match="^Not a regular file: 'sock' is a socket$"):
            store.open_read(directory, "sock")
    with pytest.raises(PathError, match="^Not a directory: 'pipe'$"):
        store.list_dir(directory, "pipe", 1000)


def test_long_names_and_symlink_loops_are_path_errors(storage):
    store, directory = storage
    ws = Path(directory)
    (ws / "loop").symlink_to("loop")
    (ws / "ping").symlink_to("pong")
    (ws / "pong").symlink_to("ping/x")
    (ws / "long").symlink_to("a" * 300)
    for relpath in ("loop", "ping/y", "pong"):
        for call in (
            lambda d, p: store.list_dir(d, p, 1000),
            store.open_read,
            lambda d, p: store.start_upload(d, p, Owner()),
        ):
            with pytest.raises(PathError, match=rf"^Too many levels of symbolic links \(a loop\?\) in '{relpath}'$"):
                call(directory, relpath)
    for relpath in ("b" * 256, "x/" + "é" * 128):
        for call in (
            lambda d, p: store.list_dir(d, p, 1000),
            store.open_read,
            lambda d, p: store.start_upload(d, p, Owner()),
        ):
            with pytest.raises(PathError, match="^Name longer than 255 bytes"):
                call(directory, relpath)
    with pytest.raises(PathError, match="^Name longer than 255 bytes"):
        store.open_read(directory, "long")


def test_usage_sweeps_only_stale_upload_temporaries(storage):
    store, directory = storage
    ws = Path(directory)
    store.write_file(directory, "sub/data.txt", b"12345", Owner())
    stale = [ws / ".uws-upload-0000000000000001", ws / "sub" / ".uws-upload-0000000000000002"]
    for path in stale:
        path.write_bytes(b"left by a killed hub")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    live = store.start_upload(directory, "sub/live.bin", Owner())
    live.write(b"under way")
    # a fresh storage: a hub started after the stale ones were written, before the live one
    later = WorkspaceStorage(store.root)
    later.started_at = time.time() - 60
    assert later.measure(directory) == 5 + len(b"under way")
    assert not any(p.exists() for p in stale)
    live.commit()
    assert (ws / "sub" / "live.bin").read_bytes() == b"under way"


def swap_loop(ws: Path, outside: Path, stop: threading.Event) -> None:
    """Put a real directory and a symlink to ``outside`` in turn at ``ws/race``."""
    real, link, race = ws / "real", ws / "link", ws / "race"
    while not stop.is_set():
        for name in (real, link):
            try:
                os.rename(name, race)
            except OSError:  # an upload made a directory 'race' meanwhile
                shutil.rmtree(race, ignore_errors=True)
                continue
            os.rename(race, name)


def test_swapping_a_directory_and_a_symlink_never_leaks_outside(storage, tmp_path):
    store, directory = storage
    ws, outside = Path(directory), tmp_path / "outside"
    (ws / "real").mkdir()
    (ws / "real" / "secret.txt").write_bytes(b"inside")
    (ws / "link").symlink_to(outside)
    stop = threading.Event()
    thread = threading.Thread(target=swap_loop, args=(ws, outside, stop), daemon=True)
    thread.start()
    counts = {"read": 0, "listed": 0, "written": 0, "copied": 0}
    try:
        deadline = time.monotonic() + 3
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                data = read(store, directory, "race/secret.txt")
                assert data == b"inside", "read the file outside the workspace"
                counts["read"] += 1
            except (PathError, NotFound):
                pass
            try:
                names = [e.name for e in store.list_dir(directory, "race", 1000)]
                assert "only-outside.txt" not in names, "listed the directory outside the workspace"
                counts["listed"] += 1
            except (PathError, NotFound):
                pass
            try:
                store.write_file(directory, f"race/up-{i}.txt", b"up", Owner())
                counts["written"] += 1
            except (PathError, NotFound, FileNotFoundError):
                pass
            dst = tmp_path / f"copy-{i}"
            copy_tree(directory, str(dst), Owner())
            counts["copied"] += 1
            assert not list(dst.rglob("only-outside.txt")), "copied the directory outside the workspace"
            assert store.usage_bytes(directory) < len(OUTSIDE) * 1000, "counted the directory outside"
    finally:
        stop.set()
        thread.join(10)
    assert sorted(p.name for p in outside.iterdir()) == ["only-outside.txt", "secret.txt"]
    assert all(counts.values()), counts


# ---------------------------------------------------------------- folders, deleting, moving, zipping
def tree(directory) -> list[str]:
    root = Path(directory)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def unzip(stream) -> zipfile.ZipFile:
    data = b""
    while piece := stream.read():
        data += piece
    return zipfile.ZipFile(io.BytesIO(data))


def test_make_folder_delete_and_move(storage, tmp_path):
    store, directory = storage
    ws = Path(directory)
    made = store.make_folder(directory, "a/b", Owner())
    assert (made.path, made.type) == ("a/b", "directory")
    with pytest.raises(FileConflict, match="'a/b' already exists"):
        store.make_folder(directory, "a/b", Owner())
    (ws / "a" / "b" / "f.txt").write_bytes(b"12345")
    (ws / "a" / "b" / "deep").mkdir()
    (ws / "a" / "b" / "deep" / "g.txt").write_bytes(b"123")
    (ws / "a" / "out").symlink_to(tmp_path / "outside")

    moved = store.move(directory, "a/b/f.txt", "a/f.txt", Freed())
    assert (moved.path, moved.size) == ("a/f.txt", 5)
    (ws / "a" / "b" / "f.txt").write_bytes(b"x")
    with pytest.raises(FileConflict, match="'a/f.txt' already exists"):
        store.move(directory, "a/b/f.txt", "a/f.txt", Freed())
    freed = Freed()
    store.move(directory, "a/b/f.txt", "a/f.txt", freed, overwrite=True)
    assert freed.bytes == 5 and (ws / "a" / "f.txt").read_bytes() == b"x"
    with pytest.raises(FileConflict, match="A folder exists at 'a/b'"):
        store.move(directory, "a/f.txt", "a/b", Freed(), overwrite=True)
    with pytest.raises(PathError, match="Cannot move 'a' into itself"):
        store.move(directory, "a", "a/b/a", Freed())
    with pytest.raises(NotFound):
        store.move(directory, "a/f.txt", "nowhere/f.txt", Freed())
    with pytest.raises(PathError, match="outside the workspace"):
        store.move(directory, "a/f.txt", "a/out/f.txt", Freed())
    # a link is moved (and deleted) itself, never what it points at
    store.move(directory, "a/out", "out-link", Freed())
    assert (ws / "out-link").is_symlink()
    with pytest.raises(FileConflict, match="not empty"):
        store.delete(directory, "a/b", Freed())
    freed = Freed()
    store.delete(directory, "out-link", freed)
    store.delete(directory, "a", freed, recursive=True)
    assert freed.bytes == len(str(tmp_path / "outside")) + 1 + 3
    assert tree(directory) == []
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["only-outside.txt", "secret.txt"]
    for call in (lambda: store.delete(directory, "", Freed()), lambda: store.move(directory, "", "x", Freed())):
        with pytest.raises(PathError, match="top folder"):
            call()
    for call in (
        lambda: store.delete(directory, ".uws-jobs", Freed()),
        lambda: store.make_folder(directory, ".uws-x", Owner()),
        lambda: store.move(directory, "x", ".uws-x", Freed()),
    ):
        with pytest.raises(PathError, match="the hub's own"):
            call()


def test_an_upload_that_must_not_replace(storage):
    store, directory = storage
    store.write_file(directory, "f.txt", b"old", Owner())
    with pytest.raises(FileConflict, match="'f.txt' already exists"):
        store.start_upload(directory, "f.txt", Owner(), Precondition(absent=True))
    upload = store.start_upload(directory, "g.txt", Owner(), Precondition(absent=True))
    upload.write(b"new")
    Path(directory, "g.txt").write_bytes(b"made meanwhile")
    with pytest.raises(FileConflict):
        upload.commit()
    assert Path(directory, "g.txt").read_bytes() == b"made meanwhile" and tree(directory) == ["f.txt", "g.txt"]


def test_an_upload_over_the_version_read(storage):
    """If-Match: the upload goes in place only over the file of the tag it was given."""
    store, directory = storage
    store.write_file(directory, "f.txt", b"v1", Owner())
    text, st = store.read_text(directory, "f.txt")
    assert text == "v1"
    upload = store.start_upload(directory, "f.txt", Owner(), Precondition(etag=etag(st)))
    upload.write(b"v2")
    upload.commit()
    assert upload.etag == etag(os.stat(Path(directory, "f.txt"))) != etag(st)
    with pytest.raises(FileConflict, match="'f.txt' changed since it was read"):
        store.start_upload(directory, "f.txt", Owner(), Precondition(etag=etag(st)))
    # changed between the start and the commit: the check is made again
    upload = store.start_upload(directory, "f.txt", Owner(), Precondition(etag=upload.etag))
    upload.write(b"v3")
    Path(directory, "f.txt").write_bytes(b"a job's v3")
    with pytest.raises(FileConflict, match="changed since it was read"):
        upload.commit()
    upload = store.start_upload(directory, "f.txt", Owner(), Precondition(etag="*"))
    os.unlink(Path(directory, "f.txt"))
    with pytest.raises(FileConflict, match="'f.txt' was deleted since it was read"):
        upload.commit()
    assert tree(directory) == []


def test_text_for_the_text_view(storage):
    store, directory = storage
    ws = Path(directory)
    (ws / "ok.md").write_text("héllo ✓\n", encoding="utf-8")
    (ws / "latin1.txt").write_bytes("h\xe9llo".encode("latin-1"))
    (ws / "nul.bin").write_bytes(b"a\x00b")
    (ws / "big.txt").write_bytes(b"x" * (TEXT_MAX_BYTES + 1))
    (ws / "limit.txt").write_bytes(b"x" * TEXT_MAX_BYTES)
    assert store.read_text(directory, "ok.md")[0] == "héllo ✓\n"
    assert len(store.read_text(directory, "limit.txt")[0]) == TEXT_MAX_BYTES
    for name, message in [
        ("latin1.txt", "'latin1.txt' is not UTF-8 text (byte 1 is not UTF-8)"),
        ("nul.bin", "'nul.bin' is not text (it holds NUL bytes)"),
        ("big.txt", f"'big.txt' has {TEXT_MAX_BYTES + 1} bytes, more than the {TEXT_MAX_BYTES} of a text to edit"),
    ]:
        with pytest.raises(NotText) as e:
            store.read_text(directory, name)
        assert str(e.value) == message


def test_a_folder_as_a_zip(storage, tmp_path):
    store, directory = storage
    ws = Path(directory)
    (ws / "data" / "sub").mkdir(parents=True)
    (ws / "data" / "a.csv").write_bytes(b"a,b\n" * 100_000)
    (ws / "data" / "sub" / "empty").mkdir()
    (ws / "data" / "in").symlink_to("a.csv")
    (ws / "data" / "up").symlink_to("../data")
    (ws / "data" / "out").symlink_to(tmp_path / "outside" / "secret.txt")
    (ws / "data" / ".uws-upload-0123").write_bytes(b"half")
    os.mkfifo(ws / "data" / "pipe")
    (ws / "data" / "bad-\udcff").write_bytes(b"?")
    with zipfile.ZipFile(io.BytesIO(b"".join(iter(store.open_zip(directory, "data", "ws").read, b"")))) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert sorted(infos) == [
            "data/",
            "data/a.csv",
            "data/bad-\ufffd",
            "data/in",
            "data/sub/",
            "data/sub/empty/",
            "data/up",
        ]
        assert z.read("data/a.csv") == b"a,b\n" * 100_000
        assert z.read("data/in") == b"a.csv" and stat.S_ISLNK(infos["data/in"].external_attr >> 16)
        assert infos["data/a.csv"].compress_size < 100_000
    with zipfile.ZipFile(io.BytesIO(b"".join(iter(store.open_zip(directory, "", "ws").read, b"")))) as z:
        assert z.namelist()[0] == "ws/" and "ws/data/a.csv" in z.namelist()
    with pytest.raises(PathError, match="Not a directory: 'data/a.csv'"):
        store.open_zip(directory, "data/a.csv", "ws")


def test_a_zip_is_made_a_piece_at_a_time(storage):
    """However large the folder, each read of the zip returns a bounded piece and
    the zipping holds little memory: the hub sends one piece before it makes the
    next (measured with tracemalloc: what Python allocates while the zip is read)."""
    store, directory = storage
    (Path(directory) / "big").mkdir()
    size = 24 * 1024 * 1024
    with open(Path(directory) / "big" / "random.bin", "wb") as f:  # incompressible
        f.write(os.urandom(size))
    stream = store.open_zip(directory, "big", "ws")
    pieces = []
    tracemalloc.start()
    try:
        while piece := stream.read():
            pieces.append(len(piece))
            del piece
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        stream.close()
    # a piece: what was made until it reached PIECE_BYTES, plus at most one more step (a chunk of a file)
    assert sum(pieces) > size and max(pieces) <= 2 * PIECE_BYTES + 64 * 1024, (sum(pieces), max(pieces))
    assert peak < 8 * PIECE_BYTES, f"zipping {size} bytes held {peak} bytes at its peak"


def test_a_mount_in_a_workspace_is_not_removed_with_it(storage, tmp_path):
    """An admin may bind a data set into a workspace: removing the workspace (its
    deletion, a deleted user's data with ``deleted_users_data = "remove"``) went into
    the mount and removed the data set, as root. It stops there, saying why."""
    store, directory = storage
    mount = Path(directory) / "data" / "shared"
    mount.mkdir(parents=True)
    (Path(directory) / "mine.txt").write_text("mine")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        (mount / "dataset.csv").write_text("everyone's")
        with pytest.raises(FileConflict, match="holds a mount of another file system \\('shared'\\)"):
            store.remove(directory)
        assert (mount / "dataset.csv").read_text() == "everyone's"
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    store.remove(directory)  # (unmounted: removed)
    assert not os.path.lexists(directory)
