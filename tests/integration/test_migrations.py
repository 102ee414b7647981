"""Database migrations: an older database is upgraded by `uws-hub upgrade-db`
without losing anything; the hub refuses to start on one that was not."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from jupyterhub import orm as hub_orm
from sqlalchemy import create_engine, inspect, text

from uws_hub import dbutil

from ..helpers import OLD_TIME, create_jupyterhub_tables, launch, make_old_database, upgrade_db
from ..hubutil import VENV_BIN, Hub, hub_env


def test_upgrade_db_upgrades_an_old_database(db_url, tmp_path):
    url = db_url()
    make_old_database(url)
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)

    # the hub will not start on it, and says what to do
    r = subprocess.run(
        [str(VENV_BIN / "uws-hub"), "-f", str(hub.config_file)],
        cwd=tmp_path,
        env=hub_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "uws-hub upgrade-db" in r.stdout + r.stderr

    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, description, disk_usage_bytes FROM uws_workspaces")).one()
        assert tuple(row) == ("Old workspace", "from before", 5000000000)
        assert conn.execute(text("SELECT count(*) FROM uws_local_accounts")).scalar() == 0
    engine.dispose()

    # and now it starts, with the old workspace in the API
    hub.start()
    try:
        token = hub.add_user("olduser")
        [ws] = hub.api("GET", "workspaces", token, expect=200)["items"]
        assert (ws["name"], ws["slug"], ws["disk_usage_bytes"]) == ("Old workspace", "old-ws", 5000000000)
    finally:
        hub.stop()


def test_migrations_match_the_models(db_url):
    """Running every migration gives exactly the tables the code declares."""
    url = db_url()
    create_jupyterhub_tables(url)
    engine = create_engine(url)
    dbutil.prepare(engine, allow_upgrade=False, log=logging.getLogger("test"))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": dbutil.include_name})
        diffs = compare_metadata(context, dbutil.TARGET_METADATA)
    engine.dispose()
    assert diffs == []


def test_upgrade_from_0004_reserves_disk_space_in_the_new_table(db_url, tmp_path):
    """0005 adds the disk space held by writes in progress; an upgraded hub reserves there."""
    url = db_url()
    directory = tmp_path / "workspaces" / "olduser" / "old-ws"
    directory.mkdir(parents=True)
    (directory / "old.bin").write_bytes(b"o" * 900)
    uid = make_old_database(url, "0004", str(directory), 900)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_quota_overrides (user_id, disk_bytes, updated_by, updated_at)"
                " VALUES (:uid, 1000, 'admin', :now)"
            ),
            {"uid": uid, "now": OLD_TIME},
        )
    engine.dispose()
    hub = Hub(
        tmp_path,
        f"c.Authenticator.admin_users = set()\nc.UWSHub.workspaces_root = {str(directory.parents[1])!r}\n",
        url,
    )
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM uws_disk_reservations")).scalar() == 0
    engine.dispose()

    hub.start()
    try:
        token = hub.add_user("olduser")
        [ws] = hub.api("GET", "workspaces", token, expect=200)["items"]
        assert hub.request("PUT", f"workspaces/{ws['id']}/files/new.bin", token, data=b"n" * 100).status_code == 201
        r = hub.request("PUT", f"workspaces/{ws['id']}/files/more.bin", token, data=b"m")
        assert r.status_code == 422 and "over by 1 byte" in r.json()["message"], r.text
    finally:
        hub.stop()


def test_upgrade_cuts_job_output_out_of_reasons(db_url):
    """Before 0006 a failed job's reason carried its server's last output (secrets
    included) to everyone who could read the job; the upgrade leaves the reason."""
    url = db_url()
    uid = create_jupyterhub_tables(url, user="olduser")
    engine = create_engine(url)
    dbutil.upgrade(engine, "0005")
    now = datetime(2026, 1, 1)
    leaky = "The server exited with status 1\n--- last output ---\nJUPYTERHUB_API_TOKEN=0123456789abcdef"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_workspaces (id, owner_id, slug, name, description, status, directory,"
                " disk_usage_bytes, created_at, updated_at)"
                " VALUES (1, :uid, 'ws', 'ws', '', 'idle', '/nonexistent/olduser/ws', 0, :now, :now)"
            ),
            {"uid": uid, "now": now},
        )
        for job_id, reason in ((1, leaky), (2, "Stopped on request")):
            conn.execute(
                text(
                    "INSERT INTO uws_jobs (id, workspace_id, owner_id, job_type, resource, interactive, status,"
                    " target, reason, server_name, resources, created_at, updated_at, attempts)"
                    " VALUES (:id, 1, :uid, 'jupyterlab', 'local', true, 'failed', 'stopped', :reason, 'ws',"
                    " '{}', :now, :now, 1)"
                ),
                {"id": job_id, "uid": uid, "reason": reason, "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO uws_events (created_at, kind, owner_id, workspace_id, job_id, actor, status,"
                    " reason, data) VALUES (:now, 'job', :uid, 1, :id, 'hub', 'failed', :reason, '{}')"
                ),
                {"id": job_id, "uid": uid, "reason": reason, "now": now},
            )
    dbutil.upgrade(engine)
    with engine.connect() as conn:
        jobs = dict(conn.execute(text("SELECT id, reason FROM uws_jobs")).all())
        events = dict(conn.execute(text("SELECT job_id, reason FROM uws_events")).all())
    engine.dispose()
    expected = {1: "The server exited with status 1", 2: "Stopped on request"}
    assert jobs == expected
    assert events == expected


def test_upgrade_to_batch_jobs_keeps_jobs_interactive(db_url, tmp_path):
    """0009 adds batch jobs' columns: earlier jobs stay interactive, with no parameters,
    and a workspace's unfinished interactive job still excludes a second one."""
    url = db_url()
    uid = make_old_database(url, "0008")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_jobs (workspace_id, owner_id, job_type, resource, interactive, status, target,"
                " server_name, resources, created_at, updated_at, attempts)"
                " VALUES (1, :uid, 'jupyterlab', 'local', true, 'failed', 'stopped', 'old-ws', '{}', :now, :now, 1)"
            ),
            {"uid": uid, "now": OLD_TIME},
        )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT parameters, exit_code, submitted_at, log_path FROM uws_jobs")).one()
    engine.dispose()
    assert tuple(row)[1:] == (None, None, None) and row[0] in ({}, "{}")
    hub.start()
    try:
        token = hub.add_user("olduser")
        [job] = hub.api("GET", "jobs", token, expect=200)["items"]
        assert (job["interactive"], job["parameters"], job["exit_code"], job["results"]) == (True, None, None, None)
    finally:
        hub.stop()


