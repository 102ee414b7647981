"""Unit tests of uws-hub's own logic, with no hub: state tables, path safety,
slugs, job type configuration, seed files."""

from __future__ import annotations

import os

import pytest

from uws_hub.errors import Unprocessable
from uws_hub.jobtypes import DEFAULT_JOB_TYPES, parse_job_types, pick
from uws_hub.states import (
    IllegalTransition,
    JobStatus,
    WorkspaceStatus,
    check_job_transition,
    check_workspace_transition,
)
from uws_hub.storage import NotFound, Owner, PathError, WorkspaceStorage
from uws_hub.workspaces import SeedFile, slugify


@pytest.mark.parametrize(
    "old, new",
    [("pending", "queued"), ("queued", "running"), ("running", "stopping"), ("stopping", "completed"),
     ("pending", "failed"), ("queued", "cancelled"), ("running", "failed")],
)
def test_allowed_job_transitions(old, new):
    assert check_job_transition(old, new) == JobStatus(new)


@pytest.mark.parametrize(
    "old, new",
    [("completed", "running"), ("failed", "pending"), ("cancelled", "stopping"), ("running", "queued"),
     ("stopping", "running"), ("running", "pending")],
)
def test_illegal_job_transitions_raise(old, new):
    with pytest.raises(IllegalTransition, match=f"job cannot go from '{old}' to '{new}'"):
        check_job_transition(old, new)


def test_terminal_states_have_no_way_out():
    for status in JobStatus:
        if status.terminal:
            for new in JobStatus:
                with pytest.raises(IllegalTransition):
                    check_job_transition(status, new)


def test_workspace_transitions():
    assert check_workspace_transition("idle", "active") is WorkspaceStatus.active
    assert check_workspace_transition("active", "idle") is WorkspaceStatus.idle
    with pytest.raises(IllegalTransition):
        check_workspace_transition("active", "deleting")
    with pytest.raises(IllegalTransition):
        check_workspace_transition("deleting", "idle")


@pytest.mark.parametrize(
    "name, slug",
    [("My Analysis", "my-analysis"), ("  Émile's   data!! ", "emile-s-data"), ("Ünïcödé", "unicode"), ("x" * 100, "x" * 63),
     ("2026/03 run #4", "2026-03-run-4"), ("a--b", "a-b")],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_slugify_refuses_blank_names(name):
    with pytest.raises(Unprocessable, match="blank"):
        slugify(name)


def test_names_without_latin_letters_get_a_stable_slug():
    assert slugify("日本語") == slugify("日本語 ")
    assert slugify("日本語").startswith("ws-") and slugify("日本語") != slugify("中文")


def test_seed_file_decoding():
    assert SeedFile("a", "aGk=", "base64").data() == b"hi"
    assert SeedFile("a", "héllo").data() == "héllo".encode()
    with pytest.raises(Unprocessable):
        SeedFile("a", "not base64!", "base64").data()


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "root"
    store = WorkspaceStorage(str(root))
    directory = store.directory_for("alice", "ws")
    store.create(directory, Owner())
    (tmp_path / "outside.txt").write_text("outside")
    return store, directory


@pytest.mark.parametrize("relpath", ["..", "../x", "a/../../x", "/etc/passwd", "a\x00b", "./../x"])
def test_resolve_refuses_paths_that_leave(storage, relpath):
    store, directory = storage
    with pytest.raises(PathError):
        store.resolve(directory, relpath)


def test_resolve_follows_symlinks_only_inside(storage, tmp_path):
    store, directory = storage
    os.symlink(tmp_path / "outside.txt", os.path.join(directory, "out"))
    os.symlink("sub", os.path.join(directory, "in"))
    os.mkdir(os.path.join(directory, "sub"))
    with pytest.raises(PathError, match="outside the workspace"):
        store.resolve(directory, "out")
    with pytest.raises(PathError):
        store.open_read(directory, "out")
    assert store.resolve(directory, "in/x") == os.path.join(os.path.realpath(directory), "sub", "x")
    assert store.resolve(directory, "") == os.path.realpath(directory)


def test_upload_is_atomic(storage):
    store, directory = storage
    store.write_file(directory, "f.txt", b"old", Owner())
    upload = store.start_upload(directory, "f.txt", Owner())
    upload.write(b"new half")
    # until commit, the old file is intact and the temporary one is not listed
    assert open(os.path.join(directory, "f.txt"), "rb").read() == b"old"
    assert [e.name for e in store.list_dir(directory, "")] == ["f.txt"]
    upload.abort()
    assert open(os.path.join(directory, "f.txt"), "rb").read() == b"old"
    assert sorted(os.listdir(directory)) == ["f.txt"]
    upload = store.start_upload(directory, "deep/er/g.txt", Owner())
    upload.write(b"data")
    upload.commit()
    assert upload.replaced_bytes == 0
    assert open(os.path.join(directory, "deep", "er", "g.txt"), "rb").read() == b"data"


def test_list_and_usage(storage):
    store, directory = storage
    store.write_file(directory, "a/b.txt", b"12345", Owner())
    store.write_file(directory, "c.txt", b"123", Owner())
    entries = store.list_dir(directory, "")
    assert [(e.name, e.type) for e in entries] == [("a", "directory"), ("c.txt", "file")]
    assert [e.path for e in store.list_dir(directory, "a")] == ["a/b.txt"]
    assert store.usage_bytes(directory) == 8
    with pytest.raises(NotFound):
        store.list_dir(directory, "missing")
    with pytest.raises(PathError, match="Not a directory"):
        store.list_dir(directory, "c.txt")
    with pytest.raises(PathError, match="is a directory"):
        store.open_read(directory, "a")


def test_directory_names_are_checked(storage):
    store, _ = storage
    for owner, slug in [("..", "x"), ("a/b", "x"), ("a", ".."), ("a", "")]:
        with pytest.raises(PathError):
            store.directory_for(owner, slug)


def test_default_job_types_parse():
    types = parse_job_types(DEFAULT_JOB_TYPES, ["local"])
    assert types["jupyterlab"].default_url == "/lab"
    job_type, resource = pick(types, "jupyterlab", None)
    assert resource == "local"


@pytest.mark.parametrize(
    "config, words",
    [
        ({}, "empty"),
        ({"Bad Name": {}}, "Bad Name"),
        ({"x": {"cmd": []}}, "cmd"),
        ({"x": {"resources": ["cloud"]}}, "have no spawner"),
        ({"x": {"colour": "red"}}, "colour"),
        ({"x": "jupyterlab"}, "must be a dict"),
    ],
)
def test_bad_job_types_are_refused_at_start(config, words):
    with pytest.raises(ValueError, match=words):
        parse_job_types(config, ["local"])
