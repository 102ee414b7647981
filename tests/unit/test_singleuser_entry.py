"""``uws-singleuser``, the default job types' server: jupyterhub-singleuser without
the IRI grammar jsonschema would compile at import (a second of every launch)."""

from __future__ import annotations

import subprocess
import sys

from uws_hub.jobs.types import DEFAULT_JOB_TYPES, JobType


def test_the_jobs_server_starts_without_the_iri_grammar():
    code = (
        "import sys, uws_hub.singleuser, jupyterhub.singleuser, jupyter_server.serverapp\n"
        "print(sys.modules.get('rfc3987_syntax'), uws_hub.singleuser.main is jupyterhub.singleuser.main)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "None True"


def test_job_types_run_it_unless_they_say_otherwise():
    assert DEFAULT_JOB_TYPES["jupyterlab"]["cmd"] == ["uws-singleuser"]
    assert JobType.model_validate({"name": "app", "display_name": "An app"}).cmd == ["uws-singleuser"]
