"""Identity over time: names, accounts, ids and grants that change.

A user deleted while their workspaces' servers run; sign-up with system users;
a deleted or renamed owner's share roles; a new account of a former one's name
and its SLURM output; an upload under way when its editor is revoked; a hub on
a new database with an earlier hub's job logs. A real hub with system users;
tests that change an account make a throwaway one (``useradd``), since the
lanes of the suite run side by side.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from .. import slurmutil
from ..authutil import login
from ..helpers import MULTIUSER_CONFIG, launch
from ..hubutil import wait_for

ENDED = {"completed", "failed", "cancelled"}
SLURM = {"interactive": False, "resources": ["slurm"], "default_resources": {"cpus": 1, "memory": "128M"}}
PASSWORD = "a long password for tests"


@pytest.fixture
def throwaway(system_users):
    name = f"uwsid{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    yield name
    subprocess.run(["pkill", "-KILL", "-u", name], check=False)
    subprocess.run(["userdel", "--remove", name], check=False)


def test_a_user_whose_server_runs_is_not_deleted_half_way(hub, throwaway):
    """JupyterHub cannot delete a server that runs, and its delete of the user failed on
    one (a 500) after it had deleted the user's local account: the user stayed, with their
    workspaces and server, and nobody could log in as them any more. Refused first (409,
    saying which jobs), the delete changes nothing; once the server has ended it is done."""
    hub.api("POST", "accounts", json={"username": throwaway, "password": PASSWORD}, expect=201)
    token = hub.api("POST", f"users/{throwaway}/tokens", json={"note": "test"}, expect=201)["token"]
    job = launch(hub, token)
    assert hub.wait_job(job["id"], token, {"running"} | ENDED, timeout=60)["status"] == "running"
    r = hub.request("DELETE", f"users/{throwaway}", hub.admin_token)
    assert r.status_code == 409, r.text
    assert r.json()["message"] == (
        f"{throwaway}'s jobs that have not ended: 1 (ids {job['id']}); stop or cancel them first, then delete the user."
    )
    # nothing of the user went: the account, the user, the server
    assert hub.api("GET", f"accounts/{throwaway}", expect=200)["username"] == throwaway
    assert hub.api("GET", f"jobs/{job['id']}", token, expect=200)["status"] == "running"
    # a caller who may not delete users learns nothing of them or their jobs
    for caller in (token, None):
        assert hub.request("DELETE", f"users/{throwaway}", caller).status_code in (403, 404)
    hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
    hub.wait_job(job["id"], token, ENDED, timeout=60)
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert hub.request("GET", f"accounts/{throwaway}", hub.admin_token).status_code == 404
    assert hub.request("GET", f"users/{throwaway}", hub.admin_token).status_code == 404


def test_a_user_whose_batch_job_runs_is_not_deleted_under_it(make_hub, throwaway):
    """A user's jobs go with them (``ON DELETE CASCADE``): a local batch job's process ran
    on as their account, unseen by the hub, writing its log where the deletion had just
    set it aside. Refused (409, saying which jobs), the delete changes nothing: the job
    runs on, its log in its place; once it has ended, the user and its log go."""
    hub = make_hub(
        MULTIUSER_CONFIG
        + 'c.UWSHub.job_types["sleeper"] = {"interactive": False, "cmd": ["sh", "-c", "echo started; exec sleep 600"]}\n'
    )
    token = hub.add_user(throwaway)
    job = launch(hub, token, job_type="sleeper")
    assert hub.wait_job(job["id"], token, {"running"} | ENDED, timeout=60)["status"] == "running"
    log = hub.workdir / "uws-job-logs" / f"job-{job['id']}.log"
    wait_for(lambda: log.exists() and log.read_text() == "started\n", 30, what="the job's output")
    r = hub.request("DELETE", f"users/{throwaway}", hub.admin_token)
    assert r.status_code == 409, r.text
    assert r.json()["message"] == (
        f"{throwaway}'s jobs that have not ended: 1 (ids {job['id']}); stop or cancel them first, then delete the user."
    )
    assert hub.api("GET", f"jobs/{job['id']}", token, expect=200)["status"] == "running"
    sleeping = subprocess.run(["pgrep", "-u", throwaway, "-x", "sleep"], capture_output=True, text=True)
    assert sleeping.stdout.split(), "the job's process is gone"
    assert log.read_text() == "started\n"
    assert not list((hub.workspaces_root / ".deleted").glob(f"*-{throwaway}-*"))
    hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
    assert hub.wait_job(job["id"], token, ENDED, timeout=60)["status"] == "cancelled"
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert hub.request("GET", f"users/{throwaway}", hub.admin_token).status_code == 404
    assert not os.path.lexists(log)
    (entry,) = [p for p in (hub.workspaces_root / ".deleted").iterdir() if f"-{throwaway}-" in p.name]
    assert (entry / "job-logs" / log.name).read_text() == "started\n"


GATED_DELETE = """
import asyncio, os
from uws_hub.authenticators.local import WorkspaceLocalAuthenticator

