"""A local batch job's command, run as its user, tries the hub's resident launcher and its own
wrapper (review3): it holds only its own descriptors, sees only its own environment (no
other job's, none of the hub's), and can neither signal, trace nor read the memory, the
environment or the descriptors of its wrapper or the launcher (root's). These hold on the
code of today: they guard it."""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from ..hubutil import REPO, wait_for

TERMINAL = {"completed", "failed", "cancelled"}


JOB_TYPES = {
    "secret": {
        "interactive": False,
        "cmd": [sys.executable, "-c", "import time; time.sleep(1)"],
        "env": {"SECRET_TEXT": "{text}"},
        "parameters": {"text": {"type": "string", "required": True}},
    },
    "probe": {
        "interactive": False,
        "cmd": [sys.executable, str(REPO / "tests" / "launcher_probe.py")],
    },
}

CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.job_types = {JOB_TYPES!r}
"""


@pytest.fixture(scope="module")
def lhub(make_hub, system_users):
    return make_hub(CONFIG, env={"UWS_REVIEW3_HUB_SECRET": "review3-secret-of-the-hub"})


def test_a_jobs_command_reaches_nothing_of_the_launcher_its_wrapper_or_other_jobs(lhub):
    alice, bob = lhub.add_user("uwsalice"), lhub.add_user("uwsbob")
    spaces = {
        t: lhub.api("POST", "workspaces", t, json={"name": f"l {uuid.uuid4().hex[:8]}"}, expect=201)
        for t in (alice, bob)
    }
    # another user's job, with a secret in its spec, forked by the same launcher just before
    other = lhub.api(
        "POST",
        f"workspaces/{spaces[alice]['id']}/jobs",
        alice,
        json={"job_type": "secret", "parameters": {"text": "review3-secret-of-alice"}},
        expect=202,
    )
    lhub.wait_job(other["id"], alice, {"running"} | TERMINAL)
    probe = lhub.api("POST", f"workspaces/{spaces[bob]['id']}/jobs", bob, json={"job_type": "probe"}, expect=202)
    done = lhub.wait_job(probe["id"], bob, TERMINAL)
    assert done["status"] == "completed", done["reason"]
    ws = spaces[bob]
    with open(lhub.workspaces_root / ws["owner"] / ws["slug"] / "results" / str(probe["id"]) / "probe.json") as f:
        report = json.load(f)
    assert report["uid"] != 0
    # its own descriptors only: stdin /dev/null, its log as stdout and stderr
    assert sorted(report["fds"]) == ["0", "1", "2"], report["fds"]
    assert report["fds"]["0"] == "/dev/null" and report["fds"]["1"] == report["fds"]["2"]
    assert report["fds"]["1"].endswith(f"job-{probe['id']}.log")
    # its own environment: nothing of the hub's, nothing of the other job's
    assert not report["secret_seen"] and "UWS_REVIEW3_HUB_SECRET" not in report["env"]
    assert "SECRET_TEXT" not in report["env"] and "UWS_JOB_WRAPPER" not in report["env"]
    # the wrapper and the launcher are root's: no signal, trace, memory, environment or descriptors
    launcher = report["launcher"]["cmdline"]
    assert launcher[3:5] == [str(REPO / "uws_hub" / "spawners" / "wrapper.py"), "--launcher"], launcher
    for name in ("wrapper", "launcher"):
        assert report[name] | {"cmdline": None} == {
            "signal": "PermissionError",
            "environ": "PermissionError",
            "mem": "PermissionError",
            "fd": "PermissionError",
            "cmdline": None,
        }, (name, report[name])
    wait_for(lambda: lhub.api("GET", f"jobs/{other['id']}", alice)["status"] in TERMINAL, 30, what="the other job")
