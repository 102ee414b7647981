"""Disk usage scans and copy-shares on a large tree, against du and cp.

Builds a tree of ``--files`` files (default 200,000: ``--dirs`` directories
two levels deep, sizes 0 to 4 KiB, a few symlinks) under ``--root`` (default
a temporary directory on the same filesystem as /tmp), then in the same run:

- the usage scan uws-hub's background loop runs on every workspace
  (``WorkspaceStorage.usage_bytes``: ``os.scandir``, one ``lstat`` per file,
  symlinks not followed, a helper process for half of a large tree) against
  ``du -sb`` on the same tree, in wall-clock and CPU time (the helper's
  included);
- the rescans of the loop's frequent passes (``UsageTree.measure`` again:
  only the directories whose times changed are read) of the unchanged tree,
  and after a small change (``--changed-dirs`` directories each get a new
  file and lose one), against ``du -sb`` of the same tree; every result is
  checked against ``du -sb`` less the directories' sizes. The tree is dated
  ``--age-hours`` back first (a workspace written earlier: files written
  within the last hour are looked at again on every rescan);
- the copy a copy-share makes (``uws_hub.copying.copy_tree``: no links
  followed, ``copy_file_range``, modes and times kept, chown to the
  recipient) against ``cp -a`` of the same tree to the same filesystem.

Scan rounds alternate between the two sides after one warm-up of each; copy
rounds alternate which side goes first. The page cache is warm for both
(what a hub sees for workspaces in use); ``sync`` runs before each copy so
neither pays for the other's writeback. Prints a
markdown table; ratios above 1 mean uws-hub is slower.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ensure_venv, fmt, log, machine_line, markdown_table, ratio, summary, write_json

ensure_venv()

from uws_hub.workspaces.copying import copy_tree  # noqa: E402
from uws_hub.workspaces.paths import Owner  # noqa: E402
from uws_hub.workspaces.storage import WorkspaceStorage  # noqa: E402
from uws_hub.workspaces.usagetree import UsageTree  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000, help="files in the tree (default 200,000)")
    p.add_argument("--dirs", type=int, default=1_000, help="directories they are spread over (default 1,000)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds of the scan (default 5)")
    p.add_argument(
        "--changed-dirs",
        type=int,
        default=10,
        help="directories changed (a file added, one deleted) before each 'changed' rescan (default 10)",
    )
    p.add_argument(
        "--age-hours", type=float, default=2.0, help="date the tree's files and directories this far back (default 2)"
    )
    p.add_argument("--copy-rounds", type=int, default=2, help="measured rounds of the copy (default 2; 0: no copy)")
    p.add_argument("--root", default=None, help="where to build the tree (default: a temporary directory)")
    p.add_argument("--json", default=None, help="write results here ('' for none; default benchmarks/results/)")
    return p.parse_args(argv)


def build_tree(top: Path, files: int, dirs: int) -> int:
    """The tree; returns the bytes in its files."""
    total = 0
    per_dir = max(1, files // dirs)
    made = 0
    blob = os.urandom(4096)
    for d in range(dirs):
        sub = top / f"group-{d % 20:02d}" / f"dir-{d:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        n = per_dir if d < dirs - 1 else files - made
        for f in range(n):
            size = (d * 131 + f * 17) % 4097
            with open(sub / f"file-{f:04d}.dat", "wb") as out:
                out.write(blob[:size])
            total += size
        made += n
        if d % 100 == 0:
            (sub / "link-inside").symlink_to(f"file-{0:04d}.dat")
    return total


def backdate(top: Path, hours: float) -> None:
    when = time.time() - hours * 3600
    for d, _, files in os.walk(top, topdown=False):
        for name in files:
            os.utime(os.path.join(d, name), (when, when), follow_symlinks=False)
        os.utime(d, (when, when))


def du_files(top: Path) -> int:
    """``du -sb`` less the directories' own sizes: what the usage scan counts."""
    return du_sb(top) - sum(os.lstat(d).st_size for d, _, _ in os.walk(top))


def small_change(tree: Path, dirs: int, n: int) -> None:
    """In ``dirs`` of the tree's directories, add a file and delete another."""
    leaves = sorted(p for p in tree.glob("group-*/dir-*"))
    for i in range(dirs):
        d = leaves[(n * 7919 + i * 104729) % len(leaves)]
        (d / f"new-{n}-{i}.dat").write_bytes(b"x" * (n * 31 + i))
        victims = sorted(d.glob("file-*.dat"))
        if victims:
            victims[n % len(victims)].unlink()


