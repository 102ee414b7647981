"""The HuBMAP-compatible API's translation, without a hub: statuses, dates, jobs,
workspaces, shares, resource options, parameters and requests, as HuBMAP's
server writes and reads them (its ``models.py``, ``views/``, ``validation/``)
and as its portal parses them (``statusCodes.ts``, ``utils.ts``)."""

from __future__ import annotations

import os
from datetime import datetime

import pytest

from uws_hub.orm import Job, Workspace
from uws_hub.protocols.hubmap import models
from uws_hub.protocols.hubmap.config import DEFAULT_RESOURCE_OPTIONS, HubMAPCompat
from uws_hub.protocols.hubmap.models import HubMAPError, JobFacts
from uws_hub.states import JobStatus, WorkspaceStatus
from uws_hub.workspaces.paths import NotFound as StorageNotFound
from uws_hub.workspaces.paths import Owner, PathError

#: the portal's sets (portal-ui context/app/static/js/components/workspaces/statusCodes.ts)
PORTAL_JOB_STATUSES = {"pending", "running", "stopping", "complete", "failed"}
PORTAL_WORKSPACE_STATUSES = {"active", "idle", "initializing", "deleting", "error"}

T0 = datetime(2026, 1, 12, 16, 37, 47, 123456)
T1 = datetime(2026, 1, 12, 17, 37, 47, 123456)


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_job_status_is_one_the_portal_accepts(status):
    assert models.job_status(status.value) in PORTAL_JOB_STATUSES
    assert set(models.JOB_STATUSES) == PORTAL_JOB_STATUSES


@pytest.mark.parametrize("status", list(WorkspaceStatus))
def test_every_workspace_status_is_one_the_portal_accepts(status):
    assert models.workspace_status(status.value) in PORTAL_WORKSPACE_STATUSES
    assert set(models.WORKSPACE_STATUSES) == PORTAL_WORKSPACE_STATUSES


def test_job_status_mapping_and_filters():
    assert [models.job_status(s) for s in ("pending", "queued", "running", "stopping")] == [
        "pending",
        "pending",
        "running",
        "stopping",
    ]
    assert [models.job_status(s) for s in ("completed", "cancelled", "failed")] == ["complete", "complete", "failed"]
    assert models.uws_job_statuses("complete") == ["cancelled", "completed"]
    assert models.uws_job_statuses("pending") == ["pending", "queued"]
    assert models.uws_job_statuses("queued") == []


def test_dates_as_hubmap_writes_them():
    assert models.iso_millis(T0) == "2026-01-12T16:37:47.123Z"
    assert models.iso_micros(T0) == "2026-01-12T16:37:47.123456Z"
    assert models.iso_millis(None) is None


def test_envelopes_and_lists():
    assert models.success("Successful.", jobs=[]) == {"message": "Successful.", "success": True, "data": {"jobs": []}}
    assert list(models.success("Update successful.")) == ["message", "success"]
    assert models.listing("jobs", [], "Job") == {
        "message": "Job matching given parameters could not be found.",
        "success": True,
        "data": {"jobs": []},
    }
    found = models.listing("original_workspaces", [], "Shared workspace", shared_workspaces=[{"x": 1}])
    assert found["message"] == "Successful."
    assert models.failure("no") == {"success": False, "message": "no"}


def facts(**kw):
    base = dict(
        job_type_id="jupyter_lab",
        url=None,
        url_domain="https://hub.example.org",
        resource_options={"num_cpus": 2},
        time_limit_seconds=0,
        cpus=2,
        now=T1,
    )
    base.update(kw)
    return JobFacts(**base)


def make_job(**kw):
    job = Job(
        id=7,
        workspace_id=3,
        job_type="jupyterlab",
        status="pending",
        resource_id=None,
        reason=None,
        created_at=T0,
        running_at=None,
        finished_at=None,
        resources={"cpus": 2},
    )
    for k, v in kw.items():
        setattr(job, k, v)
    return job


def test_job_model_fields_in_hubmap_order():
    model = models.job_model(make_job(), facts())
    assert list(model) == [
        "id",
        "workspace_id",
        "resource_job_id",
        "job_type",
        "status",
        "datetime_created",
        "datetime_start",
        "datetime_end",
        "core_hours",
        "job_details",
    ]
    assert model["resource_job_id"] == -1
    assert model["job_type"] == "jupyter_lab"
    assert model["core_hours"] == "0.00000"
    assert model["job_details"] == {
        "metrics": {},
        "request_job_details": {"resource_options": {"num_cpus": 2}},
        "current_job_details": {"message": "Webserver not ready."},
    }