def test_upgrade_to_job_destruction_keeps_jobs_as_they_were(db_url, tmp_path):
    """0010 adds run ids, destruction times and archiving: an earlier batch job has none of
    them, keeps its parameters, and shows in the UWS interface as it ended."""
    url = db_url()
    uid = make_old_database(url, "0009")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_jobs (workspace_id, owner_id, job_type, resource, interactive, status, target,"
                " server_name, resources, parameters, exit_code, created_at, updated_at, attempts)"
                " VALUES (1, :uid, 'echo', 'local', false, 'completed', 'stopped', 'old-ws', '{}',"
                ' \'{"text": "old"}\', 0, :now, :now, 1)'
            ),
            {"uid": uid, "now": OLD_TIME},
        )
    engine.dispose()
    config = (
        "c.Authenticator.admin_users = set()\n"
        "c.UWSHub.job_types = {'echo': {'interactive': False, 'cmd': ['echo', '{text}'],"
        " 'parameters': {'text': {'type': 'string'}}}}\n"
    )
    hub = Hub(tmp_path, config, url)
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT run_id, destroy_at, archived_at FROM uws_jobs")).one()
    engine.dispose()
    assert tuple(row) == (None, None, None)
    hub.start()
    try:
        token = hub.add_user("olduser")
        [job] = hub.api("GET", "jobs", token, expect=200)["items"]
        assert (job["parameters"], job["run_id"], job["destroy_at"], job["archived_at"]) == (
            {"text": "old"},
            None,
            None,
            None,
        )
        r = hub.request("GET", f"{hub.url}/hub/api/uws/echo/{job['id']}/phase", token)
        assert (r.status_code, r.text) == (200, "COMPLETED")
    finally:
        hub.stop()


