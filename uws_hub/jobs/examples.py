"""Two web-app job types, offered by the shipped ``jupyterhub_config.py``:
a Voilà dashboard and a Streamlit app, each of a file in the workspace (the
job writes an example there when the workspace has none).

They are examples to copy: what a job type's ``app`` says is described in
docs/admin-guide.md#web-apps. Both need the ``apps`` extra (voila,
ipywidgets, streamlit, jupyter-server-proxy) where the jobs run.
"""

from __future__ import annotations

import os
from typing import Any

from ..serverconfig import EXAMPLES_DIR

EXAMPLE_APP_JOB_TYPES: dict[str, dict[str, Any]] = {
    "voila": {
        "display_name": "Voilà dashboard",
        "description": "dashboard.ipynb of the workspace as a dashboard: its outputs and widgets, not its code."
        " Viewers of a shared workspace may open it.",
        "icon": "chart-line",
        "args_as_root": ["--allow-root"],
        "app": {
            # Voilà listens on a port; it answers only requests with the token,
            # which only the proxy sends (other accounts on the machine reach the port)
            "command": [
                "voila",
                "dashboard.ipynb",
                "--no-browser",
                "--port={port}",
                "--Voila.ip=127.0.0.1",
                "--Voila.base_url={base_url}",
                "--Voila.server_url=/",
                "--Voila.auto_token=True",
                # Voilà's lab template without style sheets from a CDN (examples/jupyter/voila)
                "--template=uws-lab",
            ],  # fmt: skip
            "env": {"JUPYTER_TOKEN": "{token}", "JUPYTER_PATH": os.path.join(EXAMPLES_DIR, "jupyter")},
            "request_headers": {"Authorization": "token {token}"},
            "viewers": True,
            "seed": {"dashboard.ipynb": os.path.join(EXAMPLES_DIR, "dashboard.ipynb")},
        },
    },
    "streamlit": {
        "display_name": "Streamlit app",
        "description": "streamlit_app.py of the workspace as a web app. Only the workspace's owner and editors"
        " may open it.",
        "icon": "rocket",
        "args_as_root": ["--allow-root"],
        "app": {
            # on a Unix socket in a folder only the owner's account may open;
            # Streamlit's settings are in streamlit_asgi.py
            "command": ["uvicorn", "--uds={unix_socket}", f"--app-dir={EXAMPLES_DIR}", "streamlit_asgi:app"],
            "viewers": False,
            "seed": {"streamlit_app.py": os.path.join(EXAMPLES_DIR, "streamlit_app.py")},
        },
    },
}
