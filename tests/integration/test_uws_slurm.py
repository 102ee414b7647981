"""The IVOA UWS 1.1 interface for batch jobs on a real single-node SLURM cluster
(scripts/slurm-up.sh), driven by pyvo from PyPI, unchanged: run and wait to COMPLETED with
the results downloadable, abort of a running job (its SLURM job cancelled), and the
execution duration as the SLURM job's real ``--time`` limit. The local runs of the same
are in tests/integration/test_uws.py."""

from __future__ import annotations

import json
import sys

import pytest
from pyvo.dal import DALQueryError
from pyvo.dal.tap import AsyncTAPJob

from .. import slurmutil
from ..hubutil import REPO, wait_for
from ..uwsclient import abort_when_executing, check_all_documents, create, job_id, jobs_url, run_to_completion, session

pytestmark = pytest.mark.slurm

JOB = [sys.executable, str(REPO / "tests" / "batch_job.py")]
SLURM = {"interactive": False, "resources": ["slurm"], "default_resources": {"cpus": 1, "memory": "128M"}}
JOB_TYPES = {
    "report": {
        **SLURM,
        "cmd": [*JOB, "report", "{text}"],
        "parameters": {"text": {"type": "string", "required": True}},
    },
    "sleep": {
        **SLURM,
        "cmd": [*JOB, "sleep", "{seconds}"],
        "parameters": {"seconds": {"type": "float", "default": 1, "min": 0, "max": 600}},
    },
}


@pytest.fixture(scope="module")
def hub(make_hub, system_users, slurm):
    hub = make_hub(slurmutil.hub_config(JOB_TYPES))
    hub.alice = hub.add_user("uwsalice")
    return hub


@pytest.fixture(scope="module")
def alice(hub):
    return session("uwsalice", hub.alice)


def slurm_job(hub, url: str) -> dict[str, str]:
    """SLURM's view of the SLURM job of the UWS job at ``url``."""
    model = hub.api("GET", f"jobs/{job_id(url)}", hub.alice, expect=200)
    assert model["resource"] == "slurm" and model["resource_id"], model
    return slurmutil.job_info(model["resource_id"])


@pytest.mark.before_all
def test_the_execution_duration_is_the_slurm_jobs_time_limit(slurm_time_limits):
    """A job of 600 s with an execution duration of 60 s (conftest.py's
    ``slurm_time_limits``): checked at once, ended by SLURM by the module's last test."""
    limits = slurm_time_limits
    job = AsyncTAPJob(limits.uws_url, session=limits.uws_session)
    assert (job.phase, job.execution_duration.value) == ("EXECUTING", 60)
    assert slurmutil.job_info(limits.uws["resource_id"])["time_limit"] == "1:00"


def test_pyvo_runs_a_slurm_job_to_completion_and_downloads_its_results(hub, alice):
    url = create(alice, hub, "report", TEXT="hello; $(id)")
    job = AsyncTAPJob(url, session=alice)
    assert job.phase == "PENDING"
    run_to_completion(job)
    [uri] = job.result_uris
    assert uri == f"{url}/results/report.json"
    report = json.loads(alice.get(uri, timeout=30).content)
    assert report["argv"] == ["hello; $(id)"]
    info = slurm_job(hub, url)
    assert (info["state"], info["user"]) == ("COMPLETED", "uwsalice")
    assert job.job.starttime is not None and job.job.endtime is not None
    check_all_documents(alice, url, jobs_url(hub, "report"))


def test_abort_of_a_running_slurm_job_cancels_it(hub, alice):
    url = create(alice, hub, "sleep", seconds="300", PHASE="RUN")
    abort_when_executing(hub, hub.alice, AsyncTAPJob(url, session=alice))
    wait_for(lambda: slurm_job(hub, url)["state"] == "CANCELLED", 60, what="SLURM to cancel the job")


def test_the_execution_duration_is_the_limit_slurm_grants(hub, alice):
    """SLURM keeps time limits in whole minutes, rounding up: the job is told what it gets."""
    job = AsyncTAPJob(create(alice, hub, "sleep", EXECUTIONDURATION="30"), session=alice)
    assert job.execution_duration.value == 60
    job.execution_duration = 61
    assert job.execution_duration.value == 120
    job.execution_duration = 0  # none (the job type has no limit)
    assert job.execution_duration.value == 0


def test_a_job_over_its_execution_duration_is_error_saying_so(slurm_time_limits):
    """Last: the job launched first reaches its 60 s limit (SLURM's shortest: it checks
    limits every 30 s), and SLURM ends it (TIMEOUT)."""
    limits = slurm_time_limits
    job = AsyncTAPJob(limits.uws_url, session=limits.uws_session)
    job.wait(timeout=180)
    assert job.phase == "ERROR"
    with pytest.raises(DALQueryError, match="reached its time limit of 60 s: SLURM stopped it"):
        job.raise_if_error()
    assert slurmutil.job_info(limits.uws["resource_id"])["state"] == "TIMEOUT"
