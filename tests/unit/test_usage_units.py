"""The usage scan stays exact while it re-reads only what changed (uws_hub.workspaces.usagetree):
random trees, random changes, each measurement compared with ``du -sb``."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from uws_hub.workspaces import usage
from uws_hub.workspaces.paths import MAX_DEPTH, TEMP_PREFIX
from uws_hub.workspaces.usage import UsageMeter
from uws_hub.workspaces.usagetree import HOT_SECONDS, UsageTree


def du_files(top: Path) -> int:
    """``du -sb`` less the directories' own sizes: the bytes in files and symlinks."""
    total = int(subprocess.run(["du", "-sb", str(top)], capture_output=True, text=True, check=True).stdout.split()[0])
    return total - sum(os.lstat(d).st_size for d, _, _ in os.walk(top))


def all_dirs(top: Path) -> list[Path]:
    return [Path(d) for d, _, _ in os.walk(top)]


def backdate(top: Path, seconds: float) -> None:
    """Every file and directory last changed ``seconds`` ago (directories after their files)."""
    when = time.time() - seconds
    for d, _, files in os.walk(top, topdown=False):
        for name in files:
            os.utime(os.path.join(d, name), (when, when), follow_symlinks=False)
        os.utime(d, (when, when))


def build(top: Path, rng: random.Random) -> None:
    for i in range(40):
        d = top / f"d{i % 8}" / f"e{i}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(rng.randrange(0, 15)):
            (d / f"f{j}").write_bytes(os.urandom(rng.randrange(0, 3000)))
    (top / "d0" / "link").symlink_to("e0/f0")


def change(top: Path, rng: random.Random, fresh: list[Path]) -> None:
    """A few random changes of the kinds jobs make, in a few directories."""
    dirs = all_dirs(top)
    for _ in range(rng.randrange(1, 6)):
        d = rng.choice(dirs)
        if not d.exists():
            continue
        files = [p for p in d.iterdir() if p.is_file() and not p.is_symlink()]
        kind = rng.choice(["create", "delete", "rename", "replace", "mkdir", "rmtree", "append-fresh", "symlink"])
        if kind == "create" or (not files and kind in ("delete", "rename", "replace")):
            path = d / f"new{rng.randrange(10**6)}"
            path.write_bytes(os.urandom(rng.randrange(0, 5000)))
            fresh.append(path)
        elif kind == "delete":
            rng.choice(files).unlink()
        elif kind == "rename":
            rng.choice(files).rename(rng.choice(dirs) / f"moved{rng.randrange(10**6)}")
        elif kind == "replace":  # how editors and Jupyter save: a new file renamed over the old
            target = rng.choice(files)
            tmp = d / f".tmp{rng.randrange(10**6)}"
            tmp.write_bytes(os.urandom(rng.randrange(0, 5000)))
            tmp.replace(target)
        elif kind == "mkdir":
            sub = d / f"sub{rng.randrange(10**6)}"
            sub.mkdir()
            (sub / "x").write_bytes(os.urandom(rng.randrange(1, 2000)))
        elif kind == "rmtree" and d != top:
            subprocess.run(["rm", "-rf", str(d)], check=True)
        elif kind == "append-fresh":
            # written in place: no directory changes, but the file was written lately
            live = [p for p in fresh if p.exists()]
            if live:
                with open(rng.choice(live), "ab") as f:
                    f.write(os.urandom(rng.randrange(1, 3000)))
        elif kind == "symlink":
            (d / f"link{rng.randrange(10**6)}").symlink_to("somewhere/else" * rng.randrange(1, 4))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("helper_after", [None, 0.0], ids=["alone", "helper"])