class GatedDelete(WorkspaceLocalAuthenticator):
    \"\"\"Deletes a user's account once the test opens the gate (a file it makes).\"\"\"

    async def delete_user(self, user):
        open({entered!r}, "w").close()
        while not os.path.exists({gate!r}):
            await asyncio.sleep(0.05)
        return super().delete_user(user)

c.JupyterHub.authenticator_class = GatedDelete
"""


@contextmanager
def delete_held_at_gate(hub, name: str, entered: Path, gate: Path, where: str) -> Iterator[list[requests.Response]]:
    """``DELETE /hub/api/users/<name>`` in a thread, held while in this where the hub's
    configuration gates it (it makes ``entered``, then waits for ``gate``); its answer
    is in the list once out."""
    answered: list[requests.Response] = []
    deleting = threading.Thread(target=lambda: answered.append(hub.request("DELETE", f"users/{name}", hub.admin_token)))
    deleting.start()
    try:
        wait_for(entered.exists, 30, what=f"the delete to reach {where}")
        yield answered
    finally:
        gate.touch()
        deleting.join(60)


def test_nothing_is_made_for_a_user_while_they_are_being_deleted(make_hub, throwaway, tmp_path):
    """A user's delete is refused while a job of theirs runs, then awaits JupyterHub's
    delete (their servers' stops, the authenticator) before its commit: a job launched
    meanwhile (by them, by an editor in their workspace, by them as an editor elsewhere)
    ran on untracked once its row went with them, a workspace made then was left on disk,
    of their uid. Till the delete has finished, each is a 409, and nothing of theirs is left."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    hub = make_hub(MULTIUSER_CONFIG + GATED_DELETE.format(entered=str(entered), gate=str(gate)))
    token, bob = hub.add_user(throwaway), hub.add_user("uwsbob")
    mine = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    bobs = hub.api("POST", "workspaces", bob, json={"name": "bobs"}, expect=201)
    hub.api("POST", f"workspaces/{mine['id']}/shares", token, json={"user": "uwsbob", "level": "editor"}, expect=201)
    hub.api("POST", f"workspaces/{bobs['id']}/shares", bob, json={"user": throwaway, "level": "editor"}, expect=201)
    hub.api("POST", f"groups/{throwaway}-team", json={"users": [throwaway]}, expect=201)
    engine = create_engine(hub.db_url)
    with engine.connect() as db:
        user_id = db.scalar(text("SELECT id FROM users WHERE name = :n"), {"n": throwaway})

    with delete_held_at_gate(hub, throwaway, entered, gate, "the authenticator") as answered:
        attempts = [
            ("POST", f"workspaces/{mine['id']}/jobs", token, {"json": {"job_type": "echo"}}),
            ("POST", f"workspaces/{mine['id']}/jobs", bob, {"json": {"job_type": "echo"}}),  # an editor's
            ("POST", f"workspaces/{bobs['id']}/jobs", token, {"json": {"job_type": "echo"}}),  # as an editor
            ("POST", f"users/{throwaway}/servers/{mine['slug']}", hub.admin_token, {}),  # JupyterHub's start
            ("POST", "workspaces", token, {"json": {"name": "another"}}),
            ("PUT", f"workspaces/{mine['id']}/files/data.txt", token, {"data": b"results"}),
            ("PUT", f"workspaces/{mine['id']}/files/data.txt", bob, {"data": b"results"}),
            # shares by them, to them and to a group of theirs (their roles), a copy sent either way
            ("POST", f"workspaces/{mine['id']}/shares", token, {"json": {"user": "uwsbob", "level": "viewer"}}),
            ("POST", f"workspaces/{bobs['id']}/shares", bob, {"json": {"user": throwaway, "level": "viewer"}}),
            (
                "POST",
                f"workspaces/{bobs['id']}/shares",
                bob,
                {"json": {"group": f"{throwaway}-team", "level": "viewer"}},
            ),
            ("POST", f"workspaces/{mine['id']}/shares", token, {"json": {"user": "uwsbob", "kind": "copy"}}),
            ("POST", f"workspaces/{bobs['id']}/shares", bob, {"json": {"user": throwaway, "kind": "copy"}}),
            # a rename: their deletion lists their jobs' HOME by their name, left under the old one
            ("PATCH", f"users/{throwaway}", hub.admin_token, {"json": {"name": f"{throwaway}x"}}),
        ]
        for method, path, caller, kw in attempts:
            r = hub.request(method, path, caller, **kw)
            assert (r.status_code, r.json().get("message")) == (409, f"{throwaway} is being deleted"), (path, r.text)
        # others' own work goes on
        hub.api("POST", f"workspaces/{bobs['id']}/jobs", bob, json={"job_type": "echo"}, expect=202)
    assert answered[0].status_code == 204, answered[0].text
    with engine.connect() as db:
        for query in (
            "SELECT count(*) FROM uws_jobs WHERE owner_id = :u OR launcher_id = :u",
            "SELECT count(*) FROM uws_workspaces WHERE owner_id = :u",
            "SELECT count(*) FROM uws_jobs WHERE workspace_id = :w",
        ):
            assert db.scalar(text(query), {"u": user_id, "w": bobs["id"]}) == (1 if ":w" in query else 0), query
        assert db.scalar(text("SELECT count(*) FROM users WHERE name LIKE :n"), {"n": f"{throwaway}%"}) == 0
    engine.dispose()
    assert not list((hub.workspaces_root / throwaway).glob("*"))
    (entry,) = [p for p in (hub.workspaces_root / ".deleted").iterdir() if f"-{throwaway}-" in p.name]
    assert os.listdir(entry / "workspaces") == [mine["slug"]]
    assert os.listdir(entry / "workspaces" / mine["slug"]) == []


def test_no_one_being_deleted_joins_a_group(make_hub, throwaway, tmp_path):
    """A group's members get the roles (and POSIX group) of the workspaces shared with it at
    the next share sync: a user added to such a group while they were being deleted got them
    during the delete. Adding them (to a group, or in a group made with them) is a 409 till
    the delete has finished; others join, and a member being deleted leaves, as before."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    hub = make_hub(MULTIUSER_CONFIG + GATED_DELETE.format(entered=str(entered), gate=str(gate)))
    hub.add_user(throwaway)
    bob = hub.add_user("uwsbob")
    hub.add_user("uwscarol")
    ws = hub.api("POST", "workspaces", bob, json={"name": "bobs"}, expect=201)
    hub.api("POST", "groups/uwsteam", json={"users": ["uwsbob"]}, expect=201)
    hub.api("POST", "groups/uwsleaving", json={"users": [throwaway]}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", bob, json={"group": "uwsteam", "level": "viewer"}, expect=201)

    with delete_held_at_gate(hub, throwaway, entered, gate, "the authenticator") as answered:
        for path, body in (
            ("groups/uwsteam/users", {"users": ["uwscarol", throwaway]}),
            (f"groups/{throwaway}-new", {"users": [throwaway]}),
            ("groups", {"groups": [f"{throwaway}-new"], "users": [throwaway]}),
        ):
            r = hub.request("POST", path, hub.admin_token, json=body)
            assert (r.status_code, r.json().get("message")) == (409, f"{throwaway} is being deleted"), (path, r.text)
        team = hub.api("POST", "groups/uwsteam/users", json={"users": ["uwscarol"]}, expect=200)
        assert team["users"] == ["uwsbob", "uwscarol"]
        leaving = hub.api("DELETE", "groups/uwsleaving/users", json={"users": [throwaway]}, expect=200)
        assert leaving["users"] == []
    assert answered[0].status_code == 204, answered[0].text
    assert hub.api("GET", "groups/uwsteam", expect=200)["users"] == ["uwsbob", "uwscarol"]
    assert hub.request("GET", f"groups/{throwaway}-new", hub.admin_token).status_code == 404


GATED_SET_ASIDE = """
import os, time
from uws_hub.workspaces.former import FormerUsers

_put_away = FormerUsers.put_away

def gated_put_away(self, leftovers):
    \"\"\"Sets a deleted user's data aside once the test opens the gate (a file it makes).\"\"\"
    open({entered!r}, "w").close()
    while not os.path.exists({gate!r}):
        time.sleep(0.05)
    return _put_away(self, leftovers)

FormerUsers.put_away = gated_put_away
"""


def test_a_deleted_users_name_is_given_to_no_one_till_what_they_left_is_set_aside(make_hub, throwaway, tmp_path):
    """What a deletion lists by the user's name (their workspaces' folders, their jobs' HOME)
    is moved after its commit: a user of the name made meanwhile (their system account
    given the freed uid), or another renamed to it, had what was still there. The name is
    held till the delete has answered: a 409 (a new user, a rename to it); then it is free."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    hub = make_hub(MULTIUSER_CONFIG + GATED_SET_ASIDE.format(entered=str(entered), gate=str(gate)))
    token = hub.add_user(throwaway)
    hub.add_user("uwsbob")
    hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    with delete_held_at_gate(hub, throwaway, entered, gate, "the set-aside") as answered:
        for method, path, body in (
            ("POST", f"users/{throwaway}", {}),
            ("POST", "users", {"usernames": [throwaway]}),
            ("PATCH", "users/uwsbob", {"name": throwaway}),
            ("POST", "accounts", {"username": throwaway, "password": PASSWORD}),  # its hub user made too
        ):
            r = hub.request(method, path, hub.admin_token, json=body)
            assert (r.status_code, r.json().get("message")) == (409, f"{throwaway} is being deleted"), (path, r.text)
    assert answered[0].status_code == 204, answered[0].text
    assert hub.api("GET", "users/uwsbob", hub.admin_token, expect=200)["name"] == "uwsbob"
    hub.api("POST", f"users/{throwaway}", hub.admin_token, json={}, expect=201)


GATED_COPY = """
import os, time
from uws_hub.sharing import copies

_copy_tree = copies.copy_tree

def gated_copy_tree(*args):
    \"\"\"Copies a workspace once the test opens the gate (a file it makes).\"\"\"
    open({entered!r}, "w").close()
    while not os.path.exists({gate!r}):
        time.sleep(0.05)
    return _copy_tree(*args)

copies.copy_tree = gated_copy_tree
"""


def test_an_owner_is_not_deleted_while_a_copy_of_their_workspace_is_made(make_hub, throwaway, tmp_path):
    """A copy reads its source's folder while it runs: the owner's delete meanwhile set
    that folder aside under it. The delete is a 409 that says why till the copy is made."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    hub = make_hub(MULTIUSER_CONFIG + GATED_COPY.format(entered=str(entered), gate=str(gate)))
    token, bob = hub.add_user(throwaway), hub.add_user("uwsbob")
    ws = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    hub.api("PUT", f"workspaces/{ws['id']}/files/data.txt", token, data=b"results", expect=201)
    invite = hub.api(
        "POST", f"workspaces/{ws['id']}/shares", token, json={"kind": "copy", "user": "uwsbob"}, expect=201
    )
    try:
        hub.api("POST", f"shares/{invite['id']}/accept", bob, expect=202)
        wait_for(entered.exists, 30, what="the copy to start")
        r = hub.request("DELETE", f"users/{throwaway}", hub.admin_token)
        assert r.status_code == 409, r.text
        assert r.json()["message"] == (
            f"A copy of {throwaway}'s workspace 'research' is being made: delete the user once it is done"
        )
    finally:
        gate.touch()

    def done():
        (share,) = [s for s in hub.api("GET", "shares?status=accepted", bob)["items"] if s["id"] == invite["id"]]
        return share if share["copy"]["state"] in ("done", "failed") else None

    share = wait_for(done, 30, what="the copy")
    assert share["copy"]["state"] == "done", share["copy"]["error"]
    copy = hub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200)
    assert hub.request("GET", f"workspaces/{copy['id']}/files/data.txt", bob).content == b"results"
    hub.api("DELETE", f"users/{throwaway}", expect=204)


STAYS_IN_THE_DIRECTORY = """
from uws_hub.authenticators.local import WorkspaceLocalAuthenticator

class StaysInTheDirectory(WorkspaceLocalAuthenticator):
    \"\"\"Keeps a deleted user's account, as a directory or an identity provider does.\"\"\"

    def delete_user(self, user):
        pass

c.JupyterHub.authenticator_class = StaysInTheDirectory
"""


def test_no_one_logs_in_as_a_user_being_deleted(make_hub, throwaway, tmp_path):
    """A login makes the hub user of a name it does not know (JupyterHub's
    ``auth_to_user``, whatever the authenticator): a person whom a directory or an
    identity provider still knew, logging in while their user's deletion set aside what
    it had left, was a new user of the name, who had it. Till the delete has answered, a
    login as the name is refused (a 409 that says why), and no user is made; then it logs in."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    hub = make_hub(
        MULTIUSER_CONFIG + GATED_SET_ASIDE.format(entered=str(entered), gate=str(gate)) + STAYS_IN_THE_DIRECTORY
    )
    hub.api("POST", "accounts", json={"username": throwaway, "password": PASSWORD}, expect=201)
    token = hub.add_user(throwaway)
    hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    engine = create_engine(hub.db_url)
    with delete_held_at_gate(hub, throwaway, entered, gate, "the set-aside") as answered:
        refused = login(hub, throwaway, PASSWORD)
        assert refused.response.status_code == 409, refused.response.text
        assert f"{throwaway} is being deleted" in refused.response.text
        with engine.connect() as db:
            assert db.scalar(text("SELECT count(*) FROM users WHERE name = :n"), {"n": throwaway}) == 0
    engine.dispose()
    assert answered[0].status_code == 204, answered[0].text
    assert login(hub, throwaway, PASSWORD).ok
    assert hub.api("GET", f"users/{throwaway}", hub.admin_token, expect=200)["name"] == throwaway