def test_upgrade_to_notification_state_leaves_notifications_unread(db_url, tmp_path):
    """0011 adds when a notification was read and dismissed: the ones from before are unread."""
    url = db_url()
    uid = make_old_database(url, "0010")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_events (created_at, kind, owner_id, actor, reason, data)"
                " VALUES (:now, 'notification', :uid, 'hub', 'Your copy is ready', :data)"
            ),
            {"uid": uid, "now": OLD_TIME, "data": '{"subject": "Copy ready", "link": null}'},
        )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    hub.start()
    try:
        token = hub.add_user("olduser")
        [note] = hub.api("GET", "notifications?unread=true", token, expect=200)["items"]
        assert (note["reason"], note["read_at"], note["dismissed_at"]) == ("Your copy is ready", None, None)
        hub.api("POST", f"notifications/{note['id']}/read", token, expect=200)
        assert hub.api("GET", "notifications?unread=true", token, expect=200)["items"] == []
    finally:
        hub.stop()


def test_upgrade_to_the_workspace_created_index_keeps_the_api_order(db_url, tmp_path):
    """0012 indexes when workspaces were made (the API's default order): the workspaces from
    before keep their rows and their order, and a page is read through the index."""
    url = db_url()
    uid = make_old_database(url, "0011")
    engine = create_engine(url)
    with engine.begin() as conn:
        for i, day in enumerate((3, 1, 2)):
            conn.execute(
                text(
                    "INSERT INTO uws_workspaces (owner_id, slug, name, description, status, target, directory,"
                    " disk_usage_bytes, created_at, updated_at)"
                    " VALUES (:uid, :slug, :name, '', 'idle', 'ready', :dir, 0, :made, :made)"
                ),
                {
                    "uid": uid,
                    "slug": f"ws-{i}",
                    "name": f"Workspace {i}",
                    "dir": f"/nowhere/ws-{i}",
                    "made": datetime(2026, 1, day),
                },
            )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("uws_workspaces")}
    assert indexes["ix_uws_workspaces_created_at"] == ["created_at", "id"]
    engine.dispose()
    hub.start()
    try:
        token = hub.add_user("olduser")
        items = hub.api("GET", "workspaces", token, expect=200)["items"]
        assert [w["slug"] for w in items if w["slug"].startswith("ws-")] == ["ws-1", "ws-2", "ws-0"]
    finally:
        hub.stop()