def test_rescans_stay_exact_after_random_changes_reading_only_what_changed(tmp_path, seed, helper_after):
    """With ``helper_after=0`` a helper process walks half of the top's subdirectories
    of each full measurement: the rescans reuse the records it made."""
    rng = random.Random(seed)
    top = tmp_path / "ws"
    build(top, rng)
    backdate(top, 2 * HOT_SECONDS)
    tree = UsageTree()
    assert tree.measure(str(top), helper_after=helper_after) == du_files(top)
    assert tree.read_dirs == len(all_dirs(top))
    assert (tree.helper_dirs > 0) == (helper_after is not None)
    fresh: list[Path] = []
    for _ in range(6):
        change(top, rng, fresh)
        assert tree.measure(str(top), helper_after=helper_after) == du_files(top)
        # the unchanged directories were not read again
        assert tree.reused_dirs > 0 and tree.read_dirs < len(all_dirs(top))


@pytest.mark.parametrize("helper_after", [None, 0.0], ids=["alone", "helper"])
def test_a_full_measurement_sweeps_stale_upload_temporaries_and_follows_no_symlinks(tmp_path, helper_after):
    """In every directory of the tree (the helper process's half too): stale upload temporaries
    deleted, fresh ones counted, a symlink to a directory outside counted as a link (its length),
    not followed."""
    top, outside = tmp_path / "ws", tmp_path / "outside"
    build(top, random.Random(3))
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * 100_000)
    long_ago = time.time() - 2 * HOT_SECONDS
    stale = []
    for i, d in enumerate(all_dirs(top)):
        (d / f"to-outside-{i}").symlink_to(outside)
        path = d / f"{TEMP_PREFIX}{i:016d}"
        path.write_bytes(b"left by a killed hub")
        os.utime(path, (long_ago, long_ago))
        stale.append(path)
    live = top / "d1" / f"{TEMP_PREFIX}live"
    live.write_bytes(b"under way")
    tree = UsageTree()
    measured = tree.measure(str(top), sweep_before=time.time() - 60, helper_after=helper_after)
    assert (tree.helper_dirs > 0) == (helper_after is not None)
    assert not any(p.exists() for p in stale) and live.exists()
    assert measured == du_files(top)


def test_a_file_changed_in_place_long_after_its_last_write_is_seen_by_a_full_measurement(tmp_path):
    """What a rescan cannot see (a file untouched for long, then written in place with no
    change to its directory) the full measurement of the usage loop's full pass does."""
    top = tmp_path / "ws"
    build(top, random.Random(7))
    backdate(top, 2 * HOT_SECONDS)
    tree = UsageTree()
    tree.measure(str(top))
    old = next(p for p in sorted(top.rglob("f*")) if p.is_file() and not p.is_symlink())
    with open(old, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"x" * 1000)
    assert UsageTree().measure(str(top)) == du_files(top)


def test_a_helper_process_that_cannot_start_leaves_the_whole_walk_to_the_hub(tmp_path, monkeypatch):
    """No interpreter to start (an embedded one): the measurement is made all the same, by the walk alone."""
    top = tmp_path / "ws"
    build(top, random.Random(11))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    tree = UsageTree()
    assert tree.measure(str(top), helper_after=0.0) == du_files(top)
    assert tree.helper_dirs == 0 and tree.read_dirs == len(all_dirs(top))


@pytest.mark.parametrize("helper_after", [None, 0.0], ids=["alone", "helper"])
def test_trees_deeper_than_the_open_folders_are_measured_whole(tmp_path, helper_after):
    """Chains deeper than MAX_DEPTH under each top folder (the helper's half too): the walk
    closes the folders above the deepest MAX_DEPTH and opens them again from below."""
    top = tmp_path / "ws"
    for i in range(4):
        d = top / f"chain{i}"
        d.mkdir(parents=True)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for depth in range(MAX_DEPTH + 20):
                os.mkdir("d", dir_fd=fd)
                with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
                    f.write(b"x" * (depth + i))
                sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = sub
        finally:
            os.close(fd)
    backdate(top, 2 * HOT_SECONDS)
    tree = UsageTree()
    expected = sum(depth + i for i in range(4) for depth in range(MAX_DEPTH + 20))
    assert tree.measure(str(top), helper_after=helper_after) == expected
    assert tree.read_dirs == 1 + 4 * (MAX_DEPTH + 21)
    assert (tree.helper_dirs > 0) == (helper_after is not None)
    # the rescan reuses every record, the helper's too
    assert tree.measure(str(top), helper_after=helper_after) == expected
    assert tree.read_dirs == 0 and tree.reused_dirs == 1 + 4 * (MAX_DEPTH + 21)