def test_sign_up_gives_nobody_a_system_account_without_an_admin(make_hub, throwaway):
    """With system users a hub user is the system account of its name: one that has no
    hub user (a deleted user's, whose files and home stay; a colleague's who never used
    the hub) went to whoever signed up with its name first, at once when sign-up needed
    no approval. There sign-up waits for an admin's approval all the same, and says so."""
    hub = make_hub(
        MULTIUSER_CONFIG
        + "c.WorkspaceLocalAuthenticator.allow_signup = True\n"
        + "c.WorkspaceLocalAuthenticator.signup_requires_approval = False\n"
    )
    assert (
        "With UWSHub.system_users, sign-up waits for an admin's approval"
        " (WorkspaceLocalAuthenticator.signup_requires_approval)" in hub.log_text()
    )
    s = requests.Session()
    s.get(hub.url + "/hub/signup", timeout=30)
    form = {"username": throwaway, "password": PASSWORD, "password2": PASSWORD}
    r = s.post(hub.url + "/hub/signup", data={**form, "_xsrf": s.cookies.get("_xsrf", path="/hub/")}, timeout=60)
    assert r.status_code == 201, r.text
    assert "An administrator must enable it before you can sign in." in r.text
    assert not login(hub, throwaway, PASSWORD).ok
    assert hub.api("GET", f"accounts/{throwaway}", expect=200)["disabled"] is True