@pytest.mark.parametrize(
    "before, new_indexes",
    [
        (
            "0015",
            {
                "ix_uws_jobs_workspace_id_status": ["workspace_id", "status"],
                "ix_uws_jobs_status_interactive_submitted_at": ["status", "interactive", "submitted_at"],
            },
        ),
        ("0017", {"ix_uws_jobs_owner_id_interactive_status": ["owner_id", "interactive", "status"]}),
    ],
)
def test_upgrade_to_the_jobs_indexes_keeps_the_jobs(db_url, tmp_path, before, new_indexes):
    """0016 indexes the jobs by workspace and status (every end of a job asks whether its
    workspace has another unfinished one) and by status, kind and hand-over (the fair
    queue counts the slots held); 0018 by owner, kind and status (every batch launch
    counts its owner's unfinished batch jobs): the jobs from before keep their rows, and
    the hub answers for them."""
    url = db_url()
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    dbutil.upgrade(engine, before)
    with engine.begin() as conn:
        ws_id = _new_workspace(conn, uid, "ws-a")
        jobs = [_new_job(conn, uid, ws_id), _new_job(conn, uid, ws_id)]
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("uws_jobs")}
    assert {name: indexes.get(name) for name in new_indexes} == new_indexes
    engine.dispose()
    hub.start()
    try:
        token = hub.add_user("olduser")
        listed = hub.api("GET", "jobs", token, expect=200)["items"]
        assert sorted((j["id"], j["status"]) for j in listed if j["workspace_id"] == ws_id) == [
            (job, "completed") for job in jobs
        ]
    finally:
        hub.stop()


def test_upgrade_to_the_kept_core_hours_counts_the_jobs_from_before(db_url, tmp_path):
    """0019 keeps the run time of users' ended jobs (a launch's core-hour check read every
    job of the period): after the upgrade from 0018, the jobs that ran before count as
    they did (their real run time × cpus in the period, none of an earlier one), and a
    launch over the quota is refused."""
    url = db_url()
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    dbutil.upgrade(engine, "0018")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        ws_id = _new_workspace(conn, uid, "ws-a")
        ran = [
            # 2 cpus for 30 minutes (this month: the quota's period)
            (now - timedelta(minutes=40), now - timedelta(minutes=10), '{"cpus": 2}'),
            # 1 cpu for 45 minutes
            (now - timedelta(minutes=50), now - timedelta(minutes=5), "{}"),
            # a job of a month before: it counts for none
            (now - timedelta(days=70), now - timedelta(days=69), '{"cpus": 8}'),
        ]
        for running_at, finished_at, resources in ran:
            job = _new_job(conn, uid, ws_id)
            conn.execute(
                text("UPDATE uws_jobs SET running_at = :r, finished_at = :f, resources = :res WHERE id = :id"),
                {"r": running_at, "f": finished_at, "res": resources, "id": job},
            )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\nc.UWSHub.quota_core_hours = 1.5\n", url)
    upgrade_db(hub)
    hub.start()
    try:
        token = hub.add_user("olduser")
        usage = hub.api("GET", "quotas/olduser", token, expect=200)["usage"]
        assert usage["core_hours"] * 3600 == 2 * 30 * 60 + 45 * 60
        r = launch(hub, token, job_type="jupyterlab", expect=None)
        assert r.status_code == 422 and r.json()["message"].startswith("Core-hour quota: your jobs used 1.75"), r.text
    finally:
        hub.stop()


def test_upgrade_to_the_jobs_resource_uid_keeps_old_jobs_followed_by_id(db_url, tmp_path):
    """0017 records the uid a job's resource runs as (SLURM gives a forgotten job's id to
    another account's job, which is then not the hub's): the jobs from before have none
    (followed by their id alone, as before) and keep their resource's id."""
    url = db_url()
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    dbutil.upgrade(engine, "0016")
    with engine.begin() as conn:
        ws_id = _new_workspace(conn, uid, "ws-a")
        job = _new_job(conn, uid, ws_id)
        conn.execute(text("UPDATE uws_jobs SET resource_id = '4242' WHERE id = :id"), {"id": job})
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT resource_id, resource_uid FROM uws_jobs WHERE id = :id"), {"id": job}).one()
    assert tuple(row) == ("4242", None)
    engine.dispose()
    hub.start()
    try:
        token = hub.add_user("olduser")
        [listed] = [j for j in hub.api("GET", "jobs", token, expect=200)["items"] if j["id"] == job]
        assert (listed["status"], listed["resource_id"]) == ("completed", "4242")
    finally:
        hub.stop()


