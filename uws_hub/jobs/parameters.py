"""A batch job type's declared parameters, a launch's values checked against them, and the
job's command and environment rendered from them. Pure functions, no shell.

A batch job type declares what a launch may pass (``parameters`` in
``c.UWSHub.job_types``: type, label, default, required, bounds, help), and its
command is an **argv template**: a list whose items are literal strings,
whole placeholders (``"{threshold}"``), or optional groups (a nested list,
e.g. ``["--pattern", "{pattern}"]``) that are left out when a placeholder in
them has no value or is a false boolean. A placeholder is never part of a
longer argv item (``"--x={x}"`` is refused when the hub starts), so a value
is always exactly one argument, whatever it holds: ``; rm -rf /``, ``$(id)``,
backticks and newlines reach the program as they were sent, since no shell
ever reads them. Environment values (``env``) may embed placeholders
anywhere, since nothing parses them either; every parameter also reaches
the job as ``UWS_PARAM_<NAME>``.

Values are checked by :func:`validate_parameters` into a 422 that names each
field: unknown, missing, of the wrong JSON type, out of range, not a choice,
or a workspace path that leaves the workspace.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import Unprocessable
from ..workspaces.paths import PathError, split_relpath

#: a placeholder: ``{name}``
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: placeholders every batch job has, besides its parameters
BUILTINS = ("job_id", "workspace_dir", "results_dir")
#: the longest string value a launch may pass (a command line is bounded by the kernel too)
MAX_STRING_LENGTH = 65536

ParameterType = Literal["int", "float", "string", "bool", "choice", "path"]


class ParameterSpec(BaseModel):
    """One declared parameter of a batch job type."""

    model_config = ConfigDict(extra="forbid")

    type: ParameterType
    #: what the launch form calls it (default: its name made readable, :func:`readable`)
    label: str = Field("", max_length=80, pattern=r"^[^\x00-\x1f\x7f]*$")
    help: str = ""
    default: Any = None
    #: a launch must pass it (a parameter with a default never needs to)
    required: bool = False
    #: bounds of an ``int`` or ``float``
    min: float | None = None
    max: float | None = None
    #: the values of a ``choice``
    choices: list[str] | None = None
    #: the longest ``string`` or ``path``
    max_length: int = Field(4096, ge=1, le=MAX_STRING_LENGTH)

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice parameter needs 'choices'")
        if self.type != "choice" and self.choices is not None:
            raise ValueError("'choices' is for choice parameters")
        if self.type not in ("int", "float") and (self.min is not None or self.max is not None):
            raise ValueError("'min' and 'max' are for int and float parameters")
        if self.default is not None:
            problem = _problem(self, self.default)
            if problem:
                raise ValueError(f"its default is invalid: {problem}")
        return self

    def public_model(self, name: str) -> dict[str, Any]:
        return {"name": name, **self.model_dump(), "label": self.shown_label(name)}

    def shown_label(self, name: str) -> str:
        """What pages call the parameter ``name``: its label, or its name made readable."""
        return self.label or readable(name)


def readable(name: str) -> str:
    """A parameter's name as a form's label: ``max_rows`` -> "Max rows" (the rest
    of the name keeps its case, so that ``HTTP_port`` stays "HTTP port")."""
    words = " ".join(name.replace("_", " ").split())
    return words[:1].upper() + words[1:]


def _problem(spec: ParameterSpec, value: Any) -> str | None:
    """What is wrong with ``value`` for ``spec`` (None: nothing)."""
    kind = spec.type
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be an integer" if kind == "int" else "must be a number"
        if kind == "int" and not isinstance(value, int):
            return "must be an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if spec.min is not None and value < spec.min:
            return f"must be at least {spec.min:g} (got {value})"
        if spec.max is not None and value > spec.max:
            return f"must be at most {spec.max:g} (got {value})"
        return None
    if not isinstance(value, str):
        return "must be a string"
    if "\x00" in value:
        return "must not contain NUL characters"
    if len(value) > spec.max_length:
        return f"must be at most {spec.max_length} characters (got {len(value)})"
    if kind == "choice" and value not in (spec.choices or []):
        return f"must be one of {spec.choices} (got {value[:40]!r})"
    if kind == "path":
        try:
            split_relpath(value)
        except PathError as e:
            return str(e)
    return None


def validate_parameters(specs: Mapping[str, ParameterSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """A launch's values, checked and with the defaults filled in; 422 naming every bad field."""
    problems = [f"parameters.{name}: unknown parameter" for name in given if name not in specs]
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            problem = _problem(spec, given[name])
            if problem:
                problems.append(f"parameters.{name}: {problem}")
            else:
                values[name] = given[name]
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.required:
            problems.append(f"parameters.{name}: required")
    if problems:
        takes = f" (it takes: {', '.join(specs)})" if specs else " (it takes none)"
        raise Unprocessable(f"Invalid parameters{takes}: {'; '.join(problems)}")
    return values


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def check_template(cmd: list[str | list[str]], env: Mapping[str, str], names: list[str]) -> None:
    """Refuse (ValueError) an argv template a launch could not render as meant: a
    placeholder inside a longer argv item, an unknown one, or nested groups."""
    known = set(names) | set(BUILTINS)
    for item in cmd:
        for part in item if isinstance(item, list) else [item]:
            if not isinstance(part, str):
                raise ValueError(f"cmd items are strings or lists of strings (a group), not {part!r}")
            found = placeholders(part)
            if found and PLACEHOLDER.fullmatch(part) is None:
                raise ValueError(
                    f"cmd item {part!r}: a placeholder must be a whole argv item (write"
                    f" [..., '--x', '{{x}}'], not '--x={{x}}'), so that a value is always one argument"
                )
            unknown = [n for n in found if n not in known]
            if unknown:
                raise ValueError(f"cmd item {part!r} names {unknown[0]!r}, which is no parameter")
    for key, value in env.items():
        unknown = [n for n in placeholders(value) if n not in known]
        if unknown:
            raise ValueError(f"env {key!r} names {unknown[0]!r}, which is no parameter")


