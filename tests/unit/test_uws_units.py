"""The UWS 1.1 interface's translation, without a hub: the XML documents (checked
against the schema's structure by tests/uwsxml.py and parsed by pyvo, as
clients do), the phases, the parameters clients send, HTTP Basic and the error
answers. The checker itself is shown to catch what the schema forbids."""

from __future__ import annotations

import base64
import io
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from jupyterhub import orm as hub_orm
from pyvo.io import uws as pyvo_uws
from sqlalchemy import select
from sqlalchemy.orm import Session

from uws_hub.errors import BadRequest, Conflict, NotFound
from uws_hub.orm import Job, Workspace
from uws_hub.protocols.uws import documents, forms, phases, translate
from uws_hub.protocols.uws.base import basic_credentials, error_status, error_text
from uws_hub.protocols.uws.documents import ErrorSummary, JobDocument, JobRef, Parameter, Result
from uws_hub.states import JobStatus, JobTarget

from .. import uwsxml
from ..helpers import memory_database

T0 = datetime(2026, 11, 23, 17, 54, 19, 877531)
T1 = datetime(2026, 11, 23, 17, 54, 21, 2000)
T2 = datetime(2026, 11, 23, 17, 55, 0, 500000)
BASE = "https://hub.example.org/hub/api/uws/count"


def failed_job() -> JobDocument:
    return JobDocument(
        job_id="42",
        run_id="my-run",
        owner_id="alice",
        phase="ERROR",
        creation_time=T0,
        start_time=T1,
        end_time=T2,
        execution_duration=3600,
        destruction=T0 + timedelta(days=7),
        parameters=[Parameter("n", "5"), Parameter("label", 'a <b> & "c"\nd\re')],
        results=[Result("out.csv", f"{BASE}/42/results/out.csv", 12, "text/csv")],
        error=ErrorSummary("The command exited with status 3", has_detail=True),
        info_links={"log": f"{BASE}/42/error"},
    )


def pending_job() -> JobDocument:
    return JobDocument(job_id="43", owner_id="alice", phase="PENDING", creation_time=T0, execution_duration=0)


def parsed(data: bytes):
    return pyvo_uws.parse_job(io.BytesIO(data))


# ---------------------------------------------------------------- documents
def test_a_failed_job_is_valid_and_pyvo_reads_every_field():
    data = documents.job_document(failed_job())
    root = uwsxml.check(data, "job")
    assert root.attrib["version"] == "1.1"
    job = parsed(data)
    assert (job.jobid, job.runid, job.ownerid, job.phase) == ("42", "my-run", "alice", "ERROR")
    assert job.version == "1.1"
    assert job.creationtime.isot == "2026-11-23T17:54:19.877"
    assert job.starttime.isot == "2026-11-23T17:54:21.002"
    assert job.endtime.isot == "2026-11-23T17:55:00.500"
    assert job.executionduration.sec == 3600
    assert job.destruction.isot == "2026-11-30T17:54:19.877"
    assert {p.id_: p.content for p in job.parameters} == {"n": "5", "label": 'a <b> & "c"\nd\re'}
    assert [(r.id_, r.href, r.size, r.mimetype) for r in job.results] == [
        ("out.csv", f"{BASE}/42/results/out.csv", 12, "text/csv")
    ]
    assert job.errorsummary.message.content == "The command exited with status 3"
    assert (job.errorsummary.type_, job.errorsummary.has_detail) == ("fatal", True)


def test_a_pending_job_has_every_required_element_nil_or_empty():
    data = documents.job_document(pending_job())
    uwsxml.check(data, "job")
    text = data.decode()
    for nil in ("ownerId", "quote", "startTime", "endTime", "destruction"):
        if nil != "ownerId":
            assert f'<uws:{nil} xsi:nil="true"/>' in text
    assert "<uws:results/>" in text and "<uws:executionDuration>0</uws:executionDuration>" in text
    assert "runId" not in text and "errorSummary" not in text and "jobInfo" not in text
    job = parsed(data)
    assert job.phase == "PENDING" and job.starttime is None and job.destruction is None and job.results == []
    assert job.executionduration.sec == 0


def test_an_anonymous_owner_is_nil():
    data = documents.job_document(JobDocument("1", "QUEUED", None, T0, 60))
    uwsxml.check(data, "job")
    assert b'<uws:ownerId xsi:nil="true"/>' in data
    assert parsed(data).ownerid is None