@pytest.mark.parametrize("same_uid", [False, True], ids=["another uid", "the same uid"])
def test_a_new_account_of_a_former_ones_name_gets_none_of_its_slurm_output(make_hub, throwaway, slurm, same_uid):
    """A SLURM job's output goes to its account's own folder of the job log directory,
    named after the account. An account deleted and made again for someone else found
    the folder handed to it, with the first account's jobs' output (which outlives the hub
    user, deleted with their jobs' rows). The folder is set aside now, root's only (it
    stayed the first account's uid, which a new account of that uid entered by its
    name), and the new account gets a new one; also when the new account has the
    uid of the former (``useradd`` gives the highest free uid, often the one just freed),
    which owned the folder for the hub before (it compared uids). (The hub user's jobs'
    output itself is set aside at their deletion, see the next tests.)"""
    config = slurmutil.hub_config({"hello": {**SLURM, "cmd": ["echo", "the first one's output"]}})
    log_dir = re.search(r"c\.UWSHub\.job_log_dir = '([^']+)'", config).group(1)
    folder = Path(log_dir) / "slurm" / throwaway
    hub = make_hub(config)
    first_uid = pwd.getpwnam(throwaway).pw_uid
    token = hub.add_user(throwaway)
    job = batch_on_slurm(hub, token)
    assert f"job-{job['id']}.log" in os.listdir(folder)
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    subprocess.run(["userdel", throwaway], check=True)
    second_uid = (
        first_uid if same_uid else next(u for u in range(first_uid + 1000, first_uid + 2000) if not uid_taken(u))
    )
    subprocess.run(["useradd", "-u", str(second_uid), "--shell", "/bin/bash", throwaway], check=True)
    token = hub.add_user(throwaway)
    second = batch_on_slurm(hub, token)
    assert os.stat(folder).st_uid == second_uid
    assert os.listdir(folder) == [f"job-{second['id']}.log"]
    aside = folder.parent / f".former-uid{first_uid}-{throwaway}"
    assert os.stat(aside).st_uid == 0 and os.stat(aside).st_mode & 0o777 == 0o700
    # (its first job's output went with the hub user, where only root reads it)
    assert os.listdir(aside) == []
    assert [p.name for p in hub.workspaces_root.glob(f".deleted/*-{throwaway}-*/job-logs/*")] == [
        f"job-{job['id']}.log"
    ]
    whose = "the hub user " if same_uid else f"uid {first_uid}, not to {throwaway} (uid {second_uid})"
    assert f"The output folder {folder} belonged to {whose}" in hub.log_text()
    subprocess.run(["rm", "-rf", str(aside)], check=False)


