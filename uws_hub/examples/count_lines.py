"""The example batch job: count the lines of a workspace's text files into a CSV file.

``python -m uws_hub.examples.count_lines FOLDER [--pattern GLOB]`` walks FOLDER
(never following a symbolic link, leaving out hidden files and folders and
the jobs' ``results`` folder), counts the lines of every file whose name
matches GLOB and that looks like text (no NUL byte in its first 8 KiB), and
writes ``path,lines,bytes`` rows, sorted by path, to
``$UWS_RESULTS_DIR/line_counts.csv``, the paths relative to FOLDER. It prints
what it does as it goes, so that its log shows progress, and a total at the
end. It is what a newcomer's first batch job looks like: declared parameters
in, a log out, a result file in the job's results folder.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import sys

#: how much of a file's start decides whether it is text
SNIFF_BYTES = 8192


def count_lines(path: str) -> int | None:
    """The lines of a text file (a last line without a line break counts), None if binary."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        first = f.read(SNIFF_BYTES)
        if b"\0" in first:
            return None
        chunk = first
        while chunk:
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            chunk = f.read(1 << 20)
    return lines + (0 if last == b"\n" else 1)


def text_files(folder: str, pattern: str, skip: str | None):
    """(path relative to ``folder``, absolute path) of the matching regular files, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(root, d) != skip)
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(".") or not fnmatch.fnmatch(name, pattern) or os.path.islink(path):
                continue
            if os.path.isfile(path):
                found.append((os.path.relpath(path, folder), path))
    return sorted(found)


def plural(count: int, word: str) -> str:
    """``1 file``, ``2 files``: the log is read by people."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--pattern", default="*")
    args = parser.parse_args(argv)
    results = os.environ.get("UWS_RESULTS_DIR") or "."
    skip = os.path.dirname(os.path.abspath(results))  # the jobs' results/ folder
    rows = []
    for relative, path in text_files(args.folder, args.pattern, skip):
        try:
            lines = count_lines(path)
        except OSError as e:
            print(f"skipped {relative}: {e.strerror}", flush=True)
            continue
        if lines is None:
            print(f"skipped {relative}: not text", flush=True)
            continue
        rows.append((relative, lines, os.path.getsize(path)))
        print(f"{relative}: {plural(lines, 'line')}", flush=True)
    out = os.path.join(results, "line_counts.csv")
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "lines", "bytes"])
        writer.writerows(rows)
    print(f"{plural(len(rows), 'file')}, {plural(sum(r[1] for r in rows), 'line')}; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
