"""Units of sharing and quotas that need no hub: the usage scan, the safe copy,
the POSIX default ACL's encoding, quota periods, limits and messages, the job
servers' environment and the OAuth client scopes."""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from uws_hub.jobs.limits import memory_bytes
from uws_hub.jobs.servers import FOREIGN_SERVER_TOKEN_SCOPES, add_client_scopes, set_server_token_scopes
from uws_hub.quotas import limits as quota_limits
from uws_hub.quotas.limits import limit_words
from uws_hub.quotas.service import Limits, fmt_bytes, fmt_hours, period_start
from uws_hub.scopes import READ_WORKSPACES, WRITE_SERVERS, taken_by_hub
from uws_hub.serverconfig import CONFIG_DIR, QUIET_DIR, job_env
from uws_hub.sharing.posixgroups import default_acl, ended, kill_strays, share_tree
from uws_hub.spawners import wrapper
from uws_hub.workspaces.copying import CopyTooLarge, copy_tree
from uws_hub.workspaces.paths import Owner
from uws_hub.workspaces.storage import WorkspaceStorage

from ..helpers import GHOST
from ..hubutil import wait_for


def make_tree(top: Path) -> int:
    total = 0
    for i in range(30):
        d = top / f"a{i % 3}" / f"b{i}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(i):
            (d / f"f{j}").write_bytes(b"x" * j)
            total += j
    (top / "a0" / "link").symlink_to("b0")
    total += len("b0")
    return total


@pytest.mark.parametrize("helper_after", [None, 0.0], ids=["alone", "helper"])
def test_usage_scan_counts_files_and_links_not_directories(tmp_path, helper_after):
    total = make_tree(tmp_path)
    assert WorkspaceStorage.usage_bytes(str(tmp_path), helper_after=helper_after) == total
    (tmp_path / "empty").mkdir()
    assert WorkspaceStorage.usage_bytes(str(tmp_path / "empty"), helper_after=helper_after) == 0
    with pytest.raises(FileNotFoundError):
        WorkspaceStorage.usage_bytes(str(tmp_path / "missing"), helper_after=helper_after)