def batch_on_slurm(hub, token) -> dict:
    ws = hub.api("POST", "workspaces", token, json={"name": f"on slurm {uuid.uuid4().hex[:6]}"}, expect=201)
    job = hub.api(
        "POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "hello", "resource": "slurm"}, expect=202
    )
    job = hub.wait_job(job["id"], token, ENDED, timeout=120)
    assert job["status"] == "completed", job
    return job


def test_an_editors_slurm_output_in_anothers_workspace_is_set_aside_with_them(make_hub, throwaway, slurm):
    """An editor's SLURM job runs as their account, its output in their account's folder,
    of their uid; the job stays with the owner's workspace when the editor is deleted, and
    its output stayed where it was (the next account of that uid's), for good: only jobs
    the deleted user owned had theirs set aside."""
    config = slurmutil.hub_config({"hello": {**SLURM, "cmd": ["echo", "the editor's output"]}})
    log_dir = re.search(r"c\.UWSHub\.job_log_dir = '([^']+)'", config).group(1)
    hub = make_hub(config)
    owner = hub.add_user("uwsbob")
    editor = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", owner, json={"name": f"shared {uuid.uuid4().hex[:6]}"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": throwaway, "level": "editor"}, expect=201)
    job = hub.api(
        "POST", f"workspaces/{ws['id']}/jobs", editor, json={"job_type": "hello", "resource": "slurm"}, expect=202
    )
    assert hub.wait_job(job["id"], editor, ENDED, timeout=120)["status"] == "completed"
    log = Path(log_dir) / "slurm" / throwaway / f"job-{job['id']}.log"
    assert os.stat(log).st_uid == pwd.getpwnam(throwaway).pw_uid
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert not os.path.lexists(log)
    (entry,) = [p for p in (hub.workspaces_root / ".deleted").iterdir() if f"-{throwaway}-" in p.name]
    assert (entry / "job-logs" / log.name).read_text() == "the editor's output\n"
    # the job stays, with the owner's workspace
    assert hub.api("GET", f"jobs/{job['id']}", owner, expect=200)["workspace_id"] == ws["id"]


def uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_deleted_owners_shares_grant_nothing_of_a_new_user_of_the_name(hub, throwaway, bob):
    """A share is a JupyterHub role named after the workspace's id, whose scopes name its
    server by its owner's name and slug (``access:servers!server=<owner>/<slug>``, which
    JupyterHub's login to the server takes). Deleting the owner deleted the shares with
    the workspace, but left the roles until the next share sync (300 s by default):
    meanwhile a new user of the name, with a workspace of the same slug, had its server
    open to the first owner's collaborators. The roles go with the user, in its commit."""
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "shared"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": "uwsbob", "level": "editor"}, expect=201)
    server = f"access:servers!server={throwaway}/{ws['slug']}"
    assert server in hub.api("GET", "user", bob, expect=200)["scopes"]
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    hub.add_user(throwaway)
    assert not [s for s in hub.api("GET", "user", bob, expect=200)["scopes"] if throwaway in s]
    assert not [r for r in hub.api("GET", "users/uwsbob", expect=200)["roles"] if r.endswith(f"-{ws['id']}-editor")]


def test_a_deleted_users_workspaces_and_job_logs_are_set_aside_for_root(hub, throwaway):
    """A user's workspaces and jobs go with them, their folders and job logs stayed where
    they were, owned by their uid: the next account given that uid (``useradd`` gives
    freed uids again) held them, and a new user of the name had workspaces made beside
    them. At the deletion they go to ``<workspaces root>/.deleted/``, which only root
    enters, and a new user of the name starts with nothing of theirs."""
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    folder = hub.workspaces_root / throwaway / ws["slug"]
    fresh = hub.api("GET", f"workspaces/{ws['id']}/files", token, expect=200)["items"]
    hub.api("PUT", f"workspaces/{ws['id']}/files/data.txt", token, data=b"results", expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "echo"}, expect=202)
    assert hub.wait_job(job["id"], token, ENDED, timeout=60)["status"] == "completed"
    log = hub.workdir / "uws-job-logs" / f"job-{job['id']}.log"
    assert log.read_text() == "hello\n"
    assert os.stat(folder).st_uid == pwd.getpwnam(throwaway).pw_uid

    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert not os.path.lexists(folder) and not os.path.lexists(log)
    deleted = hub.workspaces_root / ".deleted"
    (entry,) = [p for p in deleted.iterdir() if re.fullmatch(rf"\d+-{throwaway}-\d{{8}}T[\d.]+Z", p.name)]
    for path in (deleted, entry, entry / "workspaces" / ws["slug"]):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700), path
    assert (entry / "workspaces" / ws["slug"] / "data.txt").read_bytes() == b"results"
    assert (entry / "job-logs" / f"job-{job['id']}.log").read_text() == "hello\n"
    assert not [p for p in deleted.iterdir() if p.name.endswith(".pending")]
    assert f"Set aside what the deleted user {throwaway} (id {entry.name.split('-')[0]}) left" in hub.log_text()

    token = hub.add_user(throwaway)
    again = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    assert again["slug"] == ws["slug"]
    assert hub.api("GET", f"workspaces/{again['id']}/files", token, expect=200)["items"] == fresh
    hub.api("DELETE", f"users/{throwaway}", expect=204)


@pytest.mark.parametrize("name", ["u" * 230, "学" * 100], ids=["230 letters", "100 Chinese characters"])
def test_a_user_of_a_long_name_can_be_deleted(hub, name):
    """The record of what a user leaves (``<id>-<name>-<time>.pending``) is made in the
    deletion's commit: a name longer than about 220 bytes made it longer than a file's
    name may be, and every deletion of the user failed (a 500), for good."""
    hub.api("POST", f"users/{name}", expect=201)
    hub.api("DELETE", f"users/{name}", expect=204)
    hub.api("GET", f"users/{name}", expect=404)


