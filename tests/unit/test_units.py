"""Unit tests of uws-hub's own logic, with no hub: state tables, slugs, job type
configuration, seed files, database setup (path safety: test_storage_units.py)."""

from __future__ import annotations

import asyncio

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import event as sa_event

from uws_hub.dbutil import drop_sqlite_ping
from uws_hub.errors import Unprocessable
from uws_hub.handlers.jobs import resources_in_words
from uws_hub.jobs.types import DEFAULT_JOB_TYPES, parse_job_types, pick
from uws_hub.states import (
    IllegalTransition,
    JobStatus,
    WorkspaceStatus,
    check_job_transition,
    check_workspace_transition,
)
from uws_hub.workspaces.service import SeedFile, slugify


@pytest.mark.parametrize(
    "old, new",
    [
        ("pending", "queued"),
        ("queued", "running"),
        ("running", "stopping"),
        ("stopping", "completed"),
        ("pending", "failed"),
        ("queued", "cancelled"),
        ("running", "failed"),
    ],
)
def test_allowed_job_transitions(old, new):
    assert check_job_transition(old, new) == JobStatus(new)


@pytest.mark.parametrize(
    "old, new",
    [
        ("completed", "running"),
        ("failed", "pending"),
        ("cancelled", "stopping"),
        ("running", "queued"),
        ("stopping", "running"),
        ("running", "pending"),
    ],
)
def test_illegal_job_transitions_raise(old, new):
    with pytest.raises(IllegalTransition, match=f"job cannot go from '{old}' to '{new}'"):
        check_job_transition(old, new)


def test_terminal_states_have_no_way_out():
    for status in JobStatus:
        if status.terminal:
            for new in JobStatus:
                with pytest.raises(IllegalTransition):
                    check_job_transition(status, new)


def test_workspace_transitions():
    assert check_workspace_transition("idle", "active") is WorkspaceStatus.active
    assert check_workspace_transition("active", "idle") is WorkspaceStatus.idle
    with pytest.raises(IllegalTransition):
        check_workspace_transition("active", "deleting")
    with pytest.raises(IllegalTransition):
        check_workspace_transition("deleting", "idle")


@pytest.mark.parametrize(
    "name, slug",
    [
        ("My Analysis", "my-analysis"),
        ("  Émile's   data!! ", "emile-s-data"),
        ("Ünïcödé", "unicode"),
        ("x" * 100, "x" * 63),
        ("2026/03 run #4", "2026-03-run-4"),
        ("a--b", "a-b"),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_slugify_refuses_blank_names(name):
    with pytest.raises(Unprocessable, match="blank"):
        slugify(name)


def test_names_without_latin_letters_get_a_stable_slug():
    assert slugify("日本語") == slugify("日本語 ")
    assert slugify("日本語").startswith("ws-") and slugify("日本語") != slugify("中文")


def test_seed_file_decoding():
    assert SeedFile("a", "aGk=", "base64").data() == b"hi"
    assert SeedFile("a", "héllo").data() == "héllo".encode()
    with pytest.raises(Unprocessable):
        SeedFile("a", "not base64!", "base64").data()


def test_default_job_types_parse():
    types = parse_job_types(DEFAULT_JOB_TYPES, ["local"])
    assert types["jupyterlab"].default_url == "/lab"
    job_type, resource = pick(types, "jupyterlab", None)
    assert resource == "local"


@pytest.mark.parametrize(
    "config, words",
    [
        ({}, "empty"),
        ({"Bad Name": {}}, "Bad Name"),
        ({"x": {"cmd": []}}, "cmd"),
        ({"x": {"resources": ["cloud"]}}, "have no spawner"),
        ({"x": {"colour": "red"}}, "colour"),
        ({"x": "jupyterlab"}, "must be a dict"),
    ],
)
def test_bad_job_types_are_refused_at_start(config, words):
    with pytest.raises(ValueError, match=words):
        parse_job_types(config, ["local"])


def test_sqlite_connections_are_not_pinged_before_every_transaction(tmp_path):
    """JupyterHub runs ``SELECT 1`` before every transaction (stale connections on
    PostgreSQL); on SQLite the hub drops that second transaction."""
    sessions = hub_orm.new_session_factory(f"sqlite:///{tmp_path}/hub.sqlite")
    engine = sessions.kw["bind"]
    statements: list[str] = []
    sa_event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: statements.append(statement))

    def one_transaction(name: str) -> list[str]:
        statements.clear()
        with sessions() as db:
            db.add(hub_orm.User(name=name))
            db.commit()
        return [s for s in statements if s.strip().upper().startswith("SELECT 1")]

    assert one_transaction("before")  # JupyterHub's check
    drop_sqlite_ping(engine)
    assert one_transaction("after") == []
    engine.dispose()


def test_the_hub_sets_a_longer_thread_switch_interval():
    """The hub's loop is not made to give Python's interpreter lock to a start's helper
    thread every 5 ms (``UWSHub.thread_switch_interval_seconds``); 0 leaves Python's."""
    import sys

    from uws_hub.app import UWSHub, set_thread_switch_interval

    assert UWSHub.class_traits()["thread_switch_interval_seconds"].default_value == 0.02
    before = sys.getswitchinterval()
    try:
        set_thread_switch_interval(0.02)
        assert sys.getswitchinterval() == pytest.approx(0.02)
        set_thread_switch_interval(0)
        assert sys.getswitchinterval() == pytest.approx(0.02)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), 20.0])
