"""The share sync (``ShareService.sync``) for many shared workspaces, in-process.

Each checkout named by ``--trees`` (default: this one; ``--trees ../main,.`` compares
two) is timed in a process of its own, on an in-memory SQLite database made by its
own migrations, with ``--workspaces`` (1,000) workspaces of 200 owners, each shared
with two users as editors and one as viewer, and one in ten with a hub group of 10
as editors. The system's side is faked and counted, not timed: the group look-ups
and listings (``getgrnam``, ``getgrall``), ``groupadd``, ``gpasswd``, the accounts'
look-ups (``getpwnam``, through ``SystemAccounts.owner``) and the scan of ``/proc``
(on a real hub each costs what the NSS and the kernel make it cost: a ``getgrnam``
that misses, ~0.25 ms here with ``files systemd``). So what is timed is the hub's own
work: its queries and its Python.

After one sync (it makes the roles and the groups), ``--rounds`` (5) syncs are timed
whole, then as many with the roles' step left out (the POSIX groups' part). Prints a
markdown table: median and fastest of each, and the calls counted in one whole sync,
with the database's statements (all of them, and the writes: none when nothing changed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from _common import ensure_venv, fmt, log, machine_line, markdown_table, write_json

SYSTEM_CALLS = ["getgrall", "getgrnam", "getpwnam", "groupadd", "gpasswd", "proc_scan"]
#: the database's statements, counted as the system calls are: all of them, and the writes
STATEMENTS = ["statements", "writes"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", default=".", help="checkouts to time, comma-separated (default: this one)")
    p.add_argument("--workspaces", type=int, default=1000, help="shared workspaces (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="timed syncs of each kind (default 5)")
    p.add_argument("--json", default=None, help="write results here ('' for none; default benchmarks/results/)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(tree: str, workspaces: int, rounds: int) -> dict:
    """In a process of its own: time the sync of the checkout at ``tree``."""
    sys.path.insert(0, tree)
    from jupyterhub import orm as hub_orm
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from tests.helpers import memory_database
    from uws_hub.events.bus import EventBus
    from uws_hub.orm import Share, Workspace
    from uws_hub.sharing import collaborate, posixgroups

    calls: collections.Counter = collections.Counter()
    groups: dict[str, int] = {}

    def counted(name, fn):
        def call(*args):
            calls[name] += 1
            return fn(*args)

        return call

    def groupadd(name):
        calls["getgrnam"] += 1
        if name not in groups:
            calls["groupadd"] += 1
            groups[name] = 100000 + len(groups)
        return groups[name]

    def clear_members(name):
        calls["getgrnam"] += 1  # and no gpasswd: no group has members
        return False

    posixgroups.gid_of = counted("getgrnam", groups.get)
    posixgroups.ensure_group = groupadd
    posixgroups.groups_with_prefix = counted(
        "getgrall",  # (by name: what a checkout of 2026-12 iterates for the names alone)
        lambda prefix: {n: SimpleNamespace(gr_gid=gid, gr_mem=[]) for n, gid in groups.items() if n.startswith(prefix)},
    )
    posixgroups.clear_members = clear_members
    posixgroups.is_shared = lambda directory, gid: True
    posixgroups.kill_strays = counted("proc_scan", lambda holders: 0)
    posixgroups.delete_group = lambda name: groups.pop(name, None)
    accounts = SimpleNamespace(owner=counted("getpwnam", lambda name: SimpleNamespace(uid=10000 + int(name[1:]))))

    logger = logging.getLogger("share_sync")
    logger.setLevel(logging.ERROR)
    engine = memory_database()

    @event.listens_for(engine, "before_cursor_execute")
    def statement(conn, cursor, sql, *args):
        calls["statements"] += 1
        calls["writes"] += sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")

    db = Session(engine, expire_on_commit=False)  # as JupyterHub's session
    users = [hub_orm.User(name=f"u{i}") for i in range(300)]
    team = hub_orm.Group(name="team", users=users[250:260])
    db.add_all([*users, team])
    db.commit()
    for i in range(workspaces):
        owner = users[i % 200]
        ws = Workspace(owner=owner, slug=f"w{i}", name=f"w{i}", status="idle", directory=f"/nonexistent/w{i}")
        # (users i + 37, i + 74 and i + 111 of the 200 owners: never the owner)
        levels = {37: "editor", 74: "editor", 111: "viewer"}
        shares = [dict(user=users[(i + k) % 200], level=level) for k, level in levels.items()]
        if i % 10 == 0:
            shares.append(dict(group=team, level="editor"))
        for share in shares:
            db.add(
                Share(workspace=ws, owner_id=owner.id, kind="collaborate", status="accepted", created_by="b", **share)
            )
    db.commit()
    events = EventBus(logger)
    events.attach(db)
    service = collaborate.ShareService(db, accounts, None, events, logger, posix_group_prefix="uws-ws-")
    asyncio.run(service.sync())  # the roles and the groups made
    result: dict = {"tree": tree, "groups": len(groups)}
    for kind in ("whole", "posix"):
        if kind == "posix":
            # the roles' step left out (a checkout's before 2026-12: each workspace's re-made)
            service._sync_roles = lambda ws: None
            service._sync_roles_of = lambda ws_ids, strays=(): False
        seconds = []
        for _ in range(rounds):
            calls.clear()
            start = time.perf_counter()
            asyncio.run(service.sync())
            seconds.append(time.perf_counter() - start)
        result[kind] = seconds
        if kind == "whole":  # the calls of a whole sync
            result["calls"] = {name: calls[name] for name in SYSTEM_CALLS + STATEMENTS}
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workspaces, args.rounds)))
        return
    ensure_venv()
    results = []
    for tree in args.trees.split(","):
        path = str(Path(tree).resolve())
        log(f"timing the share sync of {path} ({args.workspaces} shared workspaces)")
        argv = [sys.executable, __file__, "--child", path, "--workspaces", str(args.workspaces)]
        out = subprocess.run([*argv, "--rounds", str(args.rounds)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout))
    print(machine_line())
    print()
    headers = ["checkout", "whole sync median (fastest) s", "POSIX groups' part median (fastest) s"]
    headers += [f"{name} a sync" for name in SYSTEM_CALLS + STATEMENTS]
    rows = [
        [
            r["tree"],
            *(f"{fmt(statistics.median(r[k]), 3)} ({fmt(min(r[k]), 3)})" for k in ("whole", "posix")),
            *(r["calls"].get(name, "") for name in SYSTEM_CALLS + STATEMENTS),
        ]
        for r in results
    ]
    print(markdown_table(headers, rows))
    out = write_json("share_sync", {"workspaces": args.workspaces, "results": results}, args.json)
    if out:
        log(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