def test_a_socket_a_job_left_for_its_log_stops_neither_the_set_aside_nor_the_hub(make_hub, throwaway):
    """A job may replace its log by a Unix socket (a SLURM job's log folder is its
    account's). With the job logs on another file system than the workspaces, the
    set-aside opened it to copy it, which failed (ENXIO): it stopped there, and the hub,
    which finishes an unfinished set-aside at its start, failed to start, every time."""
    logs = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        hub = make_hub(MULTIUSER_CONFIG + f"c.UWSHub.job_log_dir = {str(logs)!r}\n")
        if os.stat(logs).st_dev == os.stat(hub.workspaces_root).st_dev:
            pytest.skip("/dev/shm is on the file system of the workspaces here")
        token = hub.add_user(throwaway)
        ws = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
        job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "echo"}, expect=202)
        assert hub.wait_job(job["id"], token, ENDED, timeout=60)["status"] == "completed"
        log = logs / f"job-{job['id']}.log"
        log.unlink()
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(log))
        hub.api("DELETE", f"users/{throwaway}", expect=204)
        sock.close()
        deleted = hub.workspaces_root / ".deleted"
        assert not os.path.lexists(log) and not list(deleted.glob("*.pending"))
        (entry,) = [p for p in deleted.iterdir() if f"-{throwaway}-" in p.name]
        assert (entry / "workspaces" / ws["slug"]).is_dir()
        hub.stop()
        hub.start()
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def test_a_deleted_users_data_is_removed_when_the_admins_say_so(make_hub, throwaway):
    """``c.UWSHub.deleted_users_data = "remove"``: out of the way at the deletion, as when
    set aside, then removed (nothing of theirs left anywhere)."""
    hub = make_hub(MULTIUSER_CONFIG + 'c.UWSHub.deleted_users_data = "remove"\n')
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "research"}, expect=201)
    hub.api("PUT", f"workspaces/{ws['id']}/files/data.txt", token, data=b"results", expect=201)
    folder = hub.workspaces_root / throwaway / ws["slug"]
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert not os.path.lexists(folder)
    deleted = hub.workspaces_root / ".deleted"
    # the log line follows the removal: wait for both
    removed = f"Removed what the deleted user {throwaway} (id "
    wait_for(lambda: not list(deleted.iterdir()) and removed in hub.log_text(), 30, what="the removal")


def test_a_deleted_workspaces_job_logs_go_with_it(hub, throwaway):
    """A workspace's jobs go with it (``ON DELETE CASCADE``), their logs stayed on disk
    (a SLURM job's in its account's folder, owned by its uid) after everything that named
    them was gone: nothing set them aside or removed them, ever after."""
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "short-lived"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "echo"}, expect=202)
    assert hub.wait_job(job["id"], token, ENDED, timeout=60)["status"] == "completed"
    log = hub.workdir / "uws-job-logs" / f"job-{job['id']}.log"
    assert log.exists()
    hub.api("DELETE", f"workspaces/{ws['id']}", token, expect=202)
    wait_for(lambda: hub.request("GET", f"workspaces/{ws['id']}", token).status_code == 404, 30, what="the deletion")
    assert not os.path.lexists(log)
    hub.api("DELETE", f"users/{throwaway}", expect=204)


def upload_while(hub, ws, token, meanwhile) -> requests.Response:
    """``PUT`` a file into ``ws`` with ``token``, doing ``meanwhile()`` once the hub has
    authorized the upload and begun it (its temporary file is in the workspace) and before
    the body ends; the answer, after the temporary file is gone."""
    directory = hub.workspaces_root / "uwsalice" / ws["slug"]
    go_on = threading.Event()

    def body():
        yield b"written by the editor, "
        assert go_on.wait(60)
        yield b"placed after the revocation"

    result: dict = {}

    def upload():
        result["response"] = hub.request(
            "PUT", f"workspaces/{ws['id']}/files/late.txt", token, data=body(), headers={"Content-Type": "text/plain"}
        )

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        wait_for(lambda: any(p.name.startswith(".uws-upload-") for p in directory.iterdir()), 30, what="the upload")
        meanwhile()
    finally:
        go_on.set()
        thread.join(60)
    wait_for(lambda: not any(p.name.startswith(".uws-upload-") for p in directory.iterdir()), 30, what="the cleanup")
    return result["response"]


def test_an_upload_under_way_places_nothing_once_its_editor_is_revoked(hub, alice, bob, workspace):
    """An upload is authorized before its body is read, and its body takes as long as the
    uploader likes: an editor whose share was revoked meanwhile had the file placed in the
    workspace after the revocation. The upload is checked again before it is placed."""
    ws = workspace
    share = hub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201
    )
    revoke = lambda: hub.api("DELETE", f"workspaces/{ws['id']}/shares/{share['id']}", alice, expect=200)  # noqa: E731
    response = upload_while(hub, ws, bob, revoke)
    assert response.status_code == 404, response.text
    assert not (hub.workspaces_root / "uwsalice" / ws["slug"] / "late.txt").exists()


