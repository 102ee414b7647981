"""Fixtures for uws-hub's tests. Everything here is real: a uws-hub process with
node configurable-http-proxy, single-user servers running as real system
users, SQLite or PostgreSQL.

Fixtures:

- ``db_url``: a function returning a URL of a new, empty database: SQLite in a
  temporary directory, or PostgreSQL when ``UWS_TEST_DB=postgresql`` (the
  server is started by :func:`postgres`).
- ``system_users``: the system accounts the multi-user hub runs jobs as
  (``useradd``), created once per machine.
- ``hub``: the shared multi-user hub (``UWSHub.system_users = True``), for the
  session; ``make_hub`` starts more hubs with other configurations.
- ``group_prefix``: a POSIX group prefix of its own for a module's hub
  (``UWSHub.share_posix_group_prefix``: hubs delete the groups of their prefix
  that are no workspace's), whose groups are deleted after the module;
- ``alice``, ``bob``: tokens of two users created through JupyterHub's own REST
  API, each with a system account of the same name.
- ``slurm``: a single-node SLURM cluster (``scripts/slurm-up.sh up``), started
  once per machine; the SLURM tests skip with the reason when it cannot be
  started (and fail instead when ``UWS_REQUIRE_SLURM`` is set, as in CI).
- ``slurm_time_limits``: a server, a batch job and a UWS job SLURM ends at their
  one-minute time limits, started by the first test that needs them (marked
  ``before_all``: the first of the run) and checked at the end of their modules.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from . import hubutil, slurmutil, uwsclient
from .browserutil import CHROMIUM, CHROMIUM_ARGS
from .helpers import ADMIN_PASSWORD, MULTIUSER_CONFIG, USERS, launch
from .hubutil import BENIGN_ERRORS, REPO, Hub
from .pgutil import PostgresServer
from .slurmutil import start_cluster


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "expect_log_errors(*patterns): ERROR lines (regular expressions) this test provokes on purpose"
    )


#: the last tests' windows: (start, end, allowed ERROR patterns, test id). A hub writes a
#: request's log line just after answering it, so a line can show up after its test
#: ended, once the next one started: it is judged by every test running when it was
#: written or ended at most LATE_LOG_LINE before (a loaded machine delays the write).
_windows: list[tuple[datetime, datetime, list[re.Pattern], str]] = []
LATE_LOG_LINE = timedelta(seconds=5)


@pytest.fixture(autouse=True)
def no_unexpected_hub_errors(request):
    """Fail the test if a hub logged an ERROR during it that is neither benign
    (hubutil.BENIGN_ERRORS) nor expected by the test (``expect_log_errors``)."""
    allowed = [re.compile(p) for p in BENIGN_ERRORS] + [
        re.compile(p) for mark in request.node.iter_markers("expect_log_errors") for p in mark.args
    ]
    start = datetime.now()
    yield
    _windows.append((start, datetime.now(), allowed, request.node.nodeid))
    del _windows[:-50]
    unexpected = []
    for hub in Hub.instances:
        for when, line in hub.new_error_lines():
            # the tests running then, or just ended (the hub logs a request just after answering it)
            windows = [w for w in _windows if w[0] <= when <= w[1] + LATE_LOG_LINE] or [_windows[-1]]
            if not any(p.search(line) for w in windows for p in w[2]):
                window = windows[-1]
                unexpected.append(line if window is _windows[-1] else f"{line}  (during {window[3]})")
    if unexpected:
        pytest.fail("A hub logged unexpected errors:\n" + "\n".join(unexpected[:20]), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the log of each hub that wrote to it during the
    test (its last lines but polls): a CI run's output is all a reader has of a flaky one."""
    report = yield
    if report.when == "call" and report.failed:
        for hub in Hub.instances:
            try:
                written = hub.log_file.stat().st_mtime >= call.start
            except FileNotFoundError:
                written = False
            if written:
                report.sections.append((f"hub log {hub.workdir} (last lines but polls)", hub.log_digest()))
    return report


def pytest_sessionfinish(session):
    hubutil.save_sent()


