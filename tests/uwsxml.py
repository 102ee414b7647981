"""Structural checks of UWS 1.1 documents, written from the standard (no network).

Every check comes from ``UWS.xsd`` version ``1.1-REC-20161024`` (ivoa-std/UWS
@ fb0a018) or from the text of the UWS 1.1 Recommendation (STD), and says
which part it comes from when it fails:

- the root element and the namespace ``http://www.ivoa.net/xml/UWS/v1.0``
  (``elementFormDefault="qualified"``: every element in it, attributes
  unqualified but for ``xlink:`` and ``xsi:nil``);
- every ``xs:sequence``: the children in the schema's order, each as often as
  ``minOccurs``/``maxOccurs`` allow, nothing else, no stray text;
- ``nillable``: ``xsi:nil="true"`` only where allowed, and then empty;
- simple types: ``xs:dateTime``, ``xs:int``, ``xs:long``, ``xs:boolean``,
  the ``ExecutionPhase`` and ``ErrorType`` enumerations;
- attributes: required ones present, no unknown ones (``ResultReference``
  also takes any attribute of ``urn:uwscustom``), unique result ids;
- STD §2.2.1.1: ``version="1.1"`` on ``job`` and ``jobs``; STD §2.2.1: times
  in UTC with ``Z``; STD §2.1.7/schema note: ``creationTime`` present in 1.1;
- xlink: the ``xlink`` prefix is bound to the xlink namespace and the links
  are written ``xlink:href`` (pyvo reads that literal name).

:func:`check` raises :class:`UWSDocumentError` (an AssertionError) naming
the element and the rule; it returns the parsed root element.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from xml.parsers import expat

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CUSTOM = "urn:uwscustom"
NIL = f"{{{XSI}}}nil"
HREF = f"{{{XLINK}}}href"
#: attributes XML Schema allows on any element (XSD 1.0 part 1 §3.2.7)
SCHEMA_HINTS = {f"{{{XSI}}}schemaLocation", f"{{{XSI}}}noNamespaceSchemaLocation"}
XTYPE = f"{{{XLINK}}}type"

PHASES = {"PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "UNKNOWN", "HELD", "SUSPENDED", "ABORTED", "ARCHIVED"}
ERROR_TYPES = {"transient", "fatal"}
BOOLEANS = {"true", "false", "1", "0"}
#: xs:dateTime (XSD 1.0 §3.2.7), with the zone STD §2.2.1 requires: UTC, written Z
DATETIME = re.compile(
    r"^-?[0-9]{4,}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
INTEGER = re.compile(r"^[+-]?[0-9]+$")


class UWSDocumentError(AssertionError):
    pass


def _fail(where: str, rule: str) -> UWSDocumentError:
    return UWSDocumentError(f"{where}: {rule}")


def _local(tag: str) -> str:
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def _where(elem: ET.Element, path: str) -> str:
    return f"{path}/uws:{_local(elem.tag)}" if elem.tag.startswith(f"{{{UWS}}}") else f"{path}/{elem.tag}"


# ---------------------------------------------------------------- simple types
def _datetime(text: str, where: str) -> None:
    match = DATETIME.match(text)
    if match is None:
        raise _fail(where, f"{text!r} is not an xs:dateTime")
    if match.group(2) != "Z":
        raise _fail(where, f"{text!r}: STD §2.2.1 wants UTC written with 'Z'")


def _int(text: str, where: str, bits: int) -> None:
    if not INTEGER.match(text) or not -(2 ** (bits - 1)) <= int(text) < 2 ** (bits - 1):
        raise _fail(where, f"{text!r} is not an xs:{'int' if bits == 32 else 'long'}")


def _boolean(text: str, where: str) -> None:
    if text not in BOOLEANS:
        raise _fail(where, f"{text!r} is not an xs:boolean")


def _enum(values: set[str]) -> Callable[[str, str], None]:
    def check(text: str, where: str) -> None:
        if text not in values:
            raise _fail(where, f"{text!r} is not one of {sorted(values)}")

    return check


def _string(text: str, where: str) -> None:
    pass


# ---------------------------------------------------------------- elements
def _no_text(elem: ET.Element, where: str) -> None:
    """Element-only content: white space between children, nothing else."""
    if (elem.text or "").strip():
        raise _fail(where, f"text {elem.text.strip()[:30]!r} in element-only content")
    for child in elem:
        if (child.tail or "").strip():
            raise _fail(where, f"text {child.tail.strip()[:30]!r} after {_local(child.tag)}")


def _attributes(
    elem: ET.Element, where: str, allowed: set[str], required: set[str] = frozenset(), custom: bool = False
) -> None:
    for name in elem.attrib:
        if name in allowed or name in SCHEMA_HINTS or (custom and name.startswith(f"{{{CUSTOM}}}")):
            continue
        raise _fail(where, f"attribute {name!r} is not allowed here")
    for name in required:
        if name not in elem.attrib:
            raise _fail(where, f"attribute {_local(name)!r} is required")


def _simple(check: Callable[[str, str], None], nillable: bool) -> Callable[[ET.Element, str], None]:
    """An element of a simple type: no children, no attributes but xsi:nil where nillable."""

    def element(elem: ET.Element, where: str) -> None:
        _attributes(elem, where, {NIL} if nillable else set())
        if len(elem):
            raise _fail(where, f"a simple element has children ({_local(elem[0].tag)})")
        nil = elem.attrib.get(NIL)
        if nil is not None:
            _boolean(nil, where + "@xsi:nil")
            if nil in ("true", "1"):
                if elem.text:
                    raise _fail(where, "nil, so it must be empty")
                return
        check((elem.text or "").strip() if check is not _string else (elem.text or ""), where)

    return element


@dataclass(frozen=True)
class Child:
    name: str
    check: Callable[[ET.Element, str], None]
    min: int = 1
    max: int | None = 1


def _sequence(elem: ET.Element, where: str, children: list[Child]) -> None:
    """``xs:sequence``: each child in order, between min and max times; nothing else."""
    _no_text(elem, where)
    items = list(elem)
    position = 0
    for child in children:
        count = 0
        while position < len(items) and items[position].tag == f"{{{UWS}}}{child.name}":
            if child.max is not None and count >= child.max:
                raise _fail(where, f"uws:{child.name} may occur at most {child.max} time(s)")
            child.check(items[position], _where(items[position], where))
            position += 1
            count += 1
        if count < child.min:
            found = _local(items[position].tag) if position < len(items) else "the end"
            raise _fail(where, f"uws:{child.name} expected (at least {child.min}), found {found}")
    if position < len(items):
        extra = items[position]
        expected = [c.name for c in children]
        raise _fail(where, f"{extra.tag} is out of place or unknown (the sequence is {expected})")


def _result(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"id", HREF, XTYPE, "size", "mime-type"}, {"id"}, custom=True)
    if len(elem) or (elem.text or "").strip():
        raise _fail(where, "ResultReference has no content")
    if "size" in elem.attrib:
        _int(elem.attrib["size"], where + "@size", 64)
    if elem.attrib.get(XTYPE, "simple") != "simple":
        raise _fail(where, "xlink:type must be 'simple'")


def _results(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, set())
    _sequence(elem, where, [Child("result", _result, 0, None)])
    ids = [r.attrib["id"] for r in elem]
    if len(ids) != len(set(ids)):
        raise _fail(where, f"result ids must be unique (STD §2.2.2.3): {ids}")


def _parameter(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"id", "byReference", "isPost"}, {"id"})
    for name in ("byReference", "isPost"):
        if name in elem.attrib:
            _boolean(elem.attrib[name], f"{where}@{name}")
    if len(elem):
        raise _fail(where, "Parameter is text only (mixed, with no element children)")


def _parameters(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, set())
    _sequence(elem, where, [Child("parameter", _parameter, 0, None)])


def _error_summary(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"type", "hasDetail"}, {"type", "hasDetail"})
    _enum(ERROR_TYPES)(elem.attrib["type"], where + "@type")
    _boolean(elem.attrib["hasDetail"], where + "@hasDetail")
    _sequence(elem, where, [Child("message", _simple(_string, False))])


def _job_info(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, set())
    _no_text(elem, where)  # xs:any elements, processContents lax: anything


def _version(elem: ET.Element, where: str) -> None:
    if elem.attrib.get("version") != "1.1":
        raise _fail(where, 'a UWS 1.1 service must set version="1.1" (STD §2.2.1.1)')


def _job(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"version"})
    _version(elem, where)
    _sequence(
        elem,
        where,
        [
            Child("jobId", _simple(_string, False)),
            Child("runId", _simple(_string, False), 0),
            Child("ownerId", _simple(_string, True)),
            Child("phase", _simple(_enum(PHASES), False)),
            Child("quote", _simple(_datetime, True), 0),
            # optional in the schema, required by the 1.1 text (schema note)
            Child("creationTime", _simple(_datetime, False)),
            Child("startTime", _simple(_datetime, True)),
            Child("endTime", _simple(_datetime, True)),
            Child("executionDuration", _simple(lambda t, w: _int(t, w, 32), False)),
            Child("destruction", _simple(_datetime, True)),
            Child("parameters", _parameters, 0),
            Child("results", _results),
            Child("errorSummary", _error_summary, 0),
            Child("jobInfo", _job_info, 0),
        ],
    )


def _jobref(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"id", HREF, XTYPE}, {"id"})
    if elem.attrib.get(XTYPE, "simple") != "simple":
        raise _fail(where, "xlink:type must be 'simple'")
    _sequence(
        elem,
        where,
        [
            Child("phase", _simple(_enum(PHASES), False)),
            Child("runId", _simple(_string, False), 0),
            Child("ownerId", _simple(_string, True), 0),
            Child("creationTime", _simple(_datetime, False), 0),
        ],
    )


def _jobs(elem: ET.Element, where: str) -> None:
    _attributes(elem, where, {"version"})
    _version(elem, where)
    _sequence(elem, where, [Child("jobref", _jobref, 0, None)])


ROOTS = {"job": _job, "jobs": _jobs, "results": _results, "parameters": _parameters}


# ---------------------------------------------------------------- prefixes
def _check_prefixes(data: bytes) -> None:
    """The xlink namespace is bound only to ``xlink``, and links are written ``xlink:href``."""
    for _event, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
        if (uri == XLINK) != (prefix == "xlink"):
            raise _fail("namespaces", f"prefix {prefix!r} is bound to {uri!r}: pyvo reads links as 'xlink:href'")
    names: list[str] = []
    parser = expat.ParserCreate()
    parser.StartElementHandler = lambda tag, attributes: names.extend(attributes)
    parser.Parse(data, True)
    for name in names:
        if name.endswith(":href") and name != "xlink:href":
            raise _fail("attributes", f"a link written {name!r}: pyvo reads 'xlink:href' only")


def check(data: bytes, root: str | None = None) -> ET.Element:
    """Check a UWS document (of the root element ``root``, if given); its parsed root."""
    try:
        elem = ET.fromstring(data)
    except ET.ParseError as e:
        raise _fail("document", f"not well-formed XML: {e}") from None
    if not elem.tag.startswith(f"{{{UWS}}}") or _local(elem.tag) not in ROOTS:
        raise _fail("document", f"the root {elem.tag!r} is no UWS document ({sorted(ROOTS)} in {UWS})")
    if root is not None and _local(elem.tag) != root:
        raise _fail("document", f"uws:{root} expected, found uws:{_local(elem.tag)}")
    _check_prefixes(data)
    ROOTS[_local(elem.tag)](elem, "")
    return elem