def test_copy_keeps_files_and_inside_links_only(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.txt").write_text("data")
    os.chmod(src / "sub" / "data.txt", 0o4750)  # setuid is dropped
    os.utime(src / "sub" / "data.txt", (1_000_000, 1_000_000))
    (src / "inside").symlink_to("sub/data.txt")
    (src / "sub" / "up-inside").symlink_to("../sub/data.txt")
    (src / "abs").symlink_to("/etc/passwd")
    (src / "sub" / "escape").symlink_to("../../outside")
    os.mkfifo(src / "fifo")
    result = copy_tree(str(src), str(tmp_path / "dst"), Owner())
    dst = tmp_path / "dst"
    assert (dst / "sub" / "data.txt").read_text() == "data"
    assert stat.S_IMODE(os.stat(dst / "sub" / "data.txt").st_mode) == 0o750
    assert os.stat(dst / "sub" / "data.txt").st_mtime == 1_000_000
    assert os.readlink(dst / "inside") == "sub/data.txt"
    assert os.readlink(dst / "sub" / "up-inside") == "../sub/data.txt"
    assert not os.path.lexists(dst / "abs") and not os.path.lexists(dst / "sub" / "escape")
    assert not os.path.lexists(dst / "fifo")
    assert (result.files, result.links, result.skipped, result.bytes) == (1, 2, 3, 4)


def test_copy_decides_links_by_resolving_them_not_by_their_text(tmp_path):
    src = tmp_path / "root" / "alice" / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.txt").write_text("data")
    (tmp_path / "root" / "bob" / "ws").mkdir(parents=True)
    (src / "l1").symlink_to(".")
    # lexically 'root/bob/ws' (inside); resolved, three levels above the tree
    (src / "chain").symlink_to("l1/l1/l1/../../../root/bob/ws")
    (src / "through").symlink_to("chain/x")
    (src / "sub" / "via-l1").symlink_to("../l1/l1/sub/data.txt")
    (src / "sub" / "dangling").symlink_to("not-yet.txt")
    (src / "sub" / "missing-dir").symlink_to("nowhere/../data.txt")
    (src / "loop").symlink_to("loop")
    (src / ".uws-upload-0123456789abcdef").write_text("an upload under way")
    result = copy_tree(str(src), str(tmp_path / "dst"), Owner())
    dst = tmp_path / "dst"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == [
        "l1",
        "sub",
        "sub/dangling",
        "sub/data.txt",
        "sub/via-l1",
    ]
    assert (dst / "sub" / "via-l1").read_text() == "data"
    # chain, through, missing-dir and loop are left out and counted (the upload temporary is not content)
    assert (result.files, result.links, result.skipped, result.bytes) == (1, 3, 4, 4)


def test_copy_stops_at_its_limit(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"x" * 10)
    (tmp_path / "src" / "b").write_bytes(b"x" * 10)
    with pytest.raises(CopyTooLarge):
        copy_tree(str(tmp_path / "src"), str(tmp_path / "dst"), Owner(), limit_bytes=15)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a tree to a group needs root, as the hub does")
def test_group_sharing_a_tree_never_follows_a_link_swapped_in(tmp_path):
    """The owner's job swaps a file and a directory for links to outside while the hub
    (root) hands the tree to the workspace's group: nothing outside changes."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "kept.txt").write_text("kept")
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.chmod(outside / "secret.txt", 0o600)
    before = {p: os.lstat(p) for p in (outside, outside / "secret.txt")}
    stop = threading.Event()

    def swap():
        real_file, real_dir = ws / "real-file", ws / "real-dir"
        link_file, link_dir = ws / "link-file", ws / "link-dir"
        real_file.write_text("mine")
        os.chmod(real_file, 0o666)
        real_dir.mkdir()
        link_file.symlink_to(outside / "secret.txt")
        link_dir.symlink_to(outside)
        while not stop.is_set():
            for src, at in (
                (real_file, "race-file"),
                (link_file, "race-file"),
                (real_dir, "race-dir"),
                (link_dir, "race-dir"),
            ):
                os.rename(src, ws / at)
                os.rename(ws / at, src)

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    rounds = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            share_tree(str(ws), 4242, logging.getLogger("test"))
            rounds += 1
    finally:
        stop.set()
        thread.join(10)
    assert rounds > 10
    for path, st in before.items():
        now = os.lstat(path)
        assert (now.st_mode, now.st_gid) == (st.st_mode, st.st_gid), path
    assert os.lstat(ws / "sub" / "kept.txt").st_gid == 4242
    assert os.lstat(ws / "sub").st_mode & 0o2070 == 0o2070
    shutil.rmtree(ws)


def test_default_acl_encoding():
    acl = default_acl(1234)
    (version,) = struct.unpack_from("<I", acl)
    entries = [struct.unpack_from("<HHI", acl, 4 + 8 * i) for i in range(5)]
    assert version == 2 and len(acl) == 4 + 8 * 5
    # sorted by tag: user::rwx user:1234:rwx group::rwx mask::rwx other::---
    assert entries == [(1, 7, 2**32 - 1), (2, 7, 1234), (4, 7, 2**32 - 1), (0x10, 7, 2**32 - 1), (0x20, 0, 2**32 - 1)]


@pytest.mark.skipif(os.geteuid() != 0, reason="starting processes as another account with groups takes root")
def test_kill_strays_kills_who_holds_a_group_unallowed_and_no_one_else():
    """A process of an account no longer in a workspace's group still holds it (its write
    access): killed, as a supplementary group or its own; one of an allowed account, one
    holding another group, and root's live on."""
    nobody = pwd.getpwnam("nobody").pw_uid
    gone, kept, other = 4242421, 4242422, 4242423  # group ids no group has here

    def sleeper(**kw) -> subprocess.Popen:
        return subprocess.Popen(["sleep", "60"], **kw)

    # its first thread gone (a zombie to /proc/<pid>/status), its second holds the group on
    ghost = subprocess.Popen(["/usr/bin/python3", "-c", GHOST], user=nobody, extra_groups=[gone])
    strays = [sleeper(user=nobody, extra_groups=[gone]), sleeper(user=nobody, group=gone, extra_groups=[]), ghost]
    spared = [
        sleeper(user=nobody, extra_groups=[kept]),
        sleeper(user=nobody, extra_groups=[other]),
        sleeper(extra_groups=[gone]),
    ]
    try:
        wait_for(lambda: open(f"/proc/{ghost.pid}/status").read().count("zombie"), 30, what="the first thread's end")
        assert kill_strays({gone: set(), kept: {nobody}}) == 3
        assert [p.wait(timeout=30) for p in strays] == [-9, -9, -9]
        assert [p.poll() for p in spared] == [None, None, None]
    finally:
        for p in strays + spared:
            p.kill()
            p.wait()