def test_the_job_list_is_valid_and_pyvo_reads_it():
    refs = [
        JobRef("43", f"{BASE}/43", "PENDING", T1, owner_id="alice"),
        JobRef("42", f"{BASE}/42", "COMPLETED", T0, owner_id="alice", run_id="my-run"),
    ]
    data = documents.jobs_document(refs)
    root = uwsxml.check(data, "jobs")
    assert [ref.attrib[uwsxml.HREF] for ref in root] == [f"{BASE}/43", f"{BASE}/42"]
    jobs = pyvo_uws.parse_job_list(io.BytesIO(data))
    assert [(j.jobid, j.phase, j.runid, j.ownerid) for j in jobs] == [
        ("43", "PENDING", None, "alice"),
        ("42", "COMPLETED", "my-run", "alice"),
    ]
    assert [j.creationtime.isot for j in jobs] == ["2026-11-23T17:54:21.002", "2026-11-23T17:54:19.877"]


def test_an_empty_job_list():
    data = documents.jobs_document([])
    uwsxml.check(data, "jobs")
    assert list(pyvo_uws.parse_job_list(io.BytesIO(data))) == []


def test_results_and_parameters_as_documents_of_their_own():
    job = failed_job()
    results = uwsxml.check(documents.results_document(job.results), "results")
    assert [r.attrib["id"] for r in results] == ["out.csv"]
    assert results[0].attrib[uwsxml.HREF] == f"{BASE}/42/results/out.csv"
    params = uwsxml.check(documents.parameters_document(job.parameters), "parameters")
    assert [(p.attrib["id"], p.text) for p in params] == [("n", "5"), ("label", 'a <b> & "c"\nd\re')]
    uwsxml.check(documents.results_document([]), "results")
    uwsxml.check(documents.parameters_document([]), "parameters")


def test_a_parameter_by_reference():
    data = documents.parameters_document([Parameter("raw", f"{BASE}/42/parameters/raw", by_reference=True)])
    (param,) = uwsxml.check(data, "parameters")
    assert param.attrib == {"id": "raw", "byReference": "true"}
    assert not documents.xml_safe("bell\x07") and not documents.xml_safe("\x1b[31m")
    assert documents.xml_safe("tabs\tnewlines\nreturns\r and ünïcode ✓")


def test_text_xml_cannot_hold_is_replaced_not_written():
    """What no XML 1.0 document can hold (a reason or an owner's name from elsewhere) is
    U+FFFD in the document: written as it was, the document parsed nowhere."""
    job = replace(failed_job(), owner_id="al\ufffeice", error=ErrorSummary("exit \x1b[31m3\uffff"))
    root = uwsxml.check(documents.job_document(job), "job")
    assert root.find(f"{{{uwsxml.UWS}}}ownerId").text == "al\ufffdice"
    assert "exit \ufffd[31m3\ufffd" in documents.job_document(job).decode()
    assert parsed(documents.job_document(job)).ownerid == "al\ufffdice"


