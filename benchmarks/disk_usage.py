"""Disk usage scans and copy-shares on a large tree, against du and cp.

Builds a tree of ``--files`` files (default 200,000: ``--dirs`` directories
two levels deep, sizes 0 to 4 KiB, a few symlinks) under ``--root`` (default
a temporary directory on the same filesystem as /tmp), then in the same run:

- the usage scan uws-hub's background loop runs on every workspace
  (``WorkspaceStorage.usage_bytes``: ``os.scandir``, one ``lstat`` per entry,
  symlinks not followed) against ``du -sb`` on the same tree;
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000, help="files in the tree (default 200,000)")
    p.add_argument("--dirs", type=int, default=1_000, help="directories they are spread over (default 1,000)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds of the scan (default 5)")
    p.add_argument("--copy-rounds", type=int, default=2, help="measured rounds of the copy (default 2)")
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


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


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
        scan, du = [], []
        for i in range(args.rounds + 1):
            s = timed(lambda: WorkspaceStorage.usage_bytes(str(tree)))
            d = timed(lambda: du_sb(tree))
            if i:  # the first round warms up
                scan.append(s)
                du.append(d)
        log(f"scan p50 {summary(scan)['p50']:.3f} s, du -sb p50 {summary(du)['p50']:.3f} s")

        # ---- the copy against cp -a
        # the scans left the tree in the page cache: no warm-up round (a copy of 200,000
        # files takes minutes on a slow disk); the order alternates instead
        copies, cps = [], []
        for i in range(args.copy_rounds):
            for side in ("ours", "cp") if i % 2 == 0 else ("cp", "ours"):
                dst = base / f"{side}-{i}"
                subprocess.run(["sync"], check=True)
                if side == "ours":
                    copies.append(timed(lambda: copy_tree(str(tree), str(dst), Owner())))
                else:
                    cps.append(timed(lambda: subprocess.run(["cp", "-a", str(tree), str(dst)], check=True)))
                shutil.rmtree(dst)
        log(f"copy p50 {summary(copies)['p50']:.3f} s, cp -a p50 {summary(cps)['p50']:.3f} s")
    finally:
        if not args.root:
            shutil.rmtree(base, ignore_errors=True)

    mib = file_bytes / 1024**2
    scan_p50, du_p50 = summary(scan)["p50"], summary(du)["p50"]
    copy_p50, cp_p50 = summary(copies)["p50"], summary(cps)["p50"]
    rows = [
        ["usage scan (os.scandir)", fmt(scan_p50, 3), fmt(min(scan), 3), fmt(args.files / scan_p50, 0), "–",
         "du -sb", fmt(du_p50, 3), fmt(ratio(scan_p50, du_p50), 2)],
        ["copy-share (copy_tree)", fmt(copy_p50, 3), fmt(min(copies), 3), fmt(args.files / copy_p50, 0),
         fmt(mib / copy_p50, 1), "cp -a", fmt(cp_p50, 3), fmt(ratio(copy_p50, cp_p50), 2)],
    ]
    print()
    print(f"Tree: {args.files:,} files in {args.dirs:,} directories, {mib:,.1f} MiB in files"
          f" (du -sb: {du_bytes:,} bytes, directories included). {machine_line()}.")
    print()
    print(markdown_table(
        ["operation", "p50 s", "best s", "files/s", "MiB/s", "baseline", "baseline p50 s", "ratio"], rows))
    out = write_json("disk_usage", {
        "files": args.files, "dirs": args.dirs, "file_bytes": file_bytes, "du_bytes": du_bytes,
        "scan_seconds": scan, "du_seconds": du, "copy_seconds": copies, "cp_seconds": cps,
    }, args.json)
    if out:
        log(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