def test_an_upload_under_way_places_nothing_once_its_token_is_deleted(hub, alice, workspace):
    """The token an upload was authorized with, deleted before its body ended (a leaked
    token its owner revokes), placed the file: the upload's caller is looked up again."""
    ws = workspace
    hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    minted = hub.api("POST", "users/uwsbob/tokens", json={"note": "leaked"}, expect=201)
    delete = lambda: hub.api("DELETE", f"users/uwsbob/tokens/{minted['id']}", expect=204)  # noqa: E731
    response = upload_while(hub, ws, minted["token"], delete)
    assert response.status_code == 403, response.text
    assert response.json()["message"].startswith("Your credentials ended while the file was sent")
    assert not (hub.workspaces_root / "uwsalice" / ws["slug"] / "late.txt").exists()


def test_a_renamed_owners_shares_follow_the_new_name_at_once(hub, throwaway, bob):
    """An admin renames a user (JupyterHub's ``PATCH /hub/api/users/{name}``): the roles of
    their shared workspaces named the server by the old name until the next share sync,
    so a new user of the old name with a workspace of the same slug had its server open
    to the renamed owner's collaborators meanwhile (and those lost the renamed owner's).
    The roles follow the rename in its commit."""
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "shared"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": "uwsbob", "level": "viewer"}, expect=201)
    renamed = f"{throwaway}x"
    hub.api("PATCH", f"users/{throwaway}", json={"name": renamed}, expect=200)
    try:
        scopes = hub.api("GET", "user", bob, expect=200)["scopes"]
        assert f"access:servers!server={renamed}/{ws['slug']}" in scopes
        assert not [s for s in scopes if f"={throwaway}/" in s]
    finally:
        hub.api("DELETE", f"users/{renamed}", expect=204)


def test_a_hub_on_a_new_database_shows_no_earlier_jobs_output_as_its_jobs(make_hub, throwaway):
    """Job ids are never reused in one database, but a hub started on a new one with the
    job log directory of an earlier hub numbers its jobs from 1 again, and a local job
    appended its output to the file of the earlier job of its id (someone else's), which
    its owner read as their job's log and output. A job's first start makes them anew."""
    hub = make_hub(MULTIUSER_CONFIG, start=False)
    logs = hub.workdir / "uws-job-logs"
    logs.mkdir(mode=0o711)
    for n in range(1, 3):
        (logs / f"job-{n}.log").write_text(f"the output of an earlier job {n}, someone else's\n")
        (logs / f"job-{n}.exit").write_text('{"exit_code": 7}')
    hub.start()
    token = hub.add_user(throwaway)
    ws = hub.api("POST", "workspaces", token, json={"name": "fresh"}, expect=201)
    batch = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "echo"}, expect=202)
    batch = hub.wait_job(batch["id"], token, ENDED, timeout=60)
    assert (batch["id"], batch["status"], batch["exit_code"]) == (1, "completed", 0), batch
    assert hub.request("GET", "jobs/1/log", token).text == "hello\n"
    server = launch(hub, token, job_type="broken")  # a server that prints, then exits
    server = hub.wait_job(server["id"], token, ENDED, timeout=60)
    assert server["id"] == 2
    output = hub.api("GET", "jobs/2/output", token, expect=200)
    assert "earlier job" not in json.dumps(output) and "boom: the server cannot start" in json.dumps(output)


def test_a_deleted_users_servers_slurm_output_is_set_aside_with_them(make_hub, throwaway, slurm):
    """A server on SLURM has SLURM write its output (its token among it) to a file of its
    account's folder, ``job-<id>-<SLURM id>.log``; the hub keeps its end in its own log
    of the job, which went aside at the user's deletion, but the file itself stayed, of
    the account's uid: the next account given the uid (``useradd`` gives the one just
    freed) read it. It is set aside with the rest, where only root reads it."""
    broken = {
        "cmd": ["python3", "-c", "print('the server cannot start', flush=True); raise SystemExit(3)"],
        "resources": ["slurm"],
        "default_resources": {"cpus": 1, "memory": "128M"},
    }
    config = slurmutil.hub_config({"broken": broken})
    log_dir = re.search(r"c\.UWSHub\.job_log_dir = '([^']+)'", config).group(1)
    hub = make_hub(config)
    token = hub.add_user(throwaway)
    job = launch(hub, token, job_type="broken", resource="slurm")
    job = hub.wait_job(job["id"], token, ENDED, timeout=120)
    assert job["status"] == "failed" and job["resource_id"], job
    output = Path(log_dir) / "slurm" / throwaway / f"job-{job['id']}-{job['resource_id']}.log"
    assert "the server cannot start" in output.read_text()
    hub.api("DELETE", f"users/{throwaway}", expect=204)
    assert not os.path.lexists(output)
    (entry,) = [p for p in (hub.workspaces_root / ".deleted").iterdir() if f"-{throwaway}-" in p.name]
    moved = entry / "job-logs" / output.name
    assert "the server cannot start" in moved.read_text()
    assert os.stat(moved).st_uid == 0
