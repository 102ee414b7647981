"""Web-app job types without a hub: what the hub refuses at start
(uws_hub/jobs/types.py), and what the job's server makes of an app
(uws_hub/serverconfig/uws_apps.py: jupyter-server-proxy's settings, the
example files). tests/integration/test_apps.py runs them for real."""

from __future__ import annotations

import os

import pytest

from uws_hub.jobs.examples import EXAMPLE_APP_JOB_TYPES
from uws_hub.jobs.types import parse_job_types
from uws_hub.serverconfig import uws_apps

APP = {"command": ["serve", "--port={port}"]}


def app_type(**app) -> dict:
    return {"x": {"app": {**APP, **app}}}


def test_the_examples_parse_and_open_their_app():
    types = parse_job_types(EXAMPLE_APP_JOB_TYPES, ["local"])
    assert types["voila"].default_url == "/app/" and types["voila"].app.viewers
    assert not types["streamlit"].app.viewers
    assert types["voila"].public_model()["app"] == {"viewers": True}


@pytest.mark.parametrize(
    "spec, words",
    [
        (app_type(command=["serve"]), r"must say where the app listens: \{port\} or \{unix_socket\}"),
        (app_type(command=["serve", "--port={port}", "--home={home}"]), r"the command names \['home'\]"),
        (
            app_type(command=["serve", "--port={port}", "--secret={token}"]),
            r"\{token\} only in env and request_headers",
        ),
        (app_type(command=["serve", "--port={port!r}"]), r"write placeholders as \{name\}"),
        (app_type(command=["serve", "--port={port"]), "--port={port"),
        (app_type(env={"A": "{user}"}), r"names \['user'\]"),
        (app_type(seed={"../x": "/etc/hostname"}), "file names in the workspace's top folder"),
        (app_type(seed={"x": "relative/file"}), "absolute path of a file"),
        (app_type(viewer=True), "viewer"),
        ({"x": {"interactive": False, "app": APP}}, "a job type with an app is interactive"),
        ({"x": {"icon": "<b>", "app": APP}}, "icon"),
    ],
)
def test_bad_apps_are_refused_at_start(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_job_types(spec, ["local"])


def test_the_app_as_a_server_of_jupyter_server_proxy():
    app = {
        "path": "app",
        "command": ["serve", "--port={port}", "--base={base_url}", "--dir={workspace}", "--literal={{x}}"],
        "env": {"APP_TOKEN": "{token}", "JSON": '{{"a": 1}}'},
        "request_headers": {"Authorization": "token {token}"},
        "timeout_seconds": 30,
    }
    server = uws_apps.server_process(app, server_url="/user/a/ws/", workspace="/w/a/{ws}", token="t0k")
    # ours filled in and escaped for jupyter-server-proxy's own str.format; {port} left to it
    assert server["command"] == [
        "serve",
        "--port={port}",
        "--base=/user/a/ws/app/",
        "--dir=/w/a/{{ws}}",
        "--literal={{x}}",
    ]
    assert [part.format(port=8888) for part in server["command"]][1:4] == [
        "--port=8888",
        "--base=/user/a/ws/app/",
        "--dir=/w/a/{ws}",
    ]
    assert server["environment"] == {"APP_TOKEN": "t0k", "JSON": '{{"a": 1}}'}
    assert server["request_headers_override"] == {"Authorization": "token t0k"}
    assert server["timeout"] == 30 and server["unix_socket"] is False and server["absolute_url"] is False
    assert (
        uws_apps.server_process(
            {**app, "command": ["serve", "--uds={unix_socket}"]}, server_url="/", workspace="/w", token="t"
        )["unix_socket"]
        is True
    )


def test_seeding_writes_only_what_is_missing(tmp_path):
    source = tmp_path / "example.ipynb"
    source.write_text("example")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "mine.ipynb").write_text("mine")
    os.symlink("/nonexistent/target", workspace / "link.ipynb")
    app = {"seed": {name: str(source) for name in ("new.ipynb", "mine.ipynb", "link.ipynb")}}
    uws_apps.seed(app, str(workspace))
    assert (workspace / "new.ipynb").read_text() == "example"
    assert (workspace / "mine.ipynb").read_text() == "mine"  # never over a user's file
    assert os.readlink(workspace / "link.ipynb") == "/nonexistent/target"  # nor through a link
    assert not os.path.exists("/nonexistent/target")