def _argv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_argv(cmd: list[str | list[str]], values: Mapping[str, Any]) -> list[str]:
    """The argv of a launch: placeholders replaced by their values, each one item.

    A group (a nested list) is left out when one of its placeholders has no
    value or is false; a boolean in a group only decides that, and is no item.
    """
    argv: list[str] = []
    for item in cmd:
        if isinstance(item, list):
            names = [m.group(1) for part in item if (m := PLACEHOLDER.fullmatch(part))]
            if any(values.get(n) is None or values.get(n) is False for n in names):
                continue
            for part in item:
                match = PLACEHOLDER.fullmatch(part)
                if match is None:
                    argv.append(part)
                elif not isinstance(values[match.group(1)], bool):
                    argv.append(_argv_value(values[match.group(1)]))
            continue
        match = PLACEHOLDER.fullmatch(item)
        if match is None:
            argv.append(item)
        elif values.get(match.group(1)) is not None:
            argv.append(_argv_value(values[match.group(1)]))
    return argv


def render_env(env: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """The job type's ``env`` with placeholders replaced (an absent value: empty), and
    every parameter as ``UWS_PARAM_<NAME>``."""

    def fill(match: re.Match) -> str:
        value = values.get(match.group(1))
        return "" if value is None else _argv_value(value)

    rendered = {key: PLACEHOLDER.sub(fill, value) for key, value in env.items()}
    for name, value in values.items():
        if name not in BUILTINS and value is not None:
            rendered[f"UWS_PARAM_{name.upper()}"] = _argv_value(value)
    return rendered


def path_values(specs: Mapping[str, ParameterSpec], values: Mapping[str, Any], workspace_dir: str) -> dict[str, Any]:
    """``values`` with workspace paths made absolute (the job's directory is the workspace,
    but a command may change directory)."""
    out = dict(values)
    for name, spec in specs.items():
        if spec.type == "path" and isinstance(out.get(name), str):
            parts = split_relpath(out[name])
            out[name] = "/".join([workspace_dir.rstrip("/"), *parts]) if parts else workspace_dir
    return out