def test_upgrade_to_job_launchers_keeps_old_jobs_the_owners(db_url, tmp_path):
    """0013 records who launched a job (whose account it runs as): the jobs from before have
    none and count as their workspace owner's, in the database and in the API."""
    url = db_url()
    uid = make_old_database(url, "0012")
    engine = create_engine(url)
    with engine.begin() as conn:
        for status in ("completed", "failed"):
            conn.execute(
                text(
                    "INSERT INTO uws_jobs (workspace_id, owner_id, job_type, resource, interactive, status, target,"
                    " server_name, resources, parameters, created_at, updated_at, attempts)"
                    " VALUES (1, :uid, 'jupyterlab', 'local', true, :status, 'stopped', 'old-ws', '{}', '{}',"
                    " :now, :now, 1)"
                ),
                {"uid": uid, "status": status, "now": OLD_TIME},
            )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT launcher_id FROM uws_jobs")).scalars().all() == [None, None]
    [fk] = [fk for fk in inspect(engine).get_foreign_keys("uws_jobs") if fk["constrained_columns"] == ["launcher_id"]]
    assert (fk["referred_table"], fk["options"].get("ondelete")) == ("users", "SET NULL")
    engine.dispose()
    hub.start()
    try:
        token = hub.add_user("olduser")
        jobs = hub.api("GET", "jobs", token, expect=200)["items"]
        assert [(j["status"], j["owner"], j["launcher"]) for j in jobs] == [
            ("failed", "olduser", "olduser"),
            ("completed", "olduser", "olduser"),
        ]
    finally:
        hub.stop()


def test_upgrade_to_the_stored_last_use_keeps_the_pages_order(db_url, tmp_path):
    """0014 stores when each workspace was last used (its latest job's launch, else its making),
    indexed: the workspaces from before get it from their jobs, and keep their "last used" order."""
    url = db_url()
    uid = make_old_database(url, "0012")
    engine = create_engine(url)
    # (slug, made on day, jobs launched on days): last used on days 6, 4, 3, 5
    rows = (("ws-a", 2, (6, 3)), ("ws-b", 3, ()), ("ws-c", 1, (4,)), ("ws-d", 5, ()))
    with engine.begin() as conn:
        for slug, made, launches in rows:
            ws_id = conn.execute(
                text(
                    "INSERT INTO uws_workspaces (owner_id, slug, name, description, status, target, directory,"
                    " disk_usage_bytes, created_at, updated_at)"
                    " VALUES (:uid, :slug, :slug, '', 'idle', 'ready', :dir, 0, :made, :made) RETURNING id"
                ),
                {"uid": uid, "slug": slug, "dir": f"/nowhere/{slug}", "made": datetime(2026, 1, made)},
            ).scalar_one()
            for day in launches:
                conn.execute(
                    text(
                        "INSERT INTO uws_jobs (workspace_id, owner_id, job_type, resource, interactive, status,"
                        " target, server_name, resources, created_at, updated_at, attempts)"
                        " VALUES (:ws, :uid, 'jupyterlab', 'local', true, 'completed', 'stopped', :slug, '{}',"
                        " :day, :day, 1)"
                    ),
                    {"ws": ws_id, "uid": uid, "slug": slug, "day": datetime(2026, 1, day, 12)},
                )
    engine.dispose()
    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("uws_workspaces")}
    assert indexes["ix_uws_workspaces_last_used_at"] == ["last_used_at", "id"]
    engine.dispose()
    hub.start()
    try:
        token = hub.add_user("olduser")
        items = hub.api("GET", "workspaces?sort=last_used", token, expect=200)["items"]
        assert [(w["slug"], w["last_used_at"]) for w in items] == [
            ("ws-a", "2026-01-06T12:00:00Z"),
            ("ws-d", "2026-01-05T00:00:00Z"),
            ("ws-c", "2026-01-04T12:00:00Z"),
            ("ws-b", "2026-01-03T00:00:00Z"),
            ("old-ws", "2026-01-01T00:00:00Z"),
        ]
    finally:
        hub.stop()


