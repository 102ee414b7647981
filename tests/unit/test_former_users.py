"""What a deleted user leaves on disk (uws_hub.workspaces.former): recorded in the deletion's
flush, set aside after its commit, finished at the next start by a hub stopped in between,
forgotten when the deletion rolls back, removed instead when the admins say so. (Through a
real hub: tests/integration/test_identity_over_time.py.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from uws_hub.jobs.service import account_holder
from uws_hub.orm import Job, Workspace
from uws_hub.workspaces.former import DELETED_FOLDER, FormerUsers, Leftovers
from uws_hub.workspaces.storage import WorkspaceStorage

from ..helpers import memory_database


class NoTasks:
    """A hub that stops right after the commit: the set-aside it starts never runs."""

    def spawn(self, coro, name=None):
        coro.close()
        return self

    def add_done_callback(self, callback):
        pass


def batch_job(ws_id: int, owner_id: int, log: Path, launcher_id: int | None = None) -> Job:
    return Job(
        workspace_id=ws_id,
        owner_id=owner_id,
        launcher_id=launcher_id,
        job_type="t",
        resource="local",
        server_name="w",
        interactive=False,
        log_path=str(log),
    )


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "workspaces"
    (root / "ann" / "w").mkdir(parents=True)
    (root / "ann" / "w" / "data.txt").write_text("results")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "job-1.log").write_text("output")
    engine = memory_database()
    db = Session(engine, expire_on_commit=False)
    owner = hub_orm.User(name="ann")
    db.add(owner)
    db.flush()
    ws = Workspace(owner_id=owner.id, name="W", slug="w", directory=str(root / "ann" / "w"), status="idle")
    db.add(ws)
    db.flush()
    db.add(batch_job(ws.id, owner.id, logs / "job-1.log"))
    db.commit()
    yield db, root, logs, owner
    db.close()
    engine.dispose()


def former_users(root: Path, *, remove: bool = False, server_outputs=None) -> FormerUsers:
    return FormerUsers(
        WorkspaceStorage(str(root)),
        lambda job_id, log_path, interactive: log_path,
        account_holder,
        NoTasks(),  # type: ignore[arg-type]
        logging.getLogger("test"),
        remove=remove,
        server_outputs=server_outputs,
    )


def deleted_then_started_again(db: Session, root: Path, user: hub_orm.User) -> Path:
    """Delete ``user`` (the hub stops right after the commit) and start again: their entry."""
    former_users(root).attach(db)
    db.delete(user)
    db.commit()
    former_users(root).finish_pending(db)
    (entry,) = [p for p in (root / DELETED_FOLDER).iterdir() if not p.name.endswith(".pending")]
    return entry


def pending(root: Path) -> list[str]:
    return [p.name for p in (root / DELETED_FOLDER).iterdir() if p.name.endswith(".pending")]


def test_a_hub_stopped_between_the_commit_and_the_move_finishes_it_at_its_start(setup):
    db, root, logs, owner = setup
    former = former_users(root)
    former.attach(db)
    db.delete(owner)
    db.commit()  # (and the hub stops)
    assert db.get(hub_orm.User, owner.id) is None
    assert (root / "ann" / "w").is_dir() and len(pending(root)) == 1
    # the next start
    former_users(root).finish_pending(db)
    assert not (root / "ann" / "w").exists() and not (logs / "job-1.log").exists()
    (entry,) = [p for p in (root / DELETED_FOLDER).iterdir()]
    assert entry.name.startswith(f"{owner.id}-ann-")
    assert (entry / "workspaces" / "w" / "data.txt").read_text() == "results"
    assert (entry / "job-logs" / "job-1.log").read_text() == "output"
    for path in (root / DELETED_FOLDER, entry, entry / "workspaces" / "w"):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700


def test_a_deletion_rolled_back_leaves_everything_and_no_record(setup):
    db, root, logs, owner = setup
    former_users(root).attach(db)
    db.delete(owner)
    db.flush()
    assert len(pending(root)) == 1
    db.rollback()
    assert pending(root) == []
    assert (root / "ann" / "w" / "data.txt").exists() and (logs / "job-1.log").exists()


def test_a_record_of_a_user_still_there_is_dropped_at_the_start(setup):
    """The hub stopped after the record and before the commit: the user is still there."""
    db, root, logs, owner = setup
    former = former_users(root)
    former._record(
        Leftovers(owner.id, "ann", account_holder(owner), "1-ann-x", [("workspaces", str(root / "ann" / "w"))])
    )
    former.finish_pending(db)
    assert pending(root) == [] and (root / "ann" / "w" / "data.txt").exists()


def test_removed_instead_when_the_admins_say_so(setup):
    db, root, logs, owner = setup
    former = former_users(root, remove=True)
    former.attach(db)
    db.delete(owner)
    db.commit()
    former.finish_pending(db)
    assert not (root / "ann").joinpath("w").exists() and not (logs / "job-1.log").exists()
    assert os.listdir(root / DELETED_FOLDER) == []


def test_a_link_planted_for_a_log_is_moved_as_a_link(setup, tmp_path):
    """A job's account may replace its log by a link (its folder is the account's): the
    link is set aside, and what it points at is neither moved, nor given to root."""
    db, root, logs, owner = setup
    outside = tmp_path / "outside.txt"
    outside.write_text("not the user's")
    os.chown(outside, 65534, 65534)
    (logs / "job-1.log").unlink()
    (logs / "job-1.log").symlink_to(outside)
    former = former_users(root)
    former.attach(db)
    db.delete(owner)
    db.commit()
    former.finish_pending(db)
    (entry,) = [p for p in (root / DELETED_FOLDER).iterdir()]
    assert (entry / "job-logs" / "job-1.log").is_symlink()
    assert outside.read_text() == "not the user's" and os.stat(outside).st_uid == 65534


def test_a_log_on_another_file_system_is_copied_aside_and_removed(setup):
    """The job log directory may be on another file system than the workspaces: a log
    there cannot be renamed aside, and is copied (a link or a socket planted there is not)."""
    db, root, logs, owner = setup
    if os.stat("/dev/shm").st_dev == os.stat(root).st_dev:
        pytest.skip("/dev/shm is on the file system of the tests' temporary folders here")
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (elsewhere / "job-1.log").write_text("output")
        (elsewhere / "job-2.log").symlink_to(elsewhere / "job-1.log")
        (elsewhere / "job-3.log").touch()
        sock = plant_socket(elsewhere / "job-3.log")  # (whose open fails: the set-aside did)
        db.execute(update(Job).values(log_path=str(elsewhere / "job-1.log")))
        ws_id = db.scalar(select(Workspace.id))
        db.add(batch_job(ws_id, owner.id, elsewhere / "job-2.log"))
        db.add(batch_job(ws_id, owner.id, elsewhere / "job-3.log"))
        db.commit()
        former = former_users(root)
        former.attach(db)
        db.delete(owner)
        db.commit()
        former.finish_pending(db)
        sock.close()
        assert pending(root) == []
        assert os.listdir(elsewhere) == []
        (entry,) = [p for p in (root / DELETED_FOLDER).iterdir()]
        assert os.listdir(entry / "job-logs") == ["job-1.log"]
        assert (entry / "job-logs" / "job-1.log").read_text() == "output"
    finally:
        shutil.rmtree(elsewhere)


def test_a_log_of_a_large_hole_on_another_file_system_is_copied_as_a_hole(setup):
    """A job makes its log as long as it likes at no cost (truncated to a hole of any
    size); copied aside from another file system, it was written out whole, zeros and
    all, on the disk of the workspaces (everyone's). Its holes stay holes now, its data
    is copied where it is."""
    db, root, logs, owner = setup
    if os.stat("/dev/shm").st_dev == os.stat(root).st_dev:
        pytest.skip("/dev/shm is on the file system of the tests' temporary folders here")
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    hole = 1024**3
    try:
        with open(elsewhere / "job-1.log", "wb") as f:
            f.write(b"start\n")
            f.seek(hole)
            f.write(b"end\n")
        db.execute(update(Job).values(log_path=str(elsewhere / "job-1.log")))
        db.commit()
        entry = deleted_then_started_again(db, root, owner)
        copy = entry / "job-logs" / "job-1.log"
        assert os.stat(copy).st_size == hole + 4 and os.stat(copy).st_blocks * 512 < 1024**2
        with open(copy, "rb") as f:
            assert f.read(6) == b"start\n"
            f.seek(hole)
            assert f.read() == b"end\n"
        assert os.listdir(elsewhere) == []
    finally:
        shutil.rmtree(elsewhere)


@pytest.mark.parametrize("name", ["u" * 230, "学" * 80], ids=["230 letters", "80 Chinese characters"])
def test_a_user_of_a_long_name_is_deleted_and_their_data_set_aside(setup, name):
    """A file's name holds 255 bytes: the record of a user whose name was longer than
    about 220 (``<id>-<name>-<time>.pending``) could not be made, and the deletion failed,
    every time. Their entry shows the first 64 bytes of the name (whole characters)."""
    db, root, logs, owner = setup
    (root / "ann").rename(root / name)
    owner.name = name
    db.execute(update(Workspace).values(directory=str(root / name / "w")))
    db.commit()
    entry = deleted_then_started_again(db, root, owner)
    assert entry.name.startswith(f"{owner.id}-{name[: 64 // len(name[0].encode())]}-")
    assert (entry / "workspaces" / "w" / "data.txt").read_text() == "results"
    assert not (root / name / "w").exists()


def plant_socket(path: Path) -> socket.socket:
    """What a job may leave for its log (its folder is its account's): a Unix socket."""
    path.unlink()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


def test_a_socket_planted_for_a_log_is_set_aside_and_the_rest_too(setup):
    """Opening a socket fails (ENXIO): the set-aside stopped there, the logs after it and
    the record stayed."""
    db, root, logs, owner = setup
    ws_id = db.scalar(select(Workspace.id))
    (logs / "job-2.log").write_text("more output")
    db.add(batch_job(ws_id, owner.id, logs / "job-2.log"))
    db.commit()
    sock = plant_socket(logs / "job-1.log")
    try:
        entry = deleted_then_started_again(db, root, owner)
    finally:
        sock.close()
    assert os.listdir(logs) == [] and pending(root) == []
    assert stat.S_ISSOCK(os.lstat(entry / "job-logs" / "job-1.log").st_mode)
    assert (entry / "job-logs" / "job-2.log").read_text() == "more output"


def test_a_set_aside_that_fails_at_the_start_leaves_its_record_and_the_hub_starts(setup, caplog):
    """A stopped hub finishes the set-asides it left at its next start, before it listens:
    one that failed there (a log on a file system where root may not rename, a socket
    planted for a log on another file system) failed the start, at every start."""
    db, root, logs, owner = setup
    former = former_users(root)
    former._record(Leftovers(owner.id + 1, "gone", "holder", "9-gone-x", [], [str(logs / "job-1.log")]))
    failing = former_users(root)
    failing._move_log = lambda path, into: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
    with caplog.at_level(logging.ERROR):
        failing.finish_pending(db)
    assert pending(root) == ["9-gone-x.pending"]
    assert "Could not set aside what a deleted user left" in caplog.text
    former_users(root).finish_pending(db)  # (once the cause is gone: done)
    assert pending(root) == [] and not (logs / "job-1.log").exists()


def test_logs_of_an_editors_jobs_in_others_workspaces_of_their_account_are_set_aside(setup):
    """An editor's batch job runs as their account, its log (SLURM's) in their account's
    folder, of their uid; the job stays with its workspace when the editor is deleted, and
    its log stayed too, the next account's of that uid. Set aside with the editor's data
    (the hub's own files, another runner's logs, stay: the job's owner still reads them)."""
    db, root, logs, owner = setup
    editor = hub_orm.User(name="ed")
    db.add(editor)
    db.flush()
    ws_id = db.scalar(select(Workspace.id))
    (logs / "job-2.log").write_text("the editor's output")
    os.chown(logs / "job-2.log", 65534, 65534)  # (their account's)
    (logs / "job-3.log").write_text("the hub's file")
    db.add(batch_job(ws_id, owner.id, logs / "job-2.log", launcher_id=editor.id))
    db.add(batch_job(ws_id, owner.id, logs / "job-3.log", launcher_id=editor.id))
    db.commit()
    entry = deleted_then_started_again(db, root, editor)
    assert entry.name.startswith(f"{editor.id}-ed-")
    assert (entry / "job-logs" / "job-2.log").read_text() == "the editor's output"
    assert sorted(os.listdir(logs)) == ["job-1.log", "job-3.log"]
    assert (root / "ann" / "w" / "data.txt").exists()
    assert db.scalar(select(Job.id).where(Job.log_path == str(logs / "job-2.log"))) is not None


def test_a_record_cut_short_by_a_crash_is_never_found_half_written(setup, monkeypatch):
    """The record is made in the deletion's commit: a hub stopped while writing it left an
    empty or cut record, which every later start failed to read (and never set the user's
    data aside). It is written aside and synced first, then linked to its name: a start
    finds a whole record or none, and drops the half-written one."""
    db, root, logs, owner = setup
    former = former_users(root)
    leftovers = Leftovers(owner.id, "ann", account_holder(owner), "1-ann-x", [("workspaces", str(root / "ann" / "w"))])
    real_dump = json.dump

    def cut_short(obj, f):
        real_dump(obj, f)
        f.flush()
        os.ftruncate(f.fileno(), 7)
        raise OSError("the hub stopped")

    monkeypatch.setattr(json, "dump", cut_short)
    with pytest.raises(OSError, match="the hub stopped"):
        former._record(leftovers)
    monkeypatch.undo()
    assert pending(root) == []
    # a record a stopped hub was writing (the unlink after the cut never ran)
    (root / DELETED_FOLDER / ".2-ann-y.pending.writing").write_text('{"user_id": ')
    former_users(root).finish_pending(db)
    assert os.listdir(root / DELETED_FOLDER) == []
    assert (root / "ann" / "w" / "data.txt").read_text() == "results"


def test_a_record_is_synced_before_the_commit_and_never_replaces_another(setup, monkeypatch):
    db, root, logs, owner = setup
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    former = former_users(root)
    leftovers = Leftovers(owner.id, "ann", account_holder(owner), "1-ann-x", [("workspaces", str(root / "ann" / "w"))])
    former._record(leftovers)
    record = root / DELETED_FOLDER / "1-ann-x.pending"
    # the record's content (written under the name it is linked from), then the folder
    assert synced == [str(root / DELETED_FOLDER / ".1-ann-x.pending.writing"), str(root / DELETED_FOLDER)]
    written = record.read_text()
    assert json.loads(written)["entry"] == "1-ann-x"
    with pytest.raises(FileExistsError):
        former._record(Leftovers(owner.id, "ann", "someone else", "1-ann-x"))
    assert record.read_text() == written
    assert sorted(os.listdir(root / DELETED_FOLDER)) == ["1-ann-x.pending"]


@pytest.mark.parametrize("whose", ["owned", "launched"])
def test_a_log_folder_swapped_for_a_link_gives_the_set_aside_nothing_of_where_it_points(setup, tmp_path, whose):
    """A SLURM job's log folder is its account's: the set-aside renamed each log by its
    path, so a link put in the folder's place had it take the file of that name wherever
    the link pointed (another account's output). Renamed in the folder opened as it is:
    a folder that is a link (not root's, an admin's) is passed over, and what it points at stays."""
    db, root, logs, owner = setup
    deleted, name = owner, "job-1.log"
    if whose == "launched":  # an editor's job in ann's workspace, its log their account's (SLURM's)
        deleted, name = hub_orm.User(name="ed"), "job-2.log"
        db.add(deleted)
        db.flush()
        db.add(batch_job(db.scalar(select(Workspace.id)), owner.id, logs / name, launcher_id=deleted.id))
        db.commit()
    others = tmp_path / "another-account"
    others.mkdir()
    (others / name).write_text("someone else's output")
    os.chown(others / name, 65534, 65534)
    shutil.rmtree(logs)
    logs.symlink_to(others)
    os.lchown(logs, 65534, 65534)  # (the account's)
    former_users(root).attach(db)
    db.delete(deleted)
    db.commit()
    former_users(root).finish_pending(db)
    assert (others / name).read_text() == "someone else's output"
    assert os.stat(others / name).st_uid == 65534
    assert not list((root / DELETED_FOLDER).glob("*/job-logs")) and pending(root) == []


def test_a_log_folder_that_is_a_link_of_roots_is_followed(setup, tmp_path):
    """A ``job_log_dir`` that is a link (an admin's, root's): its logs are set aside as before."""
    db, root, logs, owner = setup
    real = tmp_path / "real-logs"
    logs.rename(real)
    logs.symlink_to(real)
    entry = deleted_then_started_again(db, root, owner)
    assert (entry / "job-logs" / "job-1.log").read_text() == "output"
    assert os.listdir(real) == []


def test_a_link_of_roots_in_a_folder_an_account_may_write_in_is_not_followed(setup, tmp_path):
    """A link of root's is an admin's only in a folder no one else may write in: one in an
    account's folder (a link the hub made for them, moved there before the hub gave it to
    them) had the set-aside take the file of the log's name wherever it pointed."""
    db, root, logs, owner = setup
    others = tmp_path / "another-account"
    others.mkdir()
    (others / "job-1.log").write_text("someone else's output")
    shutil.rmtree(logs)
    logs.symlink_to(others)  # (root's)
    os.chown(tmp_path, 65534, 65534)  # the folder it is in: an account's
    try:
        deleted_then_started_again(db, root, owner)
    finally:
        os.chown(tmp_path, 0, 0)
    assert (others / "job-1.log").read_text() == "someone else's output"


@pytest.mark.parametrize("swapped", [False, True])
def test_an_admins_log_link_into_an_accounts_folder_follows_no_link_of_the_account(setup, tmp_path, swapped):
    """A ``job_log_dir`` that is an admin's link (root's, in a folder of root's) to a folder
    in an account's (``/var/lib/x -> /home/alice/dir``): the set-aside resolved it with
    ``realpath``, which followed every link on the way too, so the account, swapping
    ``dir`` for a link of hers, had it take the file of the log's name wherever that
    pointed. Now only the admin's link is followed; alice's is refused, and what it
    points at stays. Her folder as it was (no link) is set aside as before."""
    db, root, logs, owner = setup
    alice = tmp_path / "alice"
    (alice / "dir").mkdir(parents=True)
    (alice / "dir" / "job-1.log").write_text("output")
    os.chown(alice, 65534, 65534)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "job-1.log").write_text("someone else's output")
    shutil.rmtree(logs)
    logs.symlink_to(alice / "dir")  # (the admin's: root's, in a folder of root's)
    if swapped:
        (alice / "dir").rename(alice / "was-dir")
        (alice / "dir").symlink_to(elsewhere)
        os.lchown(alice / "dir", 65534, 65534)
    former_users(root).attach(db)
    db.delete(owner)
    db.commit()
    former_users(root).finish_pending(db)
    assert (elsewhere / "job-1.log").read_text() == "someone else's output"
    moved = list((root / DELETED_FOLDER).glob("*/job-logs/job-1.log"))
    if swapped:
        assert moved == [] and (alice / "was-dir" / "job-1.log").read_text() == "output"
    else:
        assert [p.read_text() for p in moved] == ["output"] and not (alice / "dir" / "job-1.log").exists()
    assert pending(root) == []


def test_the_output_files_of_their_slurm_servers_are_set_aside_too(setup, tmp_path):
    """A server on SLURM has SLURM write its output to a file of its account's folder
    (``job-<id>-<SLURM id>.log``, ``WorkspaceSlurmSpawner.output_dir``); the hub keeps its
    tail in its own log file of the job, which was set aside at its user's deletion, but
    the file itself stayed, of their uid, with the servers' secrets in it: the next
    account given the uid (``useradd`` gives the one just freed) read it. It is set aside
    with the rest; another user's server's output stays."""
    db, root, logs, owner = setup
    folder = logs / "slurm" / "nobody"
    folder.mkdir(parents=True)
    for name in ("job-5-17.log", "job-6-18.log"):
        (folder / name).write_text(f"{name}: the server's token")
        os.chown(folder / name, 65534, 65534)
    os.chown(folder, 65534, 65534)
    ws_id = db.scalar(select(Workspace.id))
    other = hub_orm.User(name="bo")
    db.add(other)
    db.flush()
    for job_id, owner_id in ((5, owner.id), (6, other.id)):
        db.add(
            Job(
                id=job_id,
                workspace_id=ws_id,
                owner_id=owner_id,
                job_type="lab",
                resource="slurm",
                server_name=f"w{job_id}",
                interactive=True,
                resource_id=str(12 + job_id),
                resource_uid=65534,
                status="completed",
            )
        )
    db.commit()

    def server_output(job: Job, workspace: str) -> str:
        assert workspace == str(root / "ann" / "w")
        return str(folder / f"job-{job.id}-{job.resource_id}.log")

    former_users(root, server_outputs=server_output).attach(db)
    db.delete(owner)
    db.commit()
    former_users(root).finish_pending(db)
    (entry,) = [p for p in (root / DELETED_FOLDER).iterdir() if not p.name.endswith(".pending")]
    moved = entry / "job-logs" / "job-5-17.log"
    assert moved.read_text() == "job-5-17.log: the server's token"
    assert (os.stat(moved).st_uid, os.stat(moved).st_mode & 0o777) == (0, 0o600)
    assert os.listdir(folder) == ["job-6-18.log"]


@pytest.mark.parametrize("name", ["..", "."])
def test_a_user_named_dot_dot_leaves_the_folders_beside_the_workspaces_root_in_place(tmp_path, name):
    """The HOME of a deleted user's jobs of the hub's account was taken to be
    ``<workspaces root>/<name>/.home``: for a user named ``..`` (a name JupyterHub takes,
    from an identity provider or an admin) that is ``.home`` beside the workspaces
    root, which was moved aside, root's only, at their deletion. No workspace owner's
    name starts with a dot (``WorkspaceStorage.directory_for``): there is none of theirs."""
    root = tmp_path / "workspaces"
    root.mkdir()
    (tmp_path / ".home").mkdir()
    (tmp_path / ".home" / "notes").write_text("an admin's")
    (root / ".home").mkdir()
    engine = memory_database()
    db = Session(engine, expire_on_commit=False)
    try:
        user = hub_orm.User(name=name)
        db.add(user)
        db.commit()
        former_users(root).attach(db)
        db.delete(user)
        db.commit()
        former_users(root).finish_pending(db)
    finally:
        db.close()
        engine.dispose()
    assert (tmp_path / ".home" / "notes").read_text() == "an admin's"
    assert (root / ".home").is_dir()
    assert not list((root / DELETED_FOLDER).glob("*/home"))
