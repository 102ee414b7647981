"""JupyterHub's spawn limits, as users of JupyterHub expect them on launches.

- ``c.JupyterHub.active_server_limit``: a launch over it is refused at once
  with a 429 and ``Retry-After`` (as JupyterHub's own spawn is), and no job is
  recorded.
- ``c.JupyterHub.concurrent_spawn_limit``: launches are accepted and wait
  ``pending`` until a start slot frees (a queue, not a refusal).
"""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import MULTIUSER_CONFIG

#: a server that starts and never answers: its start holds a slot until it is stopped
HANG_CMD = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture(scope="module")
def limited(make_hub, system_users):
    hub = make_hub(
        MULTIUSER_CONFIG
        + f"c.UWSHub.job_types['hang'] = {{'display_name': 'Never answers', 'cmd': {HANG_CMD!r}}}\n"
        + "c.JupyterHub.active_server_limit = 2\n"
        + "c.JupyterHub.concurrent_spawn_limit = 1\n"
        # reconciler passes while a start holds the slot come quickly (test_spawn_limits)
        + "c.UWSHub.job_reconcile_interval = 0.5\n"
    )
    hub.alice = hub.add_user("uwsalice")
    return hub


def launch(hub, job_type):
    ws = hub.api("POST", "workspaces", hub.alice, json={"name": f"limits {uuid.uuid4().hex[:8]}"}, expect=201)
    return ws, hub.request("POST", f"workspaces/{ws['id']}/jobs", hub.alice, json={"job_type": job_type})


def job_count(hub) -> int:
    return hub.api("GET", "jobs", hub.alice, expect=200)["_pagination"]["total"]


def job_steps(hub) -> float:
    """The reconciler's steps on jobs so far (its metric)."""
    r = hub.request("GET", "/hub/metrics", hub.add_user("uwsadmin", admin=True))
    assert r.status_code == 200, r.text
    return next(
        sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
        if sample.name == "uws_reconciler_steps_total" and sample.labels == {"kind": "job"}
    )


def test_spawn_limits(limited):
    hub = limited
    _, r = launch(hub, "hang")
    assert r.status_code == 202, r.text
    first = hub.wait_job(r.json()["id"], hub.alice, {"queued"})

    # the start slot is taken: the next launch is accepted and waits
    _, r = launch(hub, "minimal")
    assert r.status_code == 202, r.text
    second = r.json()
    assert second["status"] == "pending"

    # two unfinished jobs: a third launch is refused, and nothing is recorded
    before = job_count(hub)
    ws, r = launch(hub, "minimal")
    assert r.status_code == 429, r.text
    # as JupyterHub's spawn throttle suggests: a random 30 to 60 s, so that clients spread out
    retry = r.headers["Retry-After"]
    assert retry.isdigit() and 30 <= int(retry) <= 60
    assert r.json()["message"] == (
        f"The hub runs as many jobs as it may at once (2, c.JupyterHub.active_server_limit);"
        f" try again in {retry} seconds."
    )
    assert job_count(hub) == before
    assert hub.api("GET", f"workspaces/{ws['id']}", hub.alice)["active_job"] is None

    # a few reconciler passes (every 0.5 s) while the first start holds the slot
    time.sleep(2)
    hub.api("POST", f"jobs/{first['id']}/stop", hub.alice, expect=202)
    first = hub.wait_job(first["id"], hub.alice, {"cancelled", "failed"})
    second = hub.wait_job(second["id"], hub.alice, {"running", "failed"})
    assert second["status"] == "running", second["reason"]
    # it started only once the first start had ended
    assert second["queued_at"] > first["stopping_at"]

    # room again: the refused launch can be repeated
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", hub.alice, json={"job_type": "minimal"})
    assert r.status_code == 202, r.text
    for job in (second, r.json()):
        hub.api("POST", f"jobs/{job['id']}/stop", hub.alice)
        hub.wait_job(job["id"], hub.alice, {"completed", "cancelled", "failed"})


def test_launches_waiting_for_a_start_slot_start_in_order(make_hub, system_users):
    """Launches over ``concurrent_spawn_limit`` wait in line, at no cost, and start in the
    order they were made, each as soon as a slot frees; one stopped while waiting leaves
    the line (the one behind it does not wait for it)."""
    hub = make_hub(
        MULTIUSER_CONFIG
        + f"c.UWSHub.job_types['hang'] = {{'display_name': 'Never answers', 'cmd': {HANG_CMD!r}}}\n"
        + "c.JupyterHub.concurrent_spawn_limit = 1\n"
        # no scan during the test: only the line wakes waiting jobs
        + "c.UWSHub.job_reconcile_interval = 3600\n"
    )
    hub.alice = hub.add_user("uwsalice")
    _, r = launch(hub, "hang")
    blocker = hub.wait_job(r.json()["id"], hub.alice, {"queued"})
    waiting = [launch(hub, "minimal")[1].json() for _ in range(4)]
    assert [job["status"] for job in waiting] == ["pending"] * 4
    # waiting costs the hub nothing: the reconciler does not look at them again and again
    steps = job_steps(hub)
    time.sleep(3)
    assert job_steps(hub) - steps < len(waiting)
    # the second in line is stopped while it waits
    hub.api("POST", f"jobs/{waiting[1]['id']}/stop", hub.alice, expect=202)
    assert hub.wait_job(waiting[1]["id"], hub.alice, {"cancelled"})["queued_at"] is None
    hub.api("POST", f"jobs/{blocker['id']}/stop", hub.alice, expect=202)
    started = [hub.wait_job(job["id"], hub.alice, {"running", "failed"}) for job in (waiting[0], *waiting[2:])]
    assert [job["status"] for job in started] == ["running"] * 3, [job["reason"] for job in started]
    # one at a time, in the order of the launches
    queued = [job["queued_at"] for job in started]
    assert queued == sorted(queued)
    for earlier, later in zip(started, started[1:], strict=False):
        assert later["queued_at"] >= earlier["running_at"]
    for job in started:
        hub.api("POST", f"jobs/{job['id']}/stop", hub.alice, expect=202)


def test_max_local_starts_runs_one_local_start_at_a_time(make_hub, system_users):
    """``c.UWSHub.max_local_starts = 1``: of three local launches made at once, one start
    is under way at any moment (from its bookkeeping until its server listens); each
    begins after the one before it runs, and all three run."""
    hub = make_hub(MULTIUSER_CONFIG + "c.UWSHub.max_local_starts = 1\n")
    hub.alice = hub.add_user("uwsalice")
    launched = [launch(hub, "minimal")[1] for _ in range(3)]
    assert [r.status_code for r in launched] == [202] * 3, [r.text for r in launched]
    started = [hub.wait_job(r.json()["id"], hub.alice, {"running", "failed"}) for r in launched]
    assert [job["status"] for job in started] == ["running"] * 3, [job["reason"] for job in started]
    # no two starts overlap: each server's process started (queued) after the one before it ran
    started.sort(key=lambda job: job["queued_at"])
    for earlier, later in zip(started, started[1:], strict=False):
        assert later["queued_at"] >= earlier["running_at"]
    for job in started:
        hub.api("POST", f"jobs/{job['id']}/stop", hub.alice, expect=202)
