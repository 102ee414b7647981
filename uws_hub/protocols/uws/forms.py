"""What UWS clients send: form and query parameters, read as UWS 1.1 and DALI say.

Parameter names are not case sensitive (DALI 1.1 §3.1: ``PHASE``, ``phase``
and ``Phase`` are one name), for UWS's job control parameters and a job
type's own alike. Values come as text; a job type's declared parameters get
their declared type here (``"5"`` for an ``int`` becomes 5) and are then
checked by the batch jobs' own validation, so that both APIs refuse the same
values with the same messages. A value that does not read as its type is
passed on as text, for that validation to name.

Times are ISO 8601 (pyvo sends ``2026-12-24T10:00:00.000000Z``); without a
zone they are UTC. Every refusal is a :class:`~uws_hub.errors.BadRequest`
that says which parameter is wrong and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...errors import BadRequest
from ...inputs import MAX_OFFSET, shorten
from .documents import xml_safe
from .phases import PHASES

#: UWS's job control parameters (STD §2.2.3), which a job type's parameters cannot be
CONTROL_NAMES = frozenset(
    {"phase", "runid", "workspace", "executionduration", "destruction", "action", "wait", "after", "last"}
)
#: the largest execution duration: the schema's ``xs:int``
MAX_EXECUTION_DURATION = 2**31 - 1
#: a client-supplied run id is echoed, not interpreted; bounded like other labels
MAX_RUN_ID_LENGTH = 255

_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class Form:
    """A request's parameters (query and form body) by case-folded name, in the order sent."""

    def __init__(self, arguments: Mapping[str, Iterable[str]]):
        self.values: dict[str, list[str]] = {}
        self.names: dict[str, str] = {}
        for name, values in arguments.items():
            key = name.casefold()
            self.values.setdefault(key, []).extend(values)
            self.names.setdefault(key, name)

    @classmethod
    def from_request(cls, arguments: Mapping[str, list[bytes]]) -> Form:
        """From tornado's ``request.arguments`` (query and form body; bytes)."""
        decoded: dict[str, list[str]] = {}
        for name, values in arguments.items():
            try:
                decoded[name] = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError:
                raise BadRequest(f"Parameter {shorten(name)!r}: its value is not UTF-8") from None
            if "\x00" in name or any("\x00" in v for v in decoded[name]):
                raise BadRequest(f"Parameter {shorten(name)!r}: NUL characters are not allowed")
        return cls(decoded)

    def __contains__(self, name: str) -> bool:
        return name.casefold() in self.values

    def all(self, name: str) -> list[str]:
        return self.values.get(name.casefold(), [])

    def one(self, name: str) -> str | None:
        """The parameter's value, None if absent; a 400 if it was given more than once."""
        values = self.all(name)
        if len(values) > 1:
            raise BadRequest(f"Parameter {name.upper()} was given {len(values)} times; give it once")
        return values[0] if values else None

    def others(self, known: Iterable[str]) -> list[str]:
        """The names sent that are not in ``known`` (as sent)."""
        wanted = {k.casefold() for k in known}
        return [self.names[key] for key in self.values if key not in wanted]


