"""What the UWS tests do as a UWS client (tests/integration/test_uws.py locally,
tests/integration/test_uws_slurm.py on SLURM): sessions with HTTP Basic, a job created
with a form POST (the 303's URL), run and aborted with pyvo, every served document checked against UWS.xsd's
structure (tests/uwsxml.py)."""

from __future__ import annotations

import pytest
import requests
from pyvo.dal import DALQueryError
from pyvo.dal.tap import AsyncTAPJob

from . import uwsxml
from .hubutil import record


def session(user: str, token: str) -> requests.Session:
    """What a UWS client has: HTTP Basic with the user's name and an API token (every
    answer, pyvo's too, recorded for tests/integration/test_status_coverage.py)."""
    s = requests.Session()
    s.auth = (user, token)
    s.hooks["response"].append(lambda r, *args, **kwargs: record(r.request.method, r.url, r.status_code))
    return s


def jobs_url(hub, job_type: str) -> str:
    return f"{hub.url}/hub/api/uws/{job_type}"


def checked(r: requests.Response, root: str):
    """The answer's XML, checked against the schema's structure (and its media type)."""
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/xml"), r.headers["Content-Type"]
    return uwsxml.check(r.content, root)


def create(s: requests.Session, hub, job_type: str, **form) -> str:
    """A new job through a form POST: its URL, from the 303."""
    r = s.post(jobs_url(hub, job_type), data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    url = r.headers["Location"]
    assert url.startswith(f"{jobs_url(hub, job_type)}/") and not r.content
    checked(s.get(url, timeout=30), "job")
    return url


def job_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def check_all_documents(s: requests.Session, url: str, list_url: str) -> None:
    for path, root in (("", "job"), ("/results", "results"), ("/parameters", "parameters")):
        checked(s.get(url + path, timeout=30), root)
    checked(s.get(list_url, timeout=30), "jobs")


def run_to_completion(job: AsyncTAPJob) -> None:
    """pyvo's run, then its wait: the job ends COMPLETED, without an error."""
    job.run()
    assert job.phase in ("QUEUED", "EXECUTING", "COMPLETED")
    job.wait(timeout=120)
    assert job.phase == "COMPLETED"
    job.raise_if_error()


def abort_when_executing(hub, token: str, job: AsyncTAPJob) -> None:
    """pyvo's abort of a job once it runs: ABORTED at once, and still after it stopped.

    It waits for the run through the REST API: pyvo's wait for a phase the job may
    be in already blocks (WAIT) for the server's c.IVOAUWS.max_wait_seconds first,
    as UWS 1.1 says a wait with no PHASE does (pyvo's wait is run elsewhere)."""
    hub.wait_job(int(job.job_id), token, {"running", "completed", "failed", "cancelled"}, timeout=120)
    assert job.phase == "EXECUTING"
    job.abort()
    assert job.phase == "ABORTED"
    hub.wait_job(int(job.job_id), token, {"completed", "failed", "cancelled"})
    assert job.phase == "ABORTED"
    with pytest.raises(DALQueryError, match="Aborted on request"):
        job.raise_if_error()
