"""Every status the API reference promises is listed alike in both documents,
and is one the tests have seen the hub answer.

- docs/api.md and docs/openapi.yaml list the same statuses for each
  operation. In api.md an operation is declared by its method and path in
  backticks followed by ``·`` (```GET /hub/api/jobs` · read``, perhaps with a
  remark in parentheses before the ``·``); the bullets
  after it (up to the next declaration, heading or paragraph that is no
  bullet) list its statuses: a status counts where it starts a bullet or
  follows ``; ``, ``, `` or `` / `` (``- `403`, `404```), not where the text
  merely mentions one (``the proxy's `503` page``). api.md leaves out only the
  ``400`` of a NUL in the URL, which its Conventions state for every endpoint.
- Every status openapi.yaml lists for an operation was the answer to at least
  one request the tests sent (tests/hubutil.py records each request's method,
  path and status). This needs the whole suite, so it runs only when
  ``UWS_STATUS_COVERAGE`` is set: ``make test-sqlite`` sets it, and the test is
  the last of the run (tests/conftest.py moves it there); ``make test``
  (test-databases) runs the suite in three pytest sessions side by side, each
  leaving what it sent in ``UWS_SENT_DIR``, and this test alone after them.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from .. import hubutil
from ..hubutil import REPO

SPEC = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
API_MD = (REPO / "docs" / "api.md").read_text()
METHODS = ("get", "put", "post", "patch", "delete")

_DECLARED = re.compile(r"`(GET|PUT|POST|PATCH|DELETE) /hub/api(/[^`?\s]*)(?:\?[^`]*)?`(?: \([^)]*\))?\s*·")
_STATUS = re.compile(r"(?:^- |; |, | / )`(\d{3})`")


def normal(path: str) -> str:
    """A path template with its parameters unnamed: /jobs/{id} and /jobs/{job_id} are one."""
    return re.sub(r"\{\w+\}", "{}", path)


def spec_statuses() -> dict[tuple[str, str], set[str]]:
    """(METHOD, path template) -> the statuses openapi.yaml lists."""
    return {
        (method.upper(), path): {code for code in op["responses"] if code.isdigit()}
        for path, ops in SPEC["paths"].items()
        for method, op in ops.items()
        if method in METHODS
    }


def api_md_groups() -> list[tuple[list[tuple[str, str]], set[str]]]:
    """(operations, statuses) as api.md lists them: (METHOD, normalised path)s
    declared together, and the statuses of the bullets after them."""
    groups: list[tuple[list[tuple[str, str]], set[str]]] = []
    ops: list[tuple[str, str]] = []
    codes: set[str] = set()
    in_bullets = False
    for line in API_MD.splitlines() + ["#"]:
        declared = [(m.group(1), normal(m.group(2))) for m in _DECLARED.finditer(line)]
        ends = line.startswith("#") or (in_bullets and (declared or not line.startswith(("- ", "  "))))
        if ends:
            if ops:
                groups.append((ops, codes))
            ops, codes, in_bullets = [], set(), False
        ops += declared
        if line.startswith("- ") or (in_bullets and line.startswith("  ")):
            in_bullets = True
            codes.update(_STATUS.findall(line if line.startswith("- ") else "  " + line.strip()))
    return groups


def test_api_md_and_openapi_list_the_same_statuses():
    spec = {(method, normal(path)): codes for (method, path), codes in spec_statuses().items()}
    groups = api_md_groups()
    declared = [op for ops, _ in groups for op in ops]
    assert sorted(declared) == sorted(spec), (
        f"only in api.md: {sorted(set(declared) - set(spec))}; only in openapi.yaml: {sorted(set(spec) - set(declared))}"
    )
    differ = {}
    for ops, codes in groups:
        expected = set().union(*(spec[op] for op in ops))
        if not codes <= expected or expected - codes - {"400"}:
            differ[" and ".join(f"{m} {p}" for m, p in ops)] = {
                "api.md": sorted(codes),
                "openapi.yaml": sorted(expected),
            }
    assert not differ, differ


def route_pattern(path: str) -> re.Pattern:
    """The paths a template of openapi.yaml stands for ({path} may hold slashes)."""
    pattern = re.sub(r"\{(\w+)\}", lambda m: ".+" if m.group(1) == "path" else "[^/]+", path)
    return re.compile("/hub/api" + pattern)


@pytest.mark.after_all
@pytest.mark.skipif(
    not os.environ.get("UWS_STATUS_COVERAGE"), reason="only after the whole suite (make test-sqlite or make test)"
)
def test_every_documented_status_was_answered():
    templates = sorted(SPEC["paths"], key=len, reverse=True)
    patterns = {t: route_pattern(t) for t in templates}
    answered: set[tuple[str, str, str]] = set()
    for method, path, status in hubutil.all_sent():
        # the most specific template that matches (/quotas/groups/{group} before /quotas/{user})
        template = next((t for t in templates if patterns[t].fullmatch(path)), None)
        if template is not None:
            answered.add((method, template, str(status)))
    missing = sorted(
        f"{method} {path} {code}"
        for (method, path), codes in spec_statuses().items()
        for code in codes
        if (method, path, code) not in answered
    )
    assert not missing, f"documented statuses no test saw the hub answer: {missing}"