# ---------------------------------------------------------------- values
def parse_time(text: str, name: str) -> datetime:
    """An ISO 8601 instant as naive UTC (how the hub stores times); no zone means UTC."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: {shorten(text)!r} is not an ISO 8601 time (e.g. 2026-12-24T10:00:00Z)") from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC: no datetime
            raise BadRequest(f"{name}: {shorten(text)!r} is out of range in UTC") from None
    return moment


def parse_execution_duration(text: str) -> int:
    """Seconds (a float such as pyvo's ``3600.0`` is rounded); 0 means no limit, so a
    limit under half a second is 1 s, the shortest, rather than none."""
    value = text.strip()
    if not _NUMBER.match(value):
        raise BadRequest(f"EXECUTIONDURATION: {shorten(text)!r} is not a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"EXECUTIONDURATION: {shorten(text)!r} must be 0 (no limit) or a positive number of seconds")
    if seconds > MAX_EXECUTION_DURATION:
        raise BadRequest(f"EXECUTIONDURATION: at most {MAX_EXECUTION_DURATION} seconds")
    return max(round(seconds), 1) if seconds > 0 else 0


def parse_phase_action(text: str | None) -> str:
    """``PHASE`` of ``POST …/phase``: ``RUN`` or ``ABORT`` (any case)."""
    if text is None:
        raise BadRequest("PHASE is required: PHASE=RUN starts the job, PHASE=ABORT aborts it")
    action = text.strip().upper()
    if action not in ("RUN", "ABORT"):
        raise BadRequest(f"PHASE: {shorten(text)!r} is neither RUN nor ABORT")
    return action


def parse_run_id(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_RUN_ID_LENGTH:
        raise BadRequest(f"RUNID: at most {MAX_RUN_ID_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadRequest("RUNID: control characters are not allowed")
    if not xml_safe(text):
        # U+FFFE and U+FFFF pass for printable, yet no XML 1.0 document can hold
        # them: the job's document and every job list showing it would not parse
        raise BadRequest("RUNID: U+FFFE and U+FFFF are not characters XML can hold")
    return text


def typed_value(kind: str, text: str) -> Any:
    """A declared parameter's value from its text: ``int``, ``float`` and ``bool``
    parameters get their type when the text reads as one; anything else stays text."""
    value = text.strip()
    if kind == "int" and _INT.match(value):
        return int(value)
    if kind == "float" and _NUMBER.match(value):
        return float(value)
    if kind == "bool" and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    return text


# ---------------------------------------------------------------- requests
@dataclass
class Creation:
    """A job list's ``POST``: the job type's parameters and UWS's job control ones."""

    parameters: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    workspace: str | None = None
    run: bool = False
    execution_duration: int | None = None
    destruction: datetime | None = None


def declared_parameters(form: Form, types: Mapping[str, str], *, control: bool) -> dict[str, Any]:
    """The job type's parameters in ``form`` (``types``: name -> declared type), typed.

    A name matches a declared one case-insensitively; where two declared names
    differ only in case, only the exact one matches. Unknown names are passed
    on as sent, for the job type's validation to refuse by name; with
    ``control``, UWS's job control parameters are not the job type's.
    """
    folded: dict[str, list[str]] = {}
    for name in types:
        folded.setdefault(name.casefold(), []).append(name)
    values: dict[str, Any] = {}
    for key, given in form.values.items():
        if control and key in CONTROL_NAMES:
            continue
        sent = form.names[key]
        candidates = folded.get(key, [])
        name = sent if sent in types else candidates[0] if len(candidates) == 1 else sent
        if len(given) > 1:
            raise BadRequest(f"Parameter {sent!r} was given {len(given)} times; give it once")
        values[name] = typed_value(types[name], given[0]) if name in types else given[0]
    return values


def parse_creation(form: Form, types: Mapping[str, str]) -> Creation:
    """A job list's ``POST`` (STD §2.2.3.1): ``PHASE=RUN`` starts the job at once."""
    phase = form.one("PHASE")
    if phase is not None and phase.strip().upper() != "RUN":
        raise BadRequest(f"PHASE: a new job can only be given PHASE=RUN, not {shorten(phase)!r}")
    duration = form.one("EXECUTIONDURATION")
    destruction = form.one("DESTRUCTION")
    for name in ("ACTION", "WAIT", "AFTER", "LAST"):
        if name in form:
            raise BadRequest(f"{name} is not a parameter of a new job")
    return Creation(
        parameters=declared_parameters(form, types, control=True),
        run_id=parse_run_id(form.one("RUNID")),
        workspace=form.one("WORKSPACE"),
        run=phase is not None,
        execution_duration=None if duration is None else parse_execution_duration(duration),
        destruction=None if destruction is None else parse_time(destruction, "DESTRUCTION"),
    )


def parse_wait(form: Form, maximum_seconds: float) -> tuple[float, str | None]:
    """``WAIT`` and ``PHASE`` of a blocking ``GET`` (STD §2.2.1.2): how long to block at
    most (0: not at all; ``-1`` and anything longer: ``maximum_seconds``), and the
    phase the client last saw (block only while the job is still in it)."""
    wait = form.one("WAIT")
    phase = form.one("PHASE")
    if phase is not None:
        phase = phase.strip().upper()
        if phase not in PHASES:
            raise BadRequest(f"PHASE: {shorten(phase)!r} is not a UWS phase ({', '.join(PHASES)})")
    if wait is None:
        return 0.0, phase
    if not _INT.match(wait.strip()) or int(wait) < -1:
        raise BadRequest(f"WAIT: {shorten(wait)!r} must be -1 (as long as the server allows) or seconds (0 or more)")
    seconds = int(wait)
    return float(maximum_seconds) if seconds == -1 else float(min(seconds, maximum_seconds)), phase


@dataclass
class ListFilter:
    """The job list's filters (STD §2.2.2.1); several are combined with AND."""

    phases: list[str] = field(default_factory=list)
    after: datetime | None = None
    last: int | None = None

    def shows(self, phase: str) -> bool:
        """Whether the phase filter lets a job in ``phase`` through (by default all but ARCHIVED)."""
        return phase in self.phases if self.phases else phase != "ARCHIVED"


def parse_list_filter(form: Form) -> ListFilter:
    phases = []
    for value in form.all("PHASE"):
        phase = value.strip().upper()
        if phase not in PHASES:
            raise BadRequest(f"PHASE: {shorten(value)!r} is not a UWS phase ({', '.join(PHASES)})")
        phases.append(phase)
    after = form.one("AFTER")
    last = form.one("LAST")
    if last is not None and (not _INT.match(last.strip()) or int(last) < 1):
        raise BadRequest(f"LAST: {shorten(last)!r} must be a whole number greater than 0")
    unknown = form.others(["PHASE", "AFTER", "LAST"])
    if unknown:
        raise BadRequest(f"The job list takes PHASE, AFTER and LAST, not {shorten(unknown[0])!r}")
    return ListFilter(
        phases=phases,
        after=None if after is None else parse_time(after, "AFTER"),
        last=None if last is None else min(int(last), MAX_OFFSET),
    )