def test_the_stray_kill_and_the_job_wrapper_tell_an_ended_process_by_one_rule():
    """The rule "a zombie with threads left is alive" was written twice, once for
    ``/proc/<pid>/stat`` (the job wrapper, the orphan sweep) and once for
    ``/proc/<pid>/status`` (the stray kill): one rule (:func:`wrapper.has_ended`), and both readings of a process agree.
    A process whose first thread ended while another runs on is alive to both; one that
    ended and waits for its parent is ended to both; a running one is alive to both."""
    assert [wrapper.has_ended(*a) for a in [("Z", 1), (b"Z", 1), ("Z", 2), (b"Z", 3), ("S", 1), (b"R", 1)]] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    ghost = subprocess.Popen([sys.executable, "-c", GHOST])
    done = subprocess.Popen(["true"])  # not waited for: a zombie until the end of the test
    running = subprocess.Popen(["sleep", "60"])
    try:
        wait_for(lambda: "zombie" in open(f"/proc/{ghost.pid}/status").read(), 30, what="the first thread's end")
        wait_for(lambda: "zombie" in open(f"/proc/{done.pid}/status").read(), 30, what="the end of true")

        def readings(pid: int) -> tuple[bool, bool]:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            return wrapper.process_stat(pid) is None, ended(fields)

        assert [readings(p.pid) for p in (ghost, done, running)] == [(False, False), (True, True), (False, False)]
    finally:
        for p in (ghost, done, running):
            p.kill()
            p.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="making groups takes root")
def test_a_job_gets_its_workspaces_group_without_membership_and_no_other_workspaces():
    """No account is a member of a workspace's group: a job in the workspace gets it from
    the hub (its launch is authorized), and never another workspace's, even one the
    account was made a member of (by a hub before this one, or by hand)."""
    import uuid

    from uws_hub.spawners.localjob import job_groups

    prefix = f"uwsu{uuid.uuid4().hex[:6]}-"
    account = pwd.getpwnam("nobody")
    try:
        subprocess.run(["groupadd", f"{prefix}1"], check=True)
        subprocess.run(["groupadd", "-U", "nobody", f"{prefix}2"], check=True)
        # a name the hub never gives a group (:func:`is_group_name`): an administrator's
        subprocess.run(["groupadd", "-U", "nobody", f"{prefix}02"], check=True)
        own, other, admins = (grp.getgrnam(f"{prefix}{i}").gr_gid for i in ("1", "2", "02"))
        assert other in os.getgrouplist("nobody", account.pw_gid)
        assert own in job_groups(account, prefix, 1) and other not in job_groups(account, prefix, 1)
        assert own not in job_groups(account, prefix, 3) and other not in job_groups(account, prefix, 3)
        # a member of its own: given once
        assert job_groups(account, prefix, 2).count(other) == 1
        assert admins in job_groups(account, prefix, 1)
    finally:
        for i in ("1", "2", "02"):
            subprocess.run(["groupdel", f"{prefix}{i}"], check=False, capture_output=True)


