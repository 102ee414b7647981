# The configuration `make run` uses: SQLite, local processes, local accounts.
# Every option is described in docs/admin-guide.md (or `uws-hub --generate-config`).
import os
import sys

from uws_hub.jobs.examples import EXAMPLE_APP_JOB_TYPES
from uws_hub.jobs.types import DEFAULT_JOB_TYPES

c = get_config()  # noqa: F821

# where the hub listens; the README's URL
c.JupyterHub.bind_url = os.environ.get("UWS_BIND_URL", "http://127.0.0.1:8000")
c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"

# local accounts; the first admin's password is printed at the first start
# (or taken from $UWS_ADMIN_PASSWORD)
c.JupyterHub.authenticator_class = "uws-local"
c.Authenticator.admin_users = {"admin"}

# jobs run as local processes, as the hub's own account (single-account mode);
# see c.UWSHub.system_users to run them as their owners' system accounts
c.JupyterHub.spawner_class = "uws-local"
c.UWSHub.workspaces_root = "workspaces"

# what users may launch in a workspace: JupyterLab; two example web apps (a
# Voilà dashboard and a Streamlit app, served behind the hub's login; see "Web
# apps" in docs/admin-guide.md); and an example batch job (docs/batch-jobs.md)
# that counts the lines of the workspace's text files into
# results/<job id>/line_counts.csv
c.UWSHub.job_types = {
    **DEFAULT_JOB_TYPES,
    **EXAMPLE_APP_JOB_TYPES,
    "count-lines": {
        "interactive": False,
        "display_name": "Count lines",
        "description": "Counts the lines of the text files in a folder of the workspace, into a CSV file.",
        "cmd": [sys.executable, "-I", "-m", "uws_hub.examples.count_lines", "{folder}", ["--pattern", "{pattern}"]],
        "parameters": {
            "folder": {
                "type": "path",
                "label": "Folder",
                "default": ".",
                "help": "The folder to count in (all of the workspace: .)",
            },
            "pattern": {
                "type": "string",
                "label": "File names",
                "default": "*",
                "help": "Only files whose names match, e.g. *.py",
            },
        },
        "default_resources": {"cpus": 1, "memory": "1G"},
        "time_limit_seconds": 600,
    },
}