def test_a_thread_switch_interval_out_of_range_is_refused(seconds):
    """Python takes any interval; one past a second (20: milliseconds meant) would let a
    helper thread hold the event loop that long, and an infinite one Python makes 0 (a switch
    at every chance). Refused at the hub's configuration. Failed before: each was taken."""
    from traitlets import TraitError

    from uws_hub.app import UWSHub

    with pytest.raises(TraitError):
        UWSHub(thread_switch_interval_seconds=seconds)


def test_tornado_s_loggers_build_no_record_below_the_hub_s_log_level():
    """JupyterHub hooks tornado's loggers (requests, scope checks) to the hub's and gives them
    its logger's level, DEBUG, whatever ``log_level`` is: every request built a debug and an
    access record that the handlers then dropped. Failed before: DEBUG was enabled at WARN."""
    import logging

    from uws_hub.app import UWSHub

    hub = UWSHub(log_level="WARN")
    hub.init_logging()
    for name in ("tornado.application", "tornado.access"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)


def test_a_jobs_resources_in_words():
    """One helper says what a job asked for on pages; what does not parse is shown as asked."""
    assert resources_in_words(
        {"memory": "1G", "cpus": 1, "gpus": 2, "time_limit": "1-00:00:00", "partition": "short"}
    ) == [
        ("Memory", "1 GiB"),
        ("CPUs", "1 CPU"),
        ("GPUs", "2 GPUs"),
        ("Time limit", "24 h 00 min"),
        ("Partition", "short"),
    ]
    assert resources_in_words({"memory": "1536M", "time_limit": "90"}) == [
        ("Memory", "1536 MiB"),
        ("Time limit", "1 h 30 min"),
    ]
    assert resources_in_words({"memory": "512", "cpus": "lots", "time_limit": "soon"}) == [
        ("Memory", "512 MiB"),
        ("CPUs", "lots"),
        ("Time limit", "soon"),
    ]


def test_reader_slots_are_bounded_per_reader_and_given_back():
    from uws_hub.slots import ReaderSlots

    slots = ReaderSlots(2)
    refusals = []

    def refuse(most):
        refusals.append(most)
        return RuntimeError(f"at most {most}")

    with slots.hold("user:a", refuse), slots.hold("user:a", refuse):
        with pytest.raises(RuntimeError, match="at most 2"):
            with slots.hold("user:a", refuse):
                pass
        with slots.hold("user:b", refuse):  # another reader's own
            assert slots.held == {"user:a": 2, "user:b": 1}
    # given back however the block ended, and readers holding none are not kept
    with pytest.raises(ValueError), slots.hold("user:a", refuse):
        raise ValueError
    assert slots.held == {} and refusals == [2]
    # or whether a slot was taken, for a request with another answer than a refusal
    with slots.hold("user:a", refuse), slots.try_hold("user:a") as first, slots.try_hold("user:a") as second:
        assert (first, second, slots.held) == (True, False, {"user:a": 2})
    assert slots.held == {}