def _insert(conn, uid, sql, **values) -> int:
    return conn.execute(text(sql + " RETURNING id"), {"uid": uid, "now": OLD_TIME, **values}).scalar_one()


def _new_workspace(conn, uid, slug) -> int:
    return _insert(
        conn,
        uid,
        "INSERT INTO uws_workspaces (owner_id, slug, name, description, status, target, directory,"
        " disk_usage_bytes, created_at, updated_at, last_used_at)"
        " VALUES (:uid, :slug, :slug, '', 'idle', 'ready', :dir, 0, :now, :now, :now)",
        slug=slug,
        dir=f"/nowhere/{slug}",
    )


def _new_job(conn, uid, ws) -> int:
    return _insert(
        conn,
        uid,
        "INSERT INTO uws_jobs (workspace_id, owner_id, job_type, resource, interactive, status, target,"
        " server_name, resources, parameters, created_at, updated_at, attempts)"
        " VALUES (:ws, :uid, 'jupyterlab', 'local', true, 'completed', 'stopped', 'ws', '{}', '{}', :now, :now, 1)",
        ws=ws,
    )


def _new_share(conn, uid, ws) -> int:
    return _insert(
        conn,
        uid,
        "INSERT INTO uws_shares (workspace_id, owner_id, kind, level, user_id, status, created_by, created_at,"
        " updated_at, copy_attempts) VALUES (:ws, :uid, 'collaborate', 'viewer', :uid, 'accepted', 'olduser',"
        " :now, :now, 0)",
        ws=ws,
    )


def _new_event(conn, uid, ws=None, job=None, data="{}") -> int:
    return _insert(
        conn,
        uid,
        "INSERT INTO uws_events (created_at, kind, owner_id, workspace_id, job_id, actor, data)"
        " VALUES (:now, 'job', :uid, :ws, :job, 'hub', :data)",
        ws=ws,
        job=job,
        data=data,
    )


def _schema(engine) -> dict:
    """Each uws-hub table's columns, indexes (with their SQL on SQLite: partial ones' WHERE),
    unique constraints and foreign keys."""
    found = {}
    inspector = inspect(engine)
    for table in ("uws_workspaces", "uws_jobs", "uws_shares", "uws_events"):
        found[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
            sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)),
            sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                for f in inspector.get_foreign_keys(table)
            ),
        )
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            found["sqlite indexes"] = sorted(
                conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE '%uws_%'"))
            )
    return found


def test_upgrade_to_ids_never_reused(db_url, tmp_path):
    """0015: ids of workspaces, jobs, shares and events are never handed out twice (SQLite gave a
    new row the highest id plus one, so deleting the newest rows handed their ids out again, and
    a new job or workspace inherited the old one's files, roles and group). The rows from before
    are kept, and on SQLite the ids the database still names (in events, a workspace's roles)
    are not reused either."""
    url = db_url()
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    dbutil.upgrade(engine, "0014")

    with engine.begin() as conn:
        kept = _new_workspace(conn, uid, "kept")
        newest = _new_workspace(conn, uid, "newest")
        kept_job = _new_job(conn, uid, kept)
        newest_jobs = [_new_job(conn, uid, newest), _new_job(conn, uid, newest)]
        kept_share = _new_share(conn, uid, kept)
        newest_share = _new_share(conn, uid, newest)
        events = [_new_event(conn, uid, newest, job) for job in newest_jobs]
    before = _schema(engine)
    # 0015 alone keeps the tables as they were (on SQLite it rebuilds them); later
    # revisions change them further, so the schema is compared at 0015
    dbutil.upgrade(engine, "0015")
    assert _schema(engine) == before
    engine.dispose()

    hub = Hub(tmp_path, "c.Authenticator.admin_users = set()\n", url)
    upgrade_db(hub)
    engine = create_engine(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, slug FROM uws_workspaces ORDER BY id")).all()[1:] == [
            (kept, "kept"),
            (newest, "newest"),
        ]
        assert conn.execute(text("SELECT id, workspace_id FROM uws_jobs ORDER BY id")).all() == [
            (kept_job, kept),
            *((job, newest) for job in newest_jobs),
        ]
        assert conn.execute(text("SELECT id FROM uws_shares ORDER BY id")).scalars().all() == [kept_share, newest_share]
        assert conn.execute(text("SELECT id FROM uws_events ORDER BY id")).scalars().all() == events

        # the newest go
        for table, column in (("uws_jobs", "workspace_id"), ("uws_shares", "workspace_id"), ("uws_workspaces", "id")):
            conn.execute(text(f"DELETE FROM {table} WHERE {column} = :id"), {"id": newest})
        conn.execute(text("DELETE FROM uws_events"))
        again = _new_workspace(conn, uid, "again")
        assert again > newest
        assert _new_job(conn, uid, again) > newest_jobs[-1]
        assert _new_share(conn, uid, again) > newest_share
        assert _new_event(conn, uid) > events[-1]
    engine.dispose()