def test_connection_details_only_once_the_server_answers():
    queued = models.job_model(make_job(status="queued", resource_id="4242", reason="Priority"), facts())
    assert queued["status"] == "pending" and queued["resource_job_id"] == 4242
    assert queued["job_details"]["current_job_details"] == {"message": "Priority"}
    running = models.job_model(
        make_job(status="running", resource_id="4242", running_at=T0),
        facts(url="/user/alice/ws/lab", time_limit_seconds=3 * 3600),
    )
    details = running["job_details"]["current_job_details"]
    assert details["connection_details"] == {"url_domain": "https://hub.example.org", "url_path": "/user/alice/ws/lab"}
    assert details["message"] == "Webserver ready."
    assert details["time_left"] == 2 * 3600
    # two cpus for one hour
    assert running["core_hours"] == "2.00000"
    assert running["datetime_start"] == "2026-01-12T16:37:47.123Z"
    # the portal opens url_domain + url_path, with /tree/<notebook> after the path
    url = details["connection_details"]["url_domain"] + details["connection_details"]["url_path"]
    assert url.split("?")[0] + "/tree/a.ipynb" == "https://hub.example.org/user/alice/ws/lab/tree/a.ipynb"


def test_finished_jobs_keep_their_reason_and_end():
    done = models.job_model(
        make_job(status="cancelled", running_at=T0, finished_at=T1, reason="Stopped on request"), facts(now=T1)
    )
    assert done["status"] == "complete"
    assert done["datetime_end"] == "2026-01-12T17:37:47.123Z"
    assert done["job_details"]["current_job_details"] == {"message": "Stopped on request"}
    assert "connection_details" not in done["job_details"]["current_job_details"]


def test_workspace_model_and_current_details():
    ws = Workspace(
        id=3, name="My ws", description="d", disk_usage_bytes=1234, created_at=T0, updated_at=T1, status="active"
    )
    entries = [
        ("a.ipynb", "file"),
        ("datasets", "directory"),
        ("datasets/abc", "symlink"),
        (".ipynb_checkpoints/a.ipynb", "file"),
        (".hidden", "file"),
        ("sub/b.txt", "file"),
    ]
    model = models.workspace_model(
        ws, default_job_type="jupyter_lab", request_details=None, entries=entries, last_launch=T1
    )
    assert list(model) == [
        "id",
        "name",
        "description",
        "disk_space",
        "datetime_created",
        "datetime_last_modified",
        "datetime_last_job_launch",
        "workspace_details",
        "status",
        "default_job_type",
    ]
    assert model["workspace_details"] == {
        "request_workspace_details": {"files": [], "symlinks": []},
        "current_workspace_details": {
            "files": [{"name": "/a.ipynb"}, {"name": "/sub/b.txt"}],
            "symlinks": [{"name": "/datasets/abc"}],
        },
    }
    assert model["disk_space"] == 1234 and model["status"] == "active"
    assert model["datetime_last_job_launch"] == "2026-01-12T17:37:47.123Z"


def test_users_and_shares():
    assert models.user_model(5, "bob", "Bob van Dijk", "") == {
        "id": 5,
        "first_name": "Bob",
        "last_name": "van Dijk",
        "username": "bob",
        "email": "",
    }
    ref = models.user_ref("alice", "alice", "a@x.org")
    assert ref == {"username": "alice", "first_name": "alice", "last_name": "", "email": "a@x.org"}
    nested = models.shared_workspace(-4, "ws", "d", {"files": []}, ref)
    share = models.share_model(
        original=None, shared=nested, last_resource_options={}, last_job_type="", is_accepted=False, created_at=T0
    )
    assert list(share) == [
        "original_workspace_id",
        "shared_workspace_id",
        "last_resource_options",
        "last_job_type",
        "is_accepted",
        "datetime_share_created",
    ]
    assert share["datetime_share_created"] == "2026-01-12T16:37:47.123456Z"
    assert list(nested) == ["id", "name", "description", "workspace_details", "user_id"]
    assert models.parse_bool("True", "is_accepted") is True and models.parse_bool("0", "x") is False
    with pytest.raises(HubMAPError):
        models.parse_bool("maybe", "is_accepted")


def test_resource_options_to_resources_and_back():
    mapping = dict(DEFAULT_RESOURCE_OPTIONS)
    portal = {"num_cpus": 2, "memory_mb": 8192, "time_limit_minutes": 180, "gpu_enabled": False, "colour": "red"}
    resources, errors = models.translate_options(portal, mapping)
    assert errors == []
    # unknown options are ignored, as HuBMAP's server ignores them
    assert resources == {"cpus": 2, "memory": "8192M", "time_limit": "180", "gpus": 0}
    assert models.options_of(resources, mapping) == {
        "num_cpus": 2,
        "memory_mb": 8192,
        "time_limit_minutes": 180,
        "gpu_enabled": False,
    }
    # HuBMAP's example configuration's name for the time limit works too
    assert models.translate_options({"time_limit_min": 30}, mapping)[0] == {"time_limit": "30"}
    assert models.options_of({"memory": "2G", "time_limit": "1:30:00"}, mapping) == {
        "memory_mb": 2048,
        "time_limit_minutes": 90,
    }