async def test_file_threads_are_bounded_per_reader_and_wait_in_line():
    """One reader holding all its file threads (a hung disk) waits behind its own calls;
    another reader's call runs at once. A thread counts until its call ends, even once
    the request that waited for it is gone."""
    import threading

    from uws_hub.filethreads import FileThreads

    threads = FileThreads(4, 2)
    gate = threading.Event()
    started = []

    def hung(name):
        started.append(name)
        gate.wait(60)
        return name

    held = [asyncio.ensure_future(threads.run("user:a", hung, f"a{i}")) for i in range(2)]
    for _ in range(3000):
        if len(started) == 2:
            break
        await asyncio.sleep(0.01)
    # a third call of a's waits in line (not started), b's runs beside a's two
    waiting = asyncio.ensure_future(threads.run("user:a", hung, "a2"))
    assert await threads.run("user:b", lambda: "b") == "b"
    assert not waiting.done() and started == ["a0", "a1"]
    # a's request gone: its thread still runs, so a's line stays as long
    held[0].cancel()
    await asyncio.gather(held[0], return_exceptions=True)
    await asyncio.sleep(0.1)
    assert started == ["a0", "a1"]
    gate.set()
    assert await waiting == "a2" and await held[1] == "a1"
    assert threads._lines == {} and threads._calls == {}  # readers holding none are not kept


async def test_a_full_line_of_file_threads_refuses_at_once():
    """With ``waiting``, a reader's calls past its threads and that many waiting are refused
    at once (:class:`LineFull`), not queued (the password checks' pool: a flood of logins
    is answered, not kept waiting); the line takes calls again as they end."""
    import threading

    from uws_hub.filethreads import FileThreads, LineFull

    threads = FileThreads(3, 2, waiting=1, name="uws-test")
    gate = threading.Event()
    started = []

    def hung(name):
        started.append(threading.current_thread().name)
        gate.wait(60)
        return name

    calls = [asyncio.ensure_future(threads.run("passwords", hung, i)) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(LineFull):
        await threads.run("passwords", hung, 3)
    assert await threads.run("other", lambda: "other") == "other"  # another reader's line is its own
    gate.set()
    assert await asyncio.gather(*calls) == [0, 1, 2]
    assert await threads.run("passwords", hung, 4) == 4
    assert started and all(name.startswith("uws-test") for name in started)
    assert threads._calls == {}


async def test_file_work_of_a_request_is_its_readers():
    """A service's file work counts on the reader of the request being served
    (:func:`uws_hub.filethreads.serve`); the hub's own work, served for no one, runs in
    the default pool."""
    import contextvars
    import threading

    from uws_hub import filethreads

    threads = filethreads.FileThreads(4, 1)

    def name():
        return threading.current_thread().name

    assert not (await filethreads.in_file_thread(name)).startswith("uws-files")

    async def request():
        filethreads.serve(threads, "user:a")
        return await filethreads.in_file_thread(name)

    assert (await asyncio.get_running_loop().create_task(request(), context=contextvars.copy_context())).startswith(
        "uws-files"
    )
    assert not (await filethreads.in_file_thread(name)).startswith("uws-files")  # (set in the request's task only)


def test_a_resources_uid_from_before_is_its_accounts_now_or_unknown():
    """A job's resource from before uids were recorded is taken over or released as its
    launcher's account's uid now (see ``JobService.resource_uid``); a launcher with no
    account now (deleted) leaves it unknown rather than failing the job's end."""
    import logging
    import os
    import pwd
    from types import SimpleNamespace

    from uws_hub.accounts.system import SystemAccounts
    from uws_hub.jobs.service import JobService

    # any account a user's may be (a uid from 1, not nobody's)
    account = next(a for a in pwd.getpwall() if 1 <= a.pw_uid < 65534)

    def job(name, uid=None):
        return SimpleNamespace(id=1, resource_id="5", resource_uid=uid, launcher=SimpleNamespace(name=name))

    def service(system_users):
        accounts = SystemAccounts(system_users=system_users, min_uid=1)
        return SimpleNamespace(accounts=accounts, log=logging.getLogger("test"))

    assert JobService.resource_uid(service(True), job("nobody-here", uid=1234)) == 1234  # recorded
    assert JobService.resource_uid(service(True), job(account.pw_name)) == account.pw_uid  # its account's now
    assert JobService.resource_uid(service(False), job("anyone")) == os.geteuid()  # the hub's own
    assert JobService.resource_uid(service(True), job("nobody-here-r22")) is None  # no account now