@pytest.mark.parametrize("named_workspaces", [(17, 15, 12), (7, 17, 12), (7, 15, 17)])
def test_upgrade_to_ids_never_reused_skips_ids_the_database_still_names(tmp_path, named_workspaces):
    """On SQLite, 0015 starts the ids after the highest one still named: a job or workspace in an
    event, a workspace by its roles (dropped in the background) or a copy, a share in an event."""
    url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    dbutil.upgrade(engine, "0014")
    with engine.begin() as conn:
        in_event, copied_to, with_roles = named_workspaces
        kept_event = _new_event(conn, uid, ws=in_event, job=40, data='{"share_id": 30}')
        conn.execute(text("DELETE FROM uws_events WHERE id = :id"), {"id": _new_event(conn, uid)})  # named nowhere
        copy = _new_share(conn, uid, 1)
        conn.execute(
            text("UPDATE uws_shares SET copy_workspace_id = :ws WHERE id = :id"), {"ws": copied_to, "id": copy}
        )
        conn.execute(
            text("INSERT INTO roles (name, description, scopes, managed_by_auth) VALUES (:name, '', '[]', false)"),
            [{"name": f"uws-ws-{with_roles}-editor"}, {"name": "uws-ws-11-viewer"}, {"name": "user"}],
        )
    dbutil.upgrade(engine)
    with engine.begin() as conn:
        assert dict(conn.execute(text("SELECT name, seq FROM sqlite_sequence WHERE name LIKE 'uws_%'")).all()) == {
            "uws_workspaces": 17,
            "uws_jobs": 40,
            "uws_shares": 30,
            "uws_events": kept_event,
        }
    engine.dispose()


def test_upgrade_with_the_hubs_foreign_keys_keeps_jobs_and_shares(db_url):
    """``JupyterHub.upgrade_db`` upgrades through JupyterHub's engine, which turns SQLite's
    foreign keys on: recreating the workspaces' table (SQLite's way to alter one: 0014, 0015)
    dropped the old one, and with it every job and share (``ON DELETE CASCADE``)."""
    url = db_url()
    uid = make_old_database(url, "0013")
    engine = create_engine(url)
    with engine.begin() as conn:
        _new_job(conn, uid, 1)
        _new_share(conn, uid, 1)
    engine.dispose()
    db = hub_orm.new_session_factory(url)()  # the hub's session, engine and all
    hub_engine = db.get_bind()
    try:
        dbutil.prepare(hub_engine, allow_upgrade=True, log=logging.getLogger("test"))
        with hub_engine.connect() as conn:
            counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("uws_jobs", "uws_shares")]
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again
    finally:
        db.close()
        hub_engine.dispose()
    assert counts == [1, 1]