def test_wrong_option_types_get_hubmaps_messages():
    _, errors = models.translate_options(
        {"num_cpus": "2", "gpu_enabled": 1, "memory_mb": True}, dict(DEFAULT_RESOURCE_OPTIONS)
    )
    assert errors == [
        "num_cpus: Value '2' of type str does not match required type int. Skipping further validation of"
        " parameter num_cpus.",
        "gpu_enabled: Value '1' of type int does not match required type bool. Skipping further validation of"
        " parameter gpu_enabled.",
        "memory_mb: Value 'True' of type bool does not match required type int. Skipping further validation of"
        " parameter memory_mb.",
    ]
    error = models.invalid_options(errors[:1])
    assert error.status_code == 422
    assert error.message == f"Invalid resource options found: {errors[:1]!r}"


def test_parameters_from_a_job_types_limits_and_defaults():
    params = models.parameters(
        dict(DEFAULT_RESOURCE_OPTIONS),
        {"cpus": 4, "memory": "8G", "gpus": None, "time_limit": "8:00:00", "partitions": None},
        {"cpus": 1, "memory": "1G", "gpus": None, "time_limit": "180", "partition": None},
    )
    by_name = {p["variable_name"]: p for p in params}
    assert set(by_name) == {"num_cpus", "memory_mb", "time_limit_minutes", "gpu_enabled"}
    assert by_name["num_cpus"]["validation"] == {"type": "int", "min": 1, "max": 4, "required": False}
    assert by_name["num_cpus"]["default_value"] == 1
    assert by_name["memory_mb"]["validation"]["max"] == 8192 and by_name["memory_mb"]["default_value"] == 1024
    assert by_name["time_limit_minutes"]["validation"]["max"] == 480
    assert by_name["gpu_enabled"]["validation"] == {"type": "bool", "required": False}


def test_job_type_ids():
    names = {"jupyterlab": "JupyterLab", "vscode": "VS Code"}
    offered = models.job_type_ids({"jupyter_lab": "jupyterlab", "gone": "nothing"}, names)
    assert offered == {"jupyter_lab": "jupyterlab", "vscode": "vscode"}
    assert models.job_type_id_of("jupyterlab", offered) == "jupyter_lab"
    assert models.job_types_model(offered, names) == {
        "jupyter_lab": {"id": "jupyter_lab", "name": "JupyterLab"},
        "vscode": {"id": "vscode", "name": "VS Code"},
    }


def test_workspace_details_as_the_portal_sends_them():
    details = models.parse_workspace_details(
        {
            "globus_groups_token": "g",
            "files": [{"name": "blank.ipynb", "content": "{}"}, {"name": "/sub/x.py"}],
            "symlinks": [{"name": "datasets/u1", "dataset_uuid": "u1"}, {"name": "/ref", "source_path": "/data/ref"}],
        }
    )
    assert [(f.path, f.content) for f in details.files] == [("blank.ipynb", "{}"), ("sub/x.py", "")]
    assert [(s.path, s.source_path, s.dataset_uuid) for s in details.symlinks] == [
        ("datasets/u1", None, "u1"),
        ("ref", "/data/ref", None),
    ]
    # the request remembers names and links as sent, never contents or the Globus token
    assert details.request_model() == {
        "files": [{"name": "blank.ipynb"}, {"name": "sub/x.py"}],
        "symlinks": [{"name": "datasets/u1", "dataset_uuid": "u1"}, {"name": "/ref", "source_path": "/data/ref"}],
    }


@pytest.mark.parametrize(
    "details, message",
    [
        ([], "Workspace details not JSON."),
        ({"symlinks": {}}, "'symlinks' index must contain a list."),
        ({"files": "a"}, "'files' index must contain a list."),
        ({"files": [{"name": "../x"}]}, "File name cannot contain double dots."),
        ({"symlinks": [{"name": "a/../b", "source_path": "/d"}]}, "Symlink name cannot contain double dots."),
        (
            {"symlinks": [{"name": "d", "dataset_uuid": "u"}]},
            "No globus_groups_token passed when trying to use dataset_uuid.",
        ),
        ({"symlinks": [{"name": "d"}]}, "Symlink d needs a source_path or a dataset_uuid."),
        ({"files": [{"name": "a", "content": 3}]}, "File content must be a string: a"),
        ({"files": [{"name": "/"}]}, "Invalid file path specified '/'"),
    ],
)
def test_workspace_details_refused_with_hubmaps_messages(details, message):
    with pytest.raises(HubMAPError) as e:
        models.parse_workspace_details(details)
    assert e.value.status_code == 400 and e.value.message == message


