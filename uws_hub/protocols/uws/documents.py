"""UWS 1.1's XML documents from plain values: the job, the job list, results, parameters.

Pure functions: the handlers look everything up and pass it in as the
dataclasses below. The documents follow ``UWS.xsd`` (version
``1.1-REC-20161024``) exactly, because clients parse them as it says:

- namespace ``http://www.ivoa.net/xml/UWS/v1.0`` (also for 1.1) on every
  element, with the prefix ``uws``; ``version="1.1"`` on ``job`` and ``jobs``
  (a 1.1 server must set it, STD §2.2.1.1; pyvo takes its absence for 1.0);
- links as ``xlink:href`` with the literal prefix ``xlink``: pyvo looks the
  attribute up by that name, another prefix gives it no link;
- the job's children in the schema's order, the required ones always present
  (``ownerId``, ``startTime``, ``endTime``, ``destruction`` as
  ``xsi:nil="true"`` when unknown, ``results`` empty), ``executionDuration``
  always an integer (pyvo's parser fails on an empty one);
- times in UTC with a ``Z`` (STD §2.2.1; pyvo refuses ``+00:00``).

Text the XML 1.0 character set cannot carry (control characters) cannot be
a parameter's content: such a parameter is given ``byReference``, as a URL
that answers its value (STD §2.2.2.4). In any other text (a reason, an
owner's name) such a character is written as U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
VERSION = "1.1"
#: the media type of the XML documents
XML_TYPE = "application/xml; charset=UTF-8"

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NAMESPACES = f'xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}" xmlns:xsi="{XSI_NS}"'
#: characters XML 1.0 cannot hold at all (a parameter with one is given by reference)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def isotime(moment: datetime | None) -> str | None:
    """A stored (naive UTC) or aware time as UWS writes it: ``2026-11-23T17:54:19.877Z``."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def xml_safe(text: str) -> bool:
    """Whether ``text`` can be an element's content (no character XML 1.0 forbids)."""
    return _NOT_XML.search(text) is None


@dataclass(frozen=True)
class Result:
    """One result: ``href`` is absolute (pyvo uses ``result_uris`` as written)."""

    id: str
    href: str
    size: int | None = None
    mime_type: str | None = None


@dataclass(frozen=True)
class Parameter:
    """One parameter: its value as text, or, ``by_reference``, the URL that answers it."""

    id: str
    value: str
    by_reference: bool = False


@dataclass(frozen=True)
class ErrorSummary:
    """Why a job failed: ``message`` is what pyvo's ``raise_if_error()`` shows; with
    ``has_detail``, ``…/error`` has more (the job's log)."""

    message: str
    type: str = "fatal"
    has_detail: bool = False


@dataclass(frozen=True)
class JobDocument:
    """Everything the job document shows, in the handler's words (times naive UTC)."""

    job_id: str
    phase: str
    owner_id: str | None
    creation_time: datetime
    execution_duration: int
    run_id: str | None = None
    quote: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    destruction: datetime | None = None
    parameters: list[Parameter] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    error: ErrorSummary | None = None
    #: links under ``jobInfo`` (uws-hub's own information), by element name: ``log``
    info_links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRef:
    """One line of the job list."""

    job_id: str
    href: str
    phase: str
    creation_time: datetime
    owner_id: str | None = None
    run_id: str | None = None


def _text(text: str) -> str:
    # what XML cannot hold (a reason, a name from elsewhere) is U+FFFD, else the whole
    # document would parse nowhere; a carriage return would reach a parser as a line
    # feed: kept as a reference
    return escape(_NOT_XML.sub("\ufffd", text)).replace("\r", "&#13;")


def _element(name: str, text: str | None, *, nillable: bool = True) -> str:
    if text is None:
        if not nillable:
            raise ValueError(f"uws:{name} cannot be nil")
        return f'<uws:{name} xsi:nil="true"/>'
    return f"<uws:{name}>{_text(text)}</uws:{name}>"