def test_quota_periods_and_formats():
    now = datetime(2026, 11, 25, 13, 45)  # a Wednesday
    assert period_start(now, "day") == datetime(2026, 11, 25)
    assert period_start(now, "week") == datetime(2026, 11, 23)
    assert period_start(now, "month") == datetime(2026, 11, 1)
    assert period_start(now, "year") == datetime(2026, 1, 1)
    assert period_start(now, "all") == datetime(1970, 1, 1)
    # quotas read a job's memory as SLURM does: a bare number is megabytes
    assert memory_bytes("2G") == 2 * 1024**3 and memory_bytes("512") == 512 * 1024**2
    assert (fmt_bytes(1), fmt_bytes(1000), fmt_bytes(1536)) == ("1 byte", "1000 bytes", "1.5 KiB")
    # a size someone asked for stays what they typed, in the largest unit that divides it
    assert (fmt_bytes(1536, exact=True), fmt_bytes(3 * 1024**3, exact=True)) == ("1536 bytes", "3 GiB")
    assert (fmt_hours(3600), fmt_hours(3.6), fmt_hours(36_081)) == ("1", "0.001", "10.023")


def test_limits_merge_without_copying_them(monkeypatch):
    """Every launch merges its user's limits: field by field, not through ``asdict``'s deep
    copy (which cost the request more than the rest of its quota check)."""
    monkeypatch.setattr(quota_limits, "asdict", None)
    defaults = Limits(disk_bytes=100, concurrent_jobs=1)
    assert defaults.merged(Limits()) is defaults
    assert defaults.merged(Limits(concurrent_jobs=0)) == Limits(disk_bytes=100, concurrent_jobs=0)


def test_limits_merge_and_models():
    defaults = Limits(disk_bytes=100, core_seconds=3600, concurrent_jobs=1)
    merged = defaults.merged(Limits(concurrent_jobs=3, max_gpus=0))
    assert merged == Limits(disk_bytes=100, core_seconds=3600, concurrent_jobs=3, max_gpus=0)
    assert Limits.most_generous([None, 2, 5]) == 5 and Limits.most_generous([None]) is None
    model = merged.to_model()
    assert model["core_hours"] == 1.0 and "core_seconds" not in model
    assert Limits.from_model(model) == merged
    # the admin's quota form says each default in words
    words = limit_words(Limits(disk_bytes=10 * 1024**3, core_seconds=3600 * 10**6, concurrent_jobs=3).to_model())
    assert (words["disk_bytes"], words["core_hours"], words["concurrent_jobs"]) == ("10.0 GiB", "1000000", "3")
    assert words["max_memory_bytes"] == words["max_gpus"] == "no limit"