def test_start_requests():
    assert models.parse_start(
        {"job_type": "jupyter_lab", "job_details": {}, "resource_options": {"num_cpus": 1}}, None
    ) == ("jupyter_lab", {"num_cpus": 1})
    assert models.parse_start({}, "jupyter_lab") == ("jupyter_lab", {})
    for body, message in [
        ({}, "Missing job_type and no default job type set on workspace."),
        ({"job_type": "x", "job_details": []}, "Job details not JSON."),
        ({"job_type": "x", "resource_options": 1}, "Resource options not JSON."),
    ]:
        with pytest.raises(HubMAPError) as e:
            models.parse_start(body, None)
        assert e.value.message == message


def test_options_validated():
    with pytest.raises(Exception, match="unknown resources"):
        HubMAPCompat(resource_options={"num_cpus": "cores"})
    with pytest.raises(Exception, match="base_path"):
        HubMAPCompat(base_path="/../x")
    assert HubMAPCompat(base_path="/api/hubmap/").base_path == "api/hubmap"


# ---------------------------------------------------------------- dataset links and the walk (uws_hub.storage)
@pytest.fixture
def linked(storage, tmp_path):
    """A workspace (test_storage_units's, with tmp_path/outside beside it) and a dataset root."""
    store, directory = storage
    datasets = tmp_path / "datasets"
    (datasets / "d1").mkdir(parents=True)
    (datasets / "d1" / "x.csv").write_text("x")
    # a link inside the dataset root that leads out of it
    (datasets / "sneaky").symlink_to(tmp_path / "outside")
    return store, directory, datasets, tmp_path


def test_links_only_into_dataset_roots(linked):
    store, directory, datasets, tmp = linked
    store.create_symlink(directory, "datasets/d1", str(datasets / "d1"), Owner(), [str(datasets)])
    assert os.readlink(os.path.join(directory, "datasets", "d1")) == str(datasets / "d1")
    # again, the same: fine; something else there: refused
    store.create_symlink(directory, "datasets/d1", str(datasets / "d1"), Owner(), [str(datasets)])
    with pytest.raises(PathError, match="Something else exists"):
        store.create_symlink(directory, "datasets/d1", str(datasets / "d1" / "x.csv"), Owner(), [str(datasets)])
    for target in (
        str(tmp / "outside"),
        str(datasets / "sneaky"),
        str(datasets / ".." / "outside"),
        "relative/path",
        "/etc/passwd",
        str(tmp / "root"),
    ):
        with pytest.raises(PathError):
            store.create_symlink(directory, "bad", target, Owner(), [str(datasets)])
    with pytest.raises(PathError):  # no roots, no links
        store.create_symlink(directory, "bad", str(datasets / "d1"), Owner(), [])
    with pytest.raises(StorageNotFound, match="Symlink path not found"):
        store.link_target(str(datasets / "missing"), [str(datasets)])
    for relpath in ("../escape", ".uws-upload-x", "/abs"):
        with pytest.raises(PathError):
            store.create_symlink(directory, relpath, str(datasets / "d1"), Owner(), [str(datasets)])
    assert not os.path.lexists(os.path.join(directory, "bad"))


def test_the_walk_lists_links_without_following_them(linked):
    store, directory, datasets, tmp = linked
    store.create_symlink(directory, "datasets/d1", str(datasets / "d1"), Owner(), [str(datasets)])
    store.write_file(directory, "a.ipynb", b"{}", Owner())
    store.write_file(directory, "sub/deeper/b.txt", b"b", Owner())
    store.write_file(directory, ".hidden/c.txt", b"c", Owner())
    os.symlink(str(tmp / "outside"), os.path.join(directory, "escape"))
    entries = store.walk(directory, 100)
    assert entries == [
        (".hidden", "directory"),
        (".hidden/c.txt", "file"),
        ("a.ipynb", "file"),
        ("datasets", "directory"),
        ("datasets/d1", "symlink"),
        ("escape", "symlink"),
        ("sub", "directory"),
        ("sub/deeper", "directory"),
        ("sub/deeper/b.txt", "file"),
    ]
    assert (".hidden", "directory") not in store.walk(directory, 100, hidden=False)
    assert len(store.walk(directory, 3)) == 3