def test_times_are_utc_with_z_and_milliseconds():
    assert documents.isotime(T0) == "2026-11-23T17:54:19.877Z"
    assert documents.isotime(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"
    paris = datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert documents.isotime(paris) == "2026-01-02T03:04:05.000Z"
    assert documents.isotime(None) is None


def test_executionduration_and_jobid_cannot_be_nil():
    with pytest.raises(ValueError):
        documents._element("jobId", None, nillable=False)


# ---------------------------------------------------------------- the checker catches what the schema forbids
def valid() -> str:
    return documents.job_document(failed_job()).decode()


MUTATIONS = {
    "order": (
        lambda s: s.replace("<uws:phase>ERROR</uws:phase>", "").replace(
            "<uws:jobId>42</uws:jobId>", "<uws:jobId>42</uws:jobId><uws:phase>ERROR</uws:phase>"
        ),
        "ownerId expected",
    ),
    "missing ownerId": (lambda s: s.replace("<uws:ownerId>alice</uws:ownerId>", ""), "ownerId expected"),
    "missing results": (lambda s: s.split("<uws:results>")[0] + s.split("</uws:results>")[1], "results expected"),
    "+00:00": (lambda s: s.replace("17:54:21.002Z", "17:54:21.002+00:00"), "with 'Z'"),
    "no zone": (lambda s: s.replace("17:54:21.002Z", "17:54:21.002"), "with 'Z'"),
    "empty executionDuration": (lambda s: s.replace(">3600<", "><"), "xs:int"),
    "float executionDuration": (lambda s: s.replace(">3600<", ">3600.0<"), "xs:int"),
    "nil executionDuration": (
        lambda s: s.replace(
            "<uws:executionDuration>3600</uws:executionDuration>", '<uws:executionDuration xsi:nil="true"/>'
        ),
        "not allowed",
    ),
    "other xlink prefix": (lambda s: s.replace("xmlns:xlink=", "xmlns:xl=").replace("xlink:", "xl:"), "xlink"),
    "no version": (lambda s: s.replace(' version="1.1"', ""), "version"),
    "unknown phase": (lambda s: s.replace(">ERROR<", ">FAILED<"), "is not one of"),
    "no hasDetail": (lambda s: s.replace(' hasDetail="true"', ""), "hasDetail"),
    "bad error type": (lambda s: s.replace('type="fatal"', 'type="bad"'), "is not one of"),
    "no message": (
        lambda s: s.replace("<uws:message>The command exited with status 3</uws:message>", ""),
        "message expected",
    ),
    "duplicate result": (lambda s: s.replace("</uws:results>", '<uws:result id="out.csv"/></uws:results>'), "unique"),
    "result without id": (lambda s: s.replace('<uws:result id="out.csv"', "<uws:result"), "'id' is required"),
    "bad size": (lambda s: s.replace('size="12"', 'size="twelve"'), "xs:long"),
    "unknown element": (lambda s: s.replace("</uws:jobInfo>", "</uws:jobInfo><uws:extra/>"), "out of place"),
    "text in element-only": (lambda s: s.replace("<uws:jobId>", "oops<uws:jobId>"), "text"),
    "wrong namespace": (lambda s: s.replace("http://www.ivoa.net/xml/UWS/v1.0", "urn:other"), "root"),
    "not XML": (lambda s: s.replace("</uws:job>", ""), "well-formed"),
    "parameter without id": (lambda s: s.replace('<uws:parameter id="n">', "<uws:parameter>"), "'id' is required"),
    "runId twice": (lambda s: s.replace("<uws:runId>my-run</uws:runId>", "<uws:runId>a</uws:runId>" * 2), "at most 1"),
}


#: the job instance of the UWS 1.1 Recommendation (§2.2.2.2, UWSJobInstance.xml)
STANDARD_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<uws:job version="1.1" xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0"
   xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
   xmlns:uwsc="urn:uwscustom" xsi:schemaLocation="http://www.ivoa.net/xml/UWS/v1.0 UWS.xsd">
   <uws:jobId>cea-agdevel.jb.man.ac.uk-130.88.24.18-1242749568029-508182314</uws:jobId>
   <uws:runId>myjobref</uws:runId>
   <uws:ownerId xsi:nil="true"/>
   <uws:phase>COMPLETED</uws:phase>
   <uws:creationTime>2009-05-19T17:01:44.038Z</uws:creationTime>
   <uws:startTime>2009-05-19T17:12:48.038Z</uws:startTime>
   <uws:endTime>2009-05-19T17:12:49.041Z</uws:endTime>
   <uws:executionDuration>86400</uws:executionDuration>
   <uws:destruction>2009-05-29T17:12:48.035Z</uws:destruction>
   <uws:parameters>
      <uws:parameter id="scaleFactor">1.8</uws:parameter>
      <uws:parameter id="image"  byReference="true">
         http://myserver.org/uws/jobs/jobid123/param/image</uws:parameter>
   </uws:parameters>
   <uws:results>
       <uws:result id="correctedImage" xlink:href="http://myserver.org/uws/jobs/jobid123/result/image"
              size="3000960" mime-type="image/fits" uwsc:anyattribute="a custom attribute"/>
   </uws:results>
   <uws:errorSummary type="transient" hasDetail="true">
     <uws:message>we have problem</uws:message>
   </uws:errorSummary>
   <uws:jobInfo>
       <any xmlns="urn:mynamespace"><xml><thatyouwant/></xml></any>
   </uws:jobInfo>
</uws:job>
"""


def test_the_valid_document_and_the_standards_example_pass():
    uwsxml.check(valid().encode(), "job")
    uwsxml.check(STANDARD_EXAMPLE, "job")


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_checker_refuses(name):
    mutate, expected = MUTATIONS[name]
    broken = mutate(valid())
    assert broken != valid()
    with pytest.raises(uwsxml.UWSDocumentError, match=expected):
        uwsxml.check(broken.encode())


def test_the_checker_refuses_a_list_without_version_and_a_jobref_without_id():
    good = documents.jobs_document([JobRef("1", f"{BASE}/1", "QUEUED", T0)]).decode()
    with pytest.raises(uwsxml.UWSDocumentError, match="version"):
        uwsxml.check(good.replace(' version="1.1"', "").encode())
    with pytest.raises(uwsxml.UWSDocumentError, match="'id' is required"):
        uwsxml.check(good.replace('<uws:jobref id="1"', "<uws:jobref").encode())
    with pytest.raises(uwsxml.UWSDocumentError, match="uws:job expected"):
        uwsxml.check(good.encode(), "job")


# ---------------------------------------------------------------- phases
@pytest.mark.parametrize(
    ("status", "flags", "phase"),
    [
        ("pending", {"held": True}, "PENDING"),
        ("pending", {}, "QUEUED"),
        ("queued", {}, "QUEUED"),
        ("running", {}, "EXECUTING"),
        ("completed", {}, "COMPLETED"),
        ("failed", {}, "ERROR"),
        ("cancelled", {}, "ABORTED"),
        ("stopping", {"stopped": True}, "ABORTED"),
        # stopped while running: a local job ends "completed" after SIGTERM; still ABORTED
        ("running", {"stopped": True}, "ABORTED"),
        ("completed", {"stopped": True}, "ABORTED"),
        ("pending", {"held": True, "stopped": True}, "ABORTED"),
        ("failed", {"stopped": True}, "ERROR"),
        ("completed", {"archived": True}, "ARCHIVED"),
        ("failed", {"archived": True}, "ARCHIVED"),
    ],
)
def test_phase_of(status, flags, phase):
    assert phases.phase_of(status, **flags) == phase


def test_the_sql_of_each_phase_agrees_with_the_phase_of_each_job():
    """The job list's PHASE filter (SQL) and the job document's phase (Python) agree on
    every combination of status, target, requested stop and archiving."""
    engine = memory_database()
    db = Session(engine)
    owner = hub_orm.User(name="ann")
    ws = Workspace(owner=owner, slug="ws", name="ws", status="idle", directory="/x/ann/ws")
    db.add_all([owner, ws])
    combos = list(itertools.product(JobStatus, JobTarget, (None, "cancelled", "failed"), (None, T0)))
    for status, target, outcome, archived in combos:
        db.add(
            Job(
                workspace=ws,
                owner_id=0,
                job_type="t",
                interactive=False,
                status=status.value,
                target=target.value,
                outcome=outcome,
                archived_at=archived,
                server_name="ws",
            )
        )
    db.flush()
    for job in db.scalars(select(Job)):
        job.owner_id = owner.id
    db.commit()
    jobs = list(db.scalars(select(Job)))
    assert len(jobs) == len(combos)
    for phase in phases.PHASES:
        selected = set(db.scalars(select(Job.id).where(translate.phase_clause(phase))))
        assert selected == {job.id for job in jobs if translate.job_phase(job) == phase}, phase
    both = set(db.scalars(select(Job.id).where(translate.or_phases(["ERROR", "ARCHIVED"]))))
    assert both == {job.id for job in jobs if translate.job_phase(job) in ("ERROR", "ARCHIVED")}
    db.close()


def test_parameters_and_results_in_uws_words():
    url = f"{BASE}/42"
    listed = translate.parameter_list({"n": 5, "x": 0.5, "on": True, "s": "a b", "bell": "ding\x07"}, url)
    assert [(p.id, p.value, p.by_reference) for p in listed] == [
        ("n", "5", False),
        ("x", "0.5", False),
        ("on", "true", False),
        ("s", "a b", False),
        ("bell", f"{url}/parameters/bell", True),
    ]
    results = translate.result_list(
        [
            {"path": "results/42/out.csv", "size": 3, "mime_type": "text/csv"},
            {"path": "results/42/sub dir/ü.txt", "size": 1, "mime_type": "text/plain"},
        ],
        "results/42",
        url,
    )
    assert [(r.id, r.href, r.size) for r in results] == [
        ("out.csv", f"{url}/results/out.csv", 3),
        ("sub dir/ü.txt", f"{url}/results/sub%20dir/%C3%BC.txt", 1),
    ]
    uwsxml.check(documents.results_document(results), "results")
    uwsxml.check(documents.parameters_document(listed), "parameters")


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_status_has_a_phase(status):
    assert phases.phase_of(status.value) in phases.PHASES
    assert set(phases.PHASES) == uwsxml.PHASES


# ---------------------------------------------------------------- forms
def form(**values) -> forms.Form:
    return forms.Form({k: v if isinstance(v, list) else [v] for k, v in values.items()})


TYPES = {"n": "int", "threshold": "float", "verbose": "bool", "label": "string", "mode": "choice"}


def test_creation_names_are_case_insensitive_and_values_typed():
    creation = forms.parse_creation(
        form(N="5", Threshold="0.25", VERBOSE="yes", label=" spaced ", runid="my-run", Workspace="ws", phase="run"),
        TYPES,
    )
    assert creation.parameters == {"n": 5, "threshold": 0.25, "verbose": True, "label": " spaced "}
    assert (creation.run_id, creation.workspace, creation.run) == ("my-run", "ws", True)
    assert forms.parse_creation(form(n="5"), TYPES).run is False


def test_values_that_do_not_read_as_their_type_stay_text_for_the_validation():
    creation = forms.parse_creation(form(n="five", threshold="1e400x", verbose="maybe", other="x"), TYPES)
    assert creation.parameters == {"n": "five", "threshold": "1e400x", "verbose": "maybe", "other": "x"}


def test_control_parameters_of_a_creation():
    creation = forms.parse_creation(form(EXECUTIONDURATION="3600.0", destruction="2026-12-24T10:00:00.000000Z"), TYPES)
    assert creation.execution_duration == 3600
    assert creation.destruction == datetime(2026, 12, 24, 10, 0)
    assert creation.parameters == {}
    for bad, message in [
        (form(PHASE="ABORT"), "only be given PHASE=RUN"),
        (form(WAIT="5"), "WAIT is not"),
        (form(n=["1", "2"]), "given 2 times"),
        (form(runid=["a", "b"]), "RUNID was given 2 times"),
        (form(RUNID="x" * 300), "at most 255"),
        (form(RUNID="a\nb"), "control characters"),
        (form(RUNID="a\ufffe"), "XML"),
        (form(RUNID="\uffffb"), "XML"),
        (form(EXECUTIONDURATION="soon"), "not a number"),
        (form(DESTRUCTION="tomorrow"), "not an ISO 8601 time"),
    ]:
        with pytest.raises(BadRequest, match=message):
            forms.parse_creation(bad, TYPES)


def test_declared_names_that_differ_only_in_case_match_exactly():
    types = {"N": "int", "n": "string"}
    assert forms.declared_parameters(form(N="1"), types, control=False) == {"N": 1}
    assert forms.declared_parameters(form(n="x"), types, control=False) == {"n": "x"}
    # to UWS (DALI) they are one name
    with pytest.raises(BadRequest, match="given 2 times"):
        forms.declared_parameters(form(N="1", n="x"), types, control=False)
    # a name matching neither exactly is passed on as sent: the validation says it is unknown
    assert forms.declared_parameters(form(Nn="1"), types, control=False) == {"Nn": "1"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("3600.0", 3600),
        ("120.6", 121),
        ("0", 0),
        (" 7 ", 7),
        ("1e3", 1000),
        # a limit under a second is the shortest one, not none (0)
        ("0.4", 1),
        ("1e-9", 1),
        ("0.0", 0),
    ],
)
def test_execution_duration(text, seconds):
    assert forms.parse_execution_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "", "1h", str(2**31), "0x10"])
def test_execution_duration_refused(text):
    with pytest.raises(BadRequest, match="EXECUTIONDURATION"):
        forms.parse_execution_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-24T10:00:00.000000Z",
        "2026-12-24T10:00:00Z",
        "2026-12-24T10:00:00",
        "2026-12-24T10:00:00.000Z",
        "2026-12-24T11:00:00+01:00",
        "2026-12-24 10:00:00",
    ],
)
def test_destruction_times(text):
    assert forms.parse_time(text, "DESTRUCTION") == datetime(2026, 12, 24, 10, 0)


def test_phase_actions():
    assert forms.parse_phase_action("run") == "RUN" and forms.parse_phase_action("ABORT") == "ABORT"
    for bad in (None, "SUSPEND", ""):
        with pytest.raises(BadRequest, match="PHASE"):
            forms.parse_phase_action(bad)


def test_wait():
    assert forms.parse_wait(form(), 50) == (0.0, None)
    assert forms.parse_wait(form(WAIT="-1"), 50) == (50.0, None)
    assert forms.parse_wait(form(wait="59"), 50) == (50.0, None)
    assert forms.parse_wait(form(WAIT="3", phase="executing"), 50) == (3.0, "EXECUTING")
    assert forms.parse_wait(form(WAIT="0"), 50) == (0.0, None)
    for bad, message in [
        (form(WAIT="-2"), "WAIT"),
        (form(WAIT="soon"), "WAIT"),
        (form(WAIT="1.5"), "WAIT"),
        (form(WAIT="5", PHASE="RUNNING"), "not a UWS phase"),
    ]:
        with pytest.raises(BadRequest, match=message):
            forms.parse_wait(bad, 50)


def test_list_filters():
    assert forms.parse_list_filter(form()) == forms.ListFilter()
    parsed_filter = forms.parse_list_filter(
        form(PHASE=["completed", "ERROR"], after="2026-11-23T17:54:19.877000Z", LAST="3")
    )
    assert parsed_filter.phases == ["COMPLETED", "ERROR"]
    assert parsed_filter.after == datetime(2026, 11, 23, 17, 54, 19, 877000)
    assert parsed_filter.last == 3
    assert forms.ListFilter().shows("COMPLETED") and not forms.ListFilter().shows("ARCHIVED")
    assert forms.ListFilter(phases=["ARCHIVED"]).shows("ARCHIVED")
    assert not forms.ListFilter(phases=["ERROR"]).shows("COMPLETED")
    for bad, message in [
        (form(LAST="0"), "LAST"),
        (form(LAST="-3"), "LAST"),
        (form(LAST="x"), "LAST"),
        (form(PHASE="DONE"), "not a UWS phase"),
        (form(AFTER="yesterday"), "AFTER"),
        (form(OFFSET="3"), "not 'OFFSET'"),
        (form(LAST=["1", "2"]), "given 2 times"),
    ]:
        with pytest.raises(BadRequest, match=message):
            forms.parse_list_filter(bad)


def test_form_from_tornado_arguments():
    parsed_form = forms.Form.from_request({"Phase": [b"RUN"], "phase": [b"ABORT"], "x": ["é".encode()]})
    assert parsed_form.all("PHASE") == ["RUN", "ABORT"]
    assert parsed_form.one("X") == "é"
    with pytest.raises(BadRequest, match="UTF-8"):
        forms.Form.from_request({"x": [b"\xff"]})
    with pytest.raises(BadRequest, match="NUL"):
        forms.Form.from_request({"x": [b"a\x00b"]})


# ---------------------------------------------------------------- authentication and errors
def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials():
    assert basic_credentials(basic("alice:abc123")) == ("alice", "abc123")
    assert basic_credentials(basic("alice:a:b")) == ("alice", "a:b")
    assert basic_credentials("basic " + base64.b64encode(b"bob:t").decode()) == ("bob", "t")
    for header in [
        "",
        "token abc",
        basic("alice"),
        basic("alice:"),
        basic(":abc"),
        "Basic !!!",
        "Basic ",
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    ]:
        assert basic_credentials(header) is None, header


def test_error_answers():
    assert error_status(409, Conflict("The job has ended")) == 403
    assert error_status(404, NotFound("No such job")) == 404
    assert error_text(404, NotFound("No such job: 7")) == "No such job: 7"
    assert error_text(500, RuntimeError("secret path /etc")) == "Internal server error; the hub's log has the details"
    assert error_text(405, None) == "Method Not Allowed"


def test_now_is_utc():
    assert documents.isotime(datetime.now(UTC)).endswith("Z")