def test_job_env_puts_the_server_config_first():
    env = job_env({"A": "1", "JUPYTER_CONFIG_PATH": "/etc/mine"}, 3)
    assert env["JUPYTER_CONFIG_PATH"] == os.pathsep.join([CONFIG_DIR, QUIET_DIR, "/etc/mine"])
    assert env["UWS_SERVER_AUTH_CACHE_SECONDS"] == "3" and env["A"] == "1"
    assert (Path(CONFIG_DIR) / "jupyter_server_config.py").is_file()
    assert job_env({}, 1)["JUPYTER_CONFIG_PATH"] == CONFIG_DIR + os.pathsep + QUIET_DIR
    # JupyterLab's news: off unless the admin wants them (UWSHub.jupyterlab_news)
    assert job_env({}, 1, jupyterlab_news=True)["JUPYTER_CONFIG_PATH"] == CONFIG_DIR
    quiet = json.loads((Path(QUIET_DIR) / "labconfig" / "page_config.json").read_text())
    assert quiet == {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
    # JUPYTER_NO_CONFIG would skip the folder, and with it the viewers' limits
    assert "JUPYTER_NO_CONFIG" not in job_env({"JUPYTER_NO_CONFIG": "1"}, 1)


class FakeSpawner:
    oauth_client_allowed_scopes: object = []
    server_token_scopes: object = []
    log = logging.getLogger("test")
    _log_name = "a/b"


def test_client_scopes_are_added_to_lists_and_callables_once():
    spawner = FakeSpawner()
    spawner.oauth_client_allowed_scopes = ["read:users:name!user"]
    add_client_scopes(spawner, ["x!server=a/b"])
    add_client_scopes(spawner, ["x!server=a/b"])
    assert spawner.oauth_client_allowed_scopes == ["read:users:name!user", "x!server=a/b"]

    async def configured(sp):
        return ["y"]

    spawner.oauth_client_allowed_scopes = configured
    add_client_scopes(spawner, ["x!server=a/b"])
    first = spawner.oauth_client_allowed_scopes
    add_client_scopes(spawner, ["x!server=a/b"])
    assert spawner.oauth_client_allowed_scopes is first
    assert asyncio.run(first(spawner)) == ["x!server=a/b", "y"]


def test_configured_client_scopes_lose_what_the_hub_takes():
    # the config's scopes that uws-hub's API takes, in any form, are left out (lists and callables)
    configured = ["read:users:groups!user", f"{READ_WORKSPACES}!user", "admin:servers!user", "admin:users", "inherit"]
    spawner = FakeSpawner()
    spawner.oauth_client_allowed_scopes = list(configured)
    add_client_scopes(spawner, [f"{WRITE_SERVERS}!server=a/b"], taken_by_hub)
    assert spawner.oauth_client_allowed_scopes == [f"{WRITE_SERVERS}!server=a/b", "read:users:groups!user"]

    def configured_callable(sp):
        return list(configured)

    spawner.oauth_client_allowed_scopes = configured_callable
    add_client_scopes(spawner, [f"{WRITE_SERVERS}!server=a/b"], taken_by_hub)
    allowed = asyncio.run(spawner.oauth_client_allowed_scopes(spawner))
    assert allowed == [f"{WRITE_SERVERS}!server=a/b", "read:users:groups!user"]
    assert not any(taken_by_hub(s) for s in (f"{WRITE_SERVERS}!user", WRITE_SERVERS, "access:servers", "read:users"))


def test_a_server_an_editor_launched_gets_a_token_of_the_server_role_only():
    spawner = FakeSpawner()
    spawner.server_token_scopes = [f"{READ_WORKSPACES}!user", "users:activity!user"]
    set_server_token_scopes(spawner, own=False)
    assert spawner.server_token_scopes == FOREIGN_SERVER_TOKEN_SCOPES
    # the owner's next start of the same server gets the config's again
    set_server_token_scopes(spawner, own=True)
    assert spawner.server_token_scopes == [f"{READ_WORKSPACES}!user", "users:activity!user"]
    set_server_token_scopes(spawner, own=False)
    assert spawner.server_token_scopes == FOREIGN_SERVER_TOKEN_SCOPES


class _Asyncio:
    """asyncio as the strays worker sees it, its waits recorded and not waited out."""

    def __init__(self):
        self.waits: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def wait_for(self, aw, timeout):
        self.waits.append(timeout)
        return await asyncio.wait_for(aw, 0)


def strays_service(monkeypatch, running, kill):
    """A share service whose strays worker sees ``running(ws_id)`` as the former editors'
    unfinished jobs and kills through ``kill(names)`` (the groups' names: who may hold them
    is the shares' business), on a clock that each look moves 20 s."""
    from types import SimpleNamespace

    from uws_hub.sharing import collaborate

    clock = [1000.0]

    def looked(ws_ids):
        clock[0] += 20
        return {ws_id: jobs for ws_id in ws_ids if (jobs := running(ws_id))}

    fake_asyncio = _Asyncio()
    monkeypatch.setattr(collaborate, "asyncio", fake_asyncio)
    monkeypatch.setattr(collaborate, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    db = SimpleNamespace(rollback=lambda: None)
    service = collaborate.ShareService(
        db, None, None, None, logging.getLogger("test.strays"), posix_group_prefix="uws-ws-", stopping_timeout=100
    )
    service._lost_launchers_jobs = looked
    service._allowed_by_group = lambda ws_ids, planned=None: {f"uws-ws-{ws_id}": set() for ws_id in ws_ids}
    service._kill_strays = lambda allowed: kill(sorted(allowed))
    return service, fake_asyncio


def run_worker_until(service, ws_ids: set[int], done: threading.Event) -> None:
    """Run the worker; once it waits, the groups of ``ws_ids`` lose members; until ``done``."""

    async def run():
        worker = asyncio.ensure_future(service.kill_strays_worker())
        await asyncio.sleep(0)
        service._strays.update(ws_ids)
        service._strays_wake.set()
        try:
            for _ in range(500):
                if done.is_set():
                    return
                await asyncio.sleep(0.01)
        finally:
            worker.cancel()

    asyncio.run(run())


def test_strays_of_a_job_that_never_ends_are_killed_after_its_stop_timeout_and_a_margin(monkeypatch, caplog):
    """A former editor's job that never leaves its active states held the kill back for
    ever, the worker looking every 0.5 s: past the job's stop timeout and a margin, its
    workspace's strays are killed anyway, the warning names the job, and the looks back off."""
    from uws_hub.sharing.collaborate import STRAYS_MARGIN_SECONDS, STRAYS_POLL_MAX_SECONDS, STRAYS_POLL_SECONDS

    killed: list[list[str]] = []
    done = threading.Event()

    def kill(names):
        killed.append(names)
        done.set()

    service, fake_asyncio = strays_service(monkeypatch, lambda ws_id: [42] if ws_id == 7 else [], kill)
    with caplog.at_level(logging.WARNING, "test.strays"):
        run_worker_until(service, {7}, done)
    assert killed == [["uws-ws-7"]]
    assert not service._strays
    # 20 s a look: killed at the first look more than 100 s + the margin after the first
    waited = len(fake_asyncio.waits) * 20
    assert waited - 20 <= 100 + STRAYS_MARGIN_SECONDS < waited
    warnings = [r.getMessage() for r in caplog.records if r.name == "test.strays"]
    assert len(warnings) == 1 and "[42]" in warnings[0] and "workspace 7" in warnings[0]
    waits = fake_asyncio.waits
    assert waits[:3] == [STRAYS_POLL_SECONDS, 2 * STRAYS_POLL_SECONDS, 4 * STRAYS_POLL_SECONDS]
    assert max(waits) == STRAYS_POLL_MAX_SECONDS


def test_strays_whose_kill_failed_are_killed_at_the_next_look(monkeypatch):
    """A kill that raised dropped its workspaces: their strays kept the group for good."""
    calls: list[list[str]] = []
    done = threading.Event()

    def kill(names):
        calls.append(names)
        if len(calls) == 1:
            raise OSError("no /proc for a moment")
        done.set()

    service, _ = strays_service(monkeypatch, lambda ws_id: [], kill)
    run_worker_until(service, {3, 4}, done)
    assert calls == [["uws-ws-3", "uws-ws-4"], ["uws-ws-3", "uws-ws-4"]]
    assert not service._strays


def test_a_group_deleted_twice_never_kills_the_group_that_took_its_gid(monkeypatch):
    """Two deletes of a workspace's group (the workspace's own, and the share sync's for a
    group whose workspace is gone) and a new workspace's group, in that order on the POSIX
    lock: the second delete killed every holder of the gid it had read before the lock,
    by then the new group's (its members' processes: a job starting in the new workspace
    was SIGKILLed). The gid is read under the lock: the second delete finds no group."""
    from uws_hub.sharing import collaborate, posixgroups

    groups = {"uws-ws-2": 5002}
    killed: list[dict] = []
    monkeypatch.setattr(posixgroups, "gid_of", lambda name: groups.get(name))
    monkeypatch.setattr(posixgroups, "kill_strays", lambda holders: killed.append(holders) or 0)
    monkeypatch.setattr(posixgroups, "delete_group", lambda name: groups.pop(name, None))
    service = collaborate.ShareService(
        None, None, None, None, logging.getLogger("test.groups"), posix_group_prefix="uws-ws-"
    )

    async def run():
        await service._posix_lock.acquire()
        late = asyncio.ensure_future(service._delete_group("uws-ws-2", "its workspace is gone"))
        await asyncio.sleep(0.2)  # it runs up to the lock
        # meanwhile, under the lock: the group is deleted, and a new workspace's takes its gid
        del groups["uws-ws-2"]
        groups["uws-ws-3"] = 5002
        service._posix_lock.release()
        await late

    asyncio.run(run())
    assert killed == []
    assert groups == {"uws-ws-3": 5002}


def test_a_group_made_while_the_sync_runs_is_not_taken_for_one_of_no_workspace(monkeypatch):
    """The share sync read the workspaces first and the groups after its other work: a
    workspace shared meanwhile (its row committed, then its group made) looked gone, and
    its new group was deleted under its editor (seen in a test run beside another). The
    groups are listed first, then the workspaces read."""
    from types import SimpleNamespace

    from uws_hub.sharing import collaborate, posixgroups

    workspaces = [9, 10]
    groups = ["uws-ws-10", "uws-ws-12"]

    def listed(prefix):
        # what happened up to the listing: workspace 11 made and shared, 9 and 12 gone
        workspaces[:] = [10, 11]
        return {name: SimpleNamespace(gr_gid=5000 + i, gr_mem=[]) for i, name in enumerate([*groups, "uws-ws-11"])}

    monkeypatch.setattr(posixgroups, "groups_with_prefix", listed)
    db = SimpleNamespace(execute=lambda statement: [(ws_id,) for ws_id in workspaces])
    service = collaborate.ShareService(
        db, None, None, None, logging.getLogger("test.groups"), posix_group_prefix="uws-ws-"
    )
    names, gone = asyncio.run(service._groups_and_those_of_no_workspace())
    assert names == ["uws-ws-10", "uws-ws-12", "uws-ws-11"]
    assert gone == ["uws-ws-12"]


def test_only_the_names_the_hub_gives_its_groups_are_taken_for_its_groups(monkeypatch):
    """The share sync takes the system's groups named ``<prefix><digits>`` for its own:
    one of no workspace is deleted, and every process that holds it killed; one of a
    workspace is applied to its tree. ``str.isdigit`` passed digits ``int`` refuses (a
    group ``uws-ws-²`` made by hand, or from a directory service, failed every sync: no
    group applied, no stray killed, ever) and names the hub never makes (``uws-ws-012``,
    ``uws-ws-٣``), which were read as workspace 12's or 3's: a group of an administrator's
    own deleted and its holders killed. Only the names the hub makes count."""
    from types import SimpleNamespace

    from uws_hub.sharing import collaborate, posixgroups

    names = ["uws-ws-12", "uws-ws-²", "uws-ws-012", "uws-ws-٣", "uws-ws-3", "uws-ws-", "uws-ws-0", "other-4"]
    monkeypatch.setattr(posixgroups.grp, "getgrall", lambda: [SimpleNamespace(gr_name=name) for name in names])
    assert list(posixgroups.groups_with_prefix("uws-ws-")) == ["uws-ws-12", "uws-ws-3"]
    db = SimpleNamespace(execute=lambda statement: [(12,)])
    service = collaborate.ShareService(
        db, None, None, None, logging.getLogger("test.groups"), posix_group_prefix="uws-ws-"
    )
    assert asyncio.run(service._groups_and_those_of_no_workspace()) == (["uws-ws-12", "uws-ws-3"], ["uws-ws-3"])
