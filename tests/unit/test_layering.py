"""uws_hub.spawners and uws_hub.authenticators stay plug-ins: importing them
pulls in neither the hub application, nor the ORM, nor the handlers."""

from __future__ import annotations

import subprocess
import sys

import pytest

HUB_MODULES = ["uws_hub.app", "uws_hub.orm", "uws_hub.apihandlers", "uws_hub.handlers", "uws_hub.jobs",
               "uws_hub.workspaces"]


@pytest.mark.parametrize(
    "module",
    [
        "uws_hub.spawners.local",
        "uws_hub.spawners.slurm",
        "uws_hub.spawners.slurm.poller",
        "uws_hub.authenticators.local",
        "uws_hub.authenticators.identity",
        "uws_hub.authenticators.jobenv",
        "uws_hub.authenticators.remote_api",
        "uws_hub.authenticators.ldap",
        "uws_hub.authenticators.oauth",
        "uws_hub.authenticators.globus",
    ],
)
def test_plugins_do_not_import_the_hub(module):
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {HUB_MODULES!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} imports {out}"


def test_entry_points_are_registered():
    from importlib.metadata import entry_points

    spawners = {ep.name: ep.value for ep in entry_points(group="jupyterhub.spawners")}
    auths = {ep.name: ep.value for ep in entry_points(group="jupyterhub.authenticators")}
    assert spawners["uws-local"] == "uws_hub.spawners.local:WorkspaceLocalProcessSpawner"
    assert spawners["uws-slurm"] == "uws_hub.spawners.slurm:WorkspaceSlurmSpawner"
    assert auths["uws-local"] == "uws_hub.authenticators.local:WorkspaceLocalAuthenticator"
    assert auths["uws-oidc"] == "uws_hub.authenticators.oauth:WorkspaceOIDCAuthenticator"
    assert auths["uws-globus"] == "uws_hub.authenticators.globus:WorkspaceGlobusAuthenticator"
    assert auths["uws-ldap"] == "uws_hub.authenticators.ldap:WorkspaceLDAPAuthenticator"
    assert auths["uws-remote-api"] == "uws_hub.authenticators.remote_api:WorkspaceRemoteAPIAuthenticator"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["uws-hub"] == "uws_hub.app:main"