def test_a_helper_process_that_fails_fails_the_measurement_with_an_oserror(tmp_path, monkeypatch):
    """What the helper met (on stderr) becomes an OSError, which the usage loop logs, keeping the
    workspace's last measurement; no half-measured number is returned."""
    top = tmp_path / "ws"
    build(top, random.Random(13))
    failing = tmp_path / "failing-python"
    failing.write_text("#!/bin/sh\necho 'TreeMoved: a directory was moved' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(failing))
    with pytest.raises(OSError, match="a directory was moved"):
        UsageTree().measure(str(top), helper_after=0.0)


class OneWorkspace:
    """The workspace service of a hub with one workspace (``workspace``), for UsageMeter."""

    workspace: SimpleNamespace

    def to_measure(self, everything, *, isolated, among=None):
        ws = self.workspace
        return [ws] if among is None or ws.id in among else []


class RecordingQuotas:
    """The quota service, for UsageMeter: records whether each measurement settled (``settled``)."""

    settled: list[bool]

    def record_measured(self, ws, before, usage, *, settled=True):
        self.settled.append(settled)
        return True

    def check_disk_warning(self, owner):
        pass


async def test_many_job_ends_in_one_workspace_make_one_measurement_with_its_tree():
    """The ends of a burst of jobs in one workspace, told while a measurement of it runs,
    make one more measurement, not one each; each uses (and keeps) the workspace's tree,
    and neither settles the workspace (the next pass measures it again)."""
    ws = SimpleNamespace(id=7, directory="/ws/7", disk_usage_bytes=0, owner="ann")
    trees: list[object] = []
    stored: list[bool] = []  # whether each measurement settled the workspace
    walking, go_on = threading.Event(), threading.Event()

    class Storage:
        def measure(self, directory, tree):
            trees.append(tree)
            walking.set()
            assert go_on.wait(10)
            return 10

    class Workspaces(OneWorkspace):
        workspace = ws

    class Quotas(RecordingQuotas):
        settled = stored

    measurements: asyncio.Queue[int] = asyncio.Queue()

    async def guarded(name, step):
        await step()
        measurements.put_nowait(len(trees))
        return True

    meter = UsageMeter(
        Workspaces(), Storage(), Quotas(), logging.getLogger("test"), full_scan_seconds=1e9, isolated=True
    )
    worker = asyncio.ensure_future(meter.measure_ended_forever(guarded))
    try:
        meter.job_ended(7)
        await asyncio.to_thread(walking.wait, 10)
        for _ in range(50):  # told while the first measurement walks
            meter.job_ended(7)
        go_on.set()
        assert await asyncio.wait_for(measurements.get(), 10) == 1
        assert await asyncio.wait_for(measurements.get(), 10) == 2
        # nothing more is waiting: no third measurement
        assert not meter._ended and not meter._ended_event.is_set()
    finally:
        worker.cancel()
    assert trees[0] is trees[1] is meter._trees[7]
    assert stored == [False, False]


async def test_measurements_after_jobs_rest_in_proportion_to_what_they_cost(monkeypatch):
    """A workspace's owner decides what measuring it costs (a folder of a million empty
    files costs no quota and seconds of the hub's CPU) and how often its jobs end (many
    tiny jobs): each end measured it again, back to back, for as long as the jobs went on.
    The next measurement after jobs' ends waits ``AFTER_JOBS_REST`` times as long as the
    last one walked (a clock that the walks move: no real time is measured here)."""
    ws = SimpleNamespace(id=7, directory="/ws/7", disk_usage_bytes=0, owner="ann")
    clock = [1000.0]
    walk_seconds = iter([5.0, 0.002, 5.0])

    class Storage:
        def measure(self, directory, tree):
            clock[0] += next(walk_seconds)
            return 10

    class Workspaces(OneWorkspace):
        workspace = ws

    class Quotas(RecordingQuotas):
        settled: list[bool] = []

    monkeypatch.setattr(usage, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    rests: asyncio.Queue[float] = asyncio.Queue()
    resume = asyncio.Event()

    class Meter(UsageMeter):
        async def _rest(self, seconds):
            rests.put_nowait(seconds)
            await resume.wait()
            resume.clear()

    async def guarded(name, step):
        await step()
        return True

    meter = Meter(Workspaces(), Storage(), Quotas(), logging.getLogger("test"), full_scan_seconds=1e9, isolated=True)
    worker = asyncio.ensure_future(meter.measure_ended_forever(guarded))
    try:
        meter.job_ended(7)
        assert await asyncio.wait_for(rests.get(), 10) == pytest.approx(5.0 * usage.AFTER_JOBS_REST)
        for _ in range(20):  # ends while it rests: one measurement after the rest, not before
            meter.job_ended(7)
        assert meter._ended == {7}
        resume.set()
        assert await asyncio.wait_for(rests.get(), 10) == pytest.approx(0.002 * usage.AFTER_JOBS_REST)
        assert not meter._ended
        resume.set()
        meter.job_ended(7)
        assert await asyncio.wait_for(rests.get(), 10) == pytest.approx(5.0 * usage.AFTER_JOBS_REST)
    finally:
        worker.cancel()


def test_space_preallocated_past_a_files_end_counts(tmp_path):
    """``fallocate --keep-size`` takes disk without changing a file's size: the scan counted
    the size only, so a job held all the disk it liked at no quota. Sparse files and the
    rounding of small files to blocks still count their size."""
    top = tmp_path / "ws"
    top.mkdir()
    (top / "small.txt").write_bytes(b"x" * 10)
    with open(top / "sparse", "wb") as f:
        f.truncate(100 * 1024 * 1024)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(top / "preallocated", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # FALLOC_FL_KEEP_SIZE (1): 8 MiB of disk, the size left at 0
        if libc.fallocate(fd, 1, ctypes.c_longlong(0), ctypes.c_longlong(8 * 1024 * 1024)) != 0:
            pytest.skip(f"this filesystem cannot preallocate (errno {ctypes.get_errno()})")
    finally:
        os.close(fd)
    allocated = os.stat(top / "preallocated").st_blocks * 512
    assert os.stat(top / "preallocated").st_size == 0 and allocated >= 8 * 1024 * 1024
    assert UsageTree().measure(str(top)) == 10 + 100 * 1024 * 1024 + allocated


def test_many_small_preallocated_files_count_the_disk_they_take(tmp_path):
    """Disk preallocated past a file's end was free up to 16 KiB per file, so a million
    small files held 16 GB beyond the quota. Only the rounding of a file's last block
    (which ``du -sb`` leaves out too) is free now: every file here counts the disk it
    takes, and an ordinary file beside them its size."""
    top = tmp_path / "ws"
    top.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    block = os.statvfs(top).f_bsize
    expected = 0
    for i in range(300):
        # no byte, one, or a block and one; each with 2 to 4 blocks preallocated past its end
        size = (0, 1, block + 1)[i % 3]
        path = top / f"f{i}"
        path.write_bytes(b"x" * size)
        fd = os.open(path, os.O_WRONLY)
        try:
            # FALLOC_FL_KEEP_SIZE (1)
            if libc.fallocate(fd, 1, ctypes.c_longlong(0), ctypes.c_longlong((2 + i % 3) * block + size)) != 0:
                pytest.skip(f"this filesystem cannot preallocate (errno {ctypes.get_errno()})")
        finally:
            os.close(fd)
        st = os.stat(path)
        assert st.st_size == size and st.st_blocks * 512 - size >= 2 * block - 1
        expected += st.st_blocks * 512
    (top / "ordinary.txt").write_bytes(b"y" * (3 * block + 5))
    assert UsageTree().measure(str(top)) == expected + 3 * block + 5
