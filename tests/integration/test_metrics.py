"""uws-hub's Prometheus metrics at JupyterHub's /hub/metrics, on a real hub:
jobs by status, launch latency, workspaces and their disk usage, event
streams; readable with the read:metrics scope only."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from ..helpers import SSEReader, run_job
from ..hubutil import wait_for


def scrape(hub, token) -> dict[tuple[str, tuple], float]:
    r = hub.request("GET", "/hub/metrics", token)
    assert r.status_code == 200, r.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_jobs_and_workspaces(hub, alice):
    admin = hub.add_user("uwsadmin", admin=True)
    before = scrape(hub, admin)
    ws = hub.api("POST", "workspaces", alice, json={"name": f"metrics {uuid.uuid4().hex[:6]}"}, expect=201)
    stream = SSEReader(hub, alice)
    try:
        during = scrape(hub, admin)
        assert value(during, "uws_event_subscribers") == value(before, "uws_event_subscribers") + 1
        job = run_job(hub, alice, ws)
    finally:
        stream.close()
    after = scrape(hub, admin)

    assert hub.api("GET", f"jobs/{job['id']}", alice)["status"] == "completed"
    completed = ("uws_jobs", dict(status="completed", resource="local"))
    assert value(after, completed[0], **completed[1]) == value(before, completed[0], **completed[1]) + 1
    launches = ("uws_job_launch_duration_seconds_count", dict(resource="local"))
    assert value(after, launches[0], **launches[1]) == value(before, launches[0], **launches[1]) + 1
    assert value(after, "uws_job_launch_duration_seconds_sum", resource="local") > value(
        before, "uws_job_launch_duration_seconds_sum", resource="local"
    )
    assert value(after, "uws_workspaces", status="idle") == value(before, "uws_workspaces", status="idle") + 1
    assert ("uws_workspaces_disk_bytes", ()) in after
    # JupyterHub's own metrics are still there
    assert any(name == "jupyterhub_running_servers" for name, _ in after)


def test_metrics_need_the_read_metrics_scope(hub, alice):
    assert hub.request("GET", "/hub/metrics", alice).status_code == 403


def test_event_loop_lag_is_measured(hub):
    """The hub measures how late its event loop runs what is due (the loop-lag probe):
    a count of probes that grows, and their total delay."""
    admin = hub.add_user("uwsadmin", admin=True)
    first = scrape(hub, admin)
    count = value(first, "uws_event_loop_lag_seconds_count")
    assert count >= 1
    wait_for(
        lambda: value(scrape(hub, admin), "uws_event_loop_lag_seconds_count") > count,
        10,
        what="another probe of the event loop",
    )
    assert value(first, "uws_event_loop_lag_seconds_sum") >= 0