def pytest_report_header(config):
    return f"uws-hub tests on {os.environ.get('UWS_TEST_DB', 'sqlite')}"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``before_all`` run first (they start what takes long, for later
    tests to check), those marked ``after_all`` last: they check what the others did."""
    first = [item for item in items if item.get_closest_marker("before_all")]
    last = [item for item in items if item.get_closest_marker("after_all")]
    middle = [item for item in items if item not in first and item not in last]
    items[:] = first + middle + last


# ---------------------------------------------------------------- databases
@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    if os.environ.get("UWS_TEST_DB") != "postgresql":
        yield None
        return
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="uws-pg-")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def db_url(postgres, tmp_path_factory):
    def new_db_url() -> str:
        if postgres is not None:
            return postgres.create_database("uws_" + uuid.uuid4().hex[:12])
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'jupyterhub.sqlite'}"

    return new_db_url


# ---------------------------------------------------------------- system users
def _make_traversable(path: Path) -> None:
    """Let other accounts traverse (not list) the directories down to ``path``.

    Jobs run as the users' own accounts and execute the venv's
    jupyterhub-singleuser; a checkout under /root (mode 0700) would hide it.
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


@pytest.fixture(scope="session")
def system_users():
    if os.geteuid() != 0:
        pytest.skip("multi-user tests run jobs as real system users and need root")
    # under a lock: the SQLite and PostgreSQL passes run side by side (make test-databases)
    with open("/tmp/uws-hub-test-users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in USERS:
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    _make_traversable(REPO / ".venv" / "bin")
    # the venv's python may be a symlink into a pyenv under /root
    _make_traversable(Path(os.path.realpath(sys.executable)).parent)
    return USERS


@pytest.fixture(scope="session")
def slurm():
    problem = start_cluster()
    if problem is not None:
        if os.environ.get("UWS_REQUIRE_SLURM"):
            pytest.fail(f"UWS_REQUIRE_SLURM is set but {problem}")
        pytest.skip(f"no SLURM cluster for the SLURM tests: {problem}")
    return True


@pytest.fixture(scope="session")
def slurm_time_limits(make_hub, system_users, slurm):
    """Three jobs SLURM ends at its shortest time limit, one minute, on a hub of their
    own: a server (tests/integration/test_slurm.py), a batch command
    (test_slurm_batch.py) and a UWS job (test_uws_slurm.py). slurmctld checks time
    limits every 30 s (a fixed period, no slurm.conf setting), so each ends 60-90 s
    after it started. Each module checks one, at its end; the tests that check
    them running are marked ``before_all``, so in a full run the three waits
    overlap each other and the whole run instead of adding up, module by module."""
    hub = make_hub(slurmutil.hub_config(slurmutil.TIME_LIMIT_JOB_TYPES))
    hub.for_the_session = True  # made during some module's test, checked by three modules
    user = hub.add_user("uwsalice")
    server = launch(hub, user, resource="slurm", resources={"time_limit": "1"})
    ws = hub.api("POST", "workspaces", user, json={"name": f"time limits {uuid.uuid4().hex[:8]}"}, expect=201)
    batch = hub.api("POST", f"workspaces/{ws['id']}/jobs", user, json={"job_type": "timed"}, expect=202)
    uws = uwsclient.session("uwsalice", user)
    uws_url = uwsclient.create(uws, hub, "sleep", seconds="600", EXECUTIONDURATION="60", PHASE="RUN")
    uws_job = hub.api("GET", f"jobs/{uwsclient.job_id(uws_url)}", user, expect=200)
    running = {}
    for name, job in (("server", server), ("batch", batch), ("uws", uws_job)):
        running[name] = hub.wait_job(job["id"], user, {"running", "completed", "failed", "cancelled"}, timeout=120)
        assert running[name]["status"] == "running", running[name]
    return SimpleNamespace(hub=hub, user=user, uws_session=uws, uws_url=uws_url, **running)


@pytest.fixture(scope="session")
def workspaces_root():
    root = Path(tempfile.mkdtemp(prefix="uws-workspaces-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- hubs
@pytest.fixture(scope="session")
def _hubs(postgres):
    """Every hub the tests made, in order; each is stopped at the end of the scope
    that made it (below), and any still running at the end of the session.

    It depends on ``postgres`` so that the database server stops after the last hub
    (fixtures are torn down in the reverse order of their set-up, and this one, used
    by an autouse fixture, is set up first): a hub whose database went away first
    does not exit on SIGTERM, and waited out :meth:`Hub.stop`'s 30 s."""
    hubs: list[Hub] = []
    yield hubs
    for hub in hubs:
        hub.stop()


def _stop_hubs_made_since(hubs: list[Hub], first: int) -> None:
    for hub in hubs[first:]:
        if not getattr(hub, "for_the_session", False):
            hub.stop()


@pytest.fixture(scope="module", autouse=True)
def _stop_the_modules_hubs(_hubs):
    """A module's hubs (its module-scoped fixtures') stop when the module ends: a
    hub left running idles on, with its proxy, reconciler and servers, and a
    session of over a hundred hubs loads the machine the later tests run on."""
    first = len(_hubs)
    yield
    _stop_hubs_made_since(_hubs, first)


@pytest.fixture(autouse=True)
def _stop_the_tests_hubs(_hubs):
    """Hubs a test makes itself stop when it ends (fixtures of wider scope are set
    up before this one, so their hubs are not among them)."""
    first = len(_hubs)
    yield
    _stop_hubs_made_since(_hubs, first)


def _delete_groups(prefix: str) -> None:
    for line in Path("/etc/group").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name.startswith(prefix):
            subprocess.run(["groupdel", name], check=False)


@pytest.fixture(scope="session")
def make_hub(tmp_path_factory, db_url, workspaces_root, _hubs):
    """Each hub gets a workspaces root and a POSIX group prefix of its own (a config may
    set its own, see ``group_prefix``): a hub deletes the groups of its prefix that
    are no workspace's, and kills the processes that hold them, so two hubs sharing
    the default prefix (two in one session, or runs side by side on one machine)
    would take each other's workspaces' groups and end each other's jobs."""
    hubs = _hubs
    prefixes = []

    def make(config: str, env: dict | None = None, start: bool = True, root: Path | None = None) -> Hub:
        workdir = tmp_path_factory.mktemp("hub")
        ws_root = root or Path(tempfile.mkdtemp(prefix="ws-", dir=workspaces_root))
        ws_root.chmod(0o755)
        prefix = f"uwh{uuid.uuid4().hex[:5]}-"
        prefixes.append(prefix)
        config = (
            f"c.UWSHub.workspaces_root = {str(ws_root)!r}\nc.UWSHub.share_posix_group_prefix = {prefix!r}\n" + config
        )
        hub = Hub(workdir, config, db_url(), env={"UWS_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})})
        hub.workspaces_root = ws_root
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    for prefix in prefixes:
        _delete_groups(prefix)


@pytest.fixture(scope="module")
def group_prefix():
    prefix = f"uwt{uuid.uuid4().hex[:5]}-"
    yield prefix
    _delete_groups(prefix)


@pytest.fixture(scope="session")
def hub(make_hub, system_users):
    shared = make_hub(MULTIUSER_CONFIG)
    shared.for_the_session = True  # made during some module's test, used by many
    return shared


@pytest.fixture(scope="session")
def alice(hub):
    return hub.add_user("uwsalice")


@pytest.fixture(scope="session")
def bob(hub):
    return hub.add_user("uwsbob")


@pytest.fixture
def workspace(hub, alice):
    """A new workspace of alice's, with one seed file."""
    ws = hub.api(
        "POST",
        "workspaces",
        alice,
        json={"name": f"test {uuid.uuid4().hex[:8]}", "files": [{"path": "README.md", "content": "# hello\n"}]},
        expect=201,
    )
    yield ws
    # leave nothing running: stop its job if a test left one
    r = hub.request("GET", f"workspaces/{ws['id']}", alice)
    job = r.json()["active_job"] if r.status_code == 200 else None
    if job:
        hub.api("POST", f"jobs/{job['id']}/stop", alice)
        hub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright, for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