def _result(result: Result) -> str:
    attributes = f'id={quoteattr(result.id)} xlink:type="simple" xlink:href={quoteattr(result.href)}'
    if result.size is not None:
        attributes += f' size="{int(result.size)}"'
    if result.mime_type:
        attributes += f" mime-type={quoteattr(result.mime_type)}"
    return f"<uws:result {attributes}/>"


def _parameter(parameter: Parameter) -> str:
    reference = ' byReference="true"' if parameter.by_reference else ""
    return f"<uws:parameter id={quoteattr(parameter.id)}{reference}>{_text(parameter.value)}</uws:parameter>"


def _results(results: Iterable[Result], namespaces: str = "") -> str:
    items = "".join(_result(r) for r in results)
    return f"<uws:results{namespaces}>{items}</uws:results>" if items else f"<uws:results{namespaces}/>"


def _parameters(parameters: Iterable[Parameter], namespaces: str = "") -> str:
    items = "".join(_parameter(p) for p in parameters)
    return f"<uws:parameters{namespaces}>{items}</uws:parameters>" if items else f"<uws:parameters{namespaces}/>"


def job_document(job: JobDocument) -> bytes:
    """The ``<uws:job>`` document (STD §2.2.2.2), children in the schema's order."""
    parts = [_element("jobId", job.job_id, nillable=False)]
    if job.run_id is not None:
        parts.append(_element("runId", job.run_id, nillable=False))
    parts += [
        _element("ownerId", job.owner_id),
        _element("phase", job.phase, nillable=False),
        _element("quote", isotime(job.quote)),
        _element("creationTime", isotime(job.creation_time), nillable=False),
        _element("startTime", isotime(job.start_time)),
        _element("endTime", isotime(job.end_time)),
        _element("executionDuration", str(int(job.execution_duration)), nillable=False),
        _element("destruction", isotime(job.destruction)),
        _parameters(job.parameters),
        _results(job.results),
    ]
    if job.error is not None:
        detail = "true" if job.error.has_detail else "false"
        parts.append(
            f'<uws:errorSummary type="{job.error.type}" hasDetail="{detail}">'
            f"{_element('message', job.error.message, nillable=False)}</uws:errorSummary>"
        )
    if job.info_links:
        links = "".join(
            f'<uws:{name} xlink:type="simple" xlink:href={quoteattr(href)}/>' for name, href in job.info_links.items()
        )
        parts.append(f"<uws:jobInfo>{links}</uws:jobInfo>")
    body = "\n  ".join(parts)
    return f'{_DECLARATION}<uws:job {_NAMESPACES} version="{VERSION}">\n  {body}\n</uws:job>\n'.encode()


def jobs_document(refs: Iterable[JobRef]) -> bytes:
    """The ``<uws:jobs>`` list (STD §2.2.2.1): each ``jobref`` with its phase, run id,
    owner and creation time, in the order given."""
    lines = []
    for ref in refs:
        children = [_element("phase", ref.phase, nillable=False)]
        if ref.run_id is not None:
            children.append(_element("runId", ref.run_id, nillable=False))
        children.append(_element("ownerId", ref.owner_id))
        children.append(_element("creationTime", isotime(ref.creation_time), nillable=False))
        lines.append(
            f'<uws:jobref id={quoteattr(ref.job_id)} xlink:type="simple" xlink:href={quoteattr(ref.href)}>'
            + "".join(children)
            + "</uws:jobref>"
        )
    if not lines:
        return f'{_DECLARATION}<uws:jobs {_NAMESPACES} version="{VERSION}"/>\n'.encode()
    body = "\n  ".join(lines)
    return f'{_DECLARATION}<uws:jobs {_NAMESPACES} version="{VERSION}">\n  {body}\n</uws:jobs>\n'.encode()


def results_document(results: Iterable[Result]) -> bytes:
    """``…/results``: the job's ``<uws:results>`` element as a document of its own."""
    return f"{_DECLARATION}{_results(results, ' ' + _NAMESPACES)}\n".encode()


def parameters_document(parameters: Iterable[Parameter]) -> bytes:
    """``…/parameters``: the job's ``<uws:parameters>`` element as a document of its own."""
    return f"{_DECLARATION}{_parameters(parameters, ' ' + _NAMESPACES)}\n".encode()