def timed(func, cpu: list[float] | None = None) -> float:
    """Seconds ``func`` took; with ``cpu``, also appends the CPU seconds it used, its child
    processes' included (``du``, the scan's helpers)."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    func()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(sum(a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime for a, b in zip(after, before, strict=True)))
    return elapsed


def du_sb(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main(argv=None) -> None:
    args = parse_args(argv)
    base = Path(args.root or tempfile.mkdtemp(prefix="uws-bench-du-"))
    tree = base / "tree"
    try:
        log(f"building {args.files:,} files in {args.dirs:,} directories under {tree}")
        start = time.perf_counter()
        file_bytes = build_tree(tree, args.files, args.dirs)
        log(f"built in {time.perf_counter() - start:.1f} s: {file_bytes:,} bytes in files")

        # ---- the usage scan against du -sb
        scanned = WorkspaceStorage.usage_bytes(str(tree))
        du_bytes = du_sb(tree)
        assert scanned == file_bytes + sum(len(os.readlink(p)) for p in tree.rglob("link-inside")), scanned
        scan, du, scan_cpu, du_cpu = [], [], [], []
        for i in range(args.rounds + 1):
            s = timed(lambda: WorkspaceStorage.usage_bytes(str(tree)), scan_cpu)
            d = timed(lambda: du_sb(tree), du_cpu)
            if i:  # the first round warms up
                scan.append(s)
                du.append(d)
        del scan_cpu[0], du_cpu[0]
        log(f"scan p50 {summary(scan)['p50']:.3f} s, du -sb p50 {summary(du)['p50']:.3f} s")

        # ---- the frequent passes' rescans, against du -sb
        backdate(tree, args.age_hours)
        usage = UsageTree()
        usage.measure(str(tree))
        rescan, rescan_du, changed, changed_du, read = [], [], [], [], []
        for i in range(args.rounds + 1):
            s = timed(lambda: usage.measure(str(tree)))
            d = timed(lambda: du_sb(tree))
            small_change(tree, args.changed_dirs, i)
            result: list[int] = []
            c = timed(lambda result=result: result.append(usage.measure(str(tree))))
            read.append(usage.read_dirs)
            cd = timed(lambda: du_sb(tree))
            assert result[0] == du_files(tree), (result, du_files(tree))
            if i:
                rescan.append(s)
                rescan_du.append(d)
                changed.append(c)
                changed_du.append(cd)
        log(
            f"rescan p50 {summary(rescan)['p50']:.4f} s, after a change {summary(changed)['p50']:.4f} s"
            f" ({read[-1]} directories read)"
        )

        # ---- the copy against cp -a
        # the scans left the tree in the page cache: no warm-up round (a copy of 200,000
        # files takes minutes on a slow disk); the order alternates instead
        copies, cps = [], []
        for i in range(args.copy_rounds):
            for side in ("ours", "cp") if i % 2 == 0 else ("cp", "ours"):
                dst = base / f"{side}-{i}"
                subprocess.run(["sync"], check=True)
                if side == "ours":
                    copies.append(timed(lambda dst=dst: copy_tree(str(tree), str(dst), Owner())))
                else:
                    cps.append(timed(lambda dst=dst: subprocess.run(["cp", "-a", str(tree), str(dst)], check=True)))
                shutil.rmtree(dst)
        if copies:
            log(f"copy p50 {summary(copies)['p50']:.3f} s, cp -a p50 {summary(cps)['p50']:.3f} s")
    finally:
        if not args.root:
            shutil.rmtree(base, ignore_errors=True)

    mib = file_bytes / 1024**2
    scan_p50, du_p50 = summary(scan)["p50"], summary(du)["p50"]
    copy_p50, cp_p50 = (summary(copies)["p50"], summary(cps)["p50"]) if copies else (float("nan"), float("nan"))
    rows = [
        [
            "usage scan (UsageTree, helper process)",
            fmt(scan_p50, 3),
            fmt(min(scan), 3),
            fmt(args.files / scan_p50, 0),
            "–",
            "du -sb",
            fmt(du_p50, 3),
            fmt(ratio(scan_p50, du_p50), 2),
        ],
        [
            "rescan, unchanged tree (UsageTree)",
            fmt(summary(rescan)["p50"], 4),
            fmt(min(rescan), 4),
            fmt(args.files / summary(rescan)["p50"], 0),
            "–",
            "du -sb",
            fmt(summary(rescan_du)["p50"], 3),
            fmt(ratio(summary(rescan)["p50"], summary(rescan_du)["p50"]), 3),
        ],
        [
            f"rescan, {args.changed_dirs} directories changed",
            fmt(summary(changed)["p50"], 4),
            fmt(min(changed), 4),
            fmt(args.files / summary(changed)["p50"], 0),
            "–",
            "du -sb",
            fmt(summary(changed_du)["p50"], 3),
            fmt(ratio(summary(changed)["p50"], summary(changed_du)["p50"]), 3),
        ],
    ]
    if copies:
        rows.append(
            [
                "copy-share (copy_tree)",
                fmt(copy_p50, 3),
                fmt(min(copies), 3),
                fmt(args.files / copy_p50, 0),
                fmt(mib / copy_p50, 1),
                "cp -a",
                fmt(cp_p50, 3),
                fmt(ratio(copy_p50, cp_p50), 2),
            ]
        )
    print()
    print(
        f"Tree: {args.files:,} files in {args.dirs:,} directories, {mib:,.1f} MiB in files"
        f" (du -sb: {du_bytes:,} bytes, directories included). {machine_line()}."
    )
    print()
    print(
        markdown_table(
            ["operation", "p50 s", "best s", "files/s", "MiB/s", "baseline", "baseline p50 s", "ratio"], rows
        )
    )
    scan_cpu_p50, du_cpu_p50 = summary(scan_cpu)["p50"], summary(du_cpu)["p50"]
    print()
    print(
        f"CPU time of the full scan p50 {scan_cpu_p50:.3f} s, of du -sb"
        f" {du_cpu_p50:.3f} s: {ratio(scan_cpu_p50, du_cpu_p50):.2f}x. Where the machine's cores are"
        f" busy with other work, the wall-clock ratio tends to this one. Load average at the end:"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}."
    )
    out = write_json(
        "disk_usage",
        {
            "files": args.files,
            "dirs": args.dirs,
            "file_bytes": file_bytes,
            "du_bytes": du_bytes,
            "scan_seconds": scan,
            "du_seconds": du,
            "scan_cpu_seconds": scan_cpu,
            "du_cpu_seconds": du_cpu,
            "rescan_seconds": rescan,
            "rescan_du_seconds": rescan_du,
            "changed_rescan_seconds": changed,
            "changed_du_seconds": changed_du,
            "copy_seconds": copies,
            "cp_seconds": cps,
        },
        args.json,
    )
    if out:
        log(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
