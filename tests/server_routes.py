"""Print every route a workspace job's Jupyter server registers, each with a
concrete URL the server routes to it (one JSON line after ``ROUTES``).

tests/integration/test_server_access.py runs this with a running job's own command-line
arguments, environment, account and directory (read from ``/proc``) and
another port, so it builds the very server app the job runs (JupyterHub's
single-user extension, every server extension installed in the environment,
uws-hub's serverconfig) without starting it. ``UWS_TEST_SAMPLES`` (JSON) holds
values to put in the URLs, tried in order (the first that lets the URL reach
the route wins): ``named`` by group name (a kernel's id, a session's),
``unnamed`` for the other groups; ``prefix`` is the server's URL prefix.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from re import _constants as C  # noqa: N812
from re import _parser

import jupyterhub.singleuser  # noqa: F401  (checks the environment as jupyterhub-singleuser does)
from jupyterhub.singleuser.extension import JupyterHubSingleUser
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine


def flat_rules(router):
    """The routing rules in the order the server tries them (nested routers flattened)."""
    for rule in router.rules:
        if hasattr(rule.target, "rules"):
            yield from flat_rules(rule.target)
        else:
            yield rule


def outer_groups(tree) -> list[tuple[int, str | None]]:
    """(number, name) of the capturing groups not inside another one."""
    names = {number: name for name, number in tree.state.groupdict.items()}
    found = []

    def walk(items):
        for op, av in items:
            if op is C.SUBPATTERN and av[0] is not None:
                found.append((av[0], names.get(av[0])))
            elif op is C.SUBPATTERN:
                walk(av[3])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
                walk(av[2])
            elif op is C.BRANCH:
                for alternative in av[1]:
                    walk(alternative)

    walk(tree)
    return found


def text(items, chosen: dict[int, str]) -> str:
    """One string the parsed pattern ``items`` matches, with ``chosen`` group values."""
    out = []
    for op, av in items:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op in (C.NOT_LITERAL, C.ANY):
            out.append("y" if op is C.NOT_LITERAL and av == ord("x") else "x")
        elif op is C.IN:
            out.append(char_in(av))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            low, high, sub = av
            out.append(text(sub, chosen) * (low or min(1, high)))
        elif op is C.BRANCH:
            out.append(text(av[1][0], chosen))
        elif op is C.SUBPATTERN:
            out.append(chosen[av[0]] if av[0] in chosen else text(av[3], chosen))
        # AT (anchors) and assertions add nothing
    return "".join(out)


def char_in(items) -> str:
    if items and items[0][0] is C.NEGATE:
        excluded = {chr(av) for op, av in items[1:] if op is C.LITERAL}
        return "x" if "x" not in excluded else "y"
    op, av = items[0]
    if op is C.LITERAL:
        return chr(av)
    if op is C.RANGE:
        return chr(av[0])
    return {C.CATEGORY_DIGIT: "1", C.CATEGORY_SPACE: " "}.get(av, "a")


def example(rule, rules, samples) -> str | None:
    """A URL the server routes to ``rule`` (the first rule matching it), or None."""
    regex = rule.matcher.regex
    tree = _parser.parse(regex.pattern)
    options = []
    for number, name in outer_groups(tree):
        values = samples["named"].get(name, samples["unnamed"])
        options.append([(number, value) for value in values] + [(number, None)])
    found = []
    for choice in itertools.product(*options):
        chosen = {number: value for number, value in choice if value is not None}
        url = text(tree, chosen)
        request = HTTPServerRequest(
            start_line=RequestStartLine("GET", url, "HTTP/1.1"), headers=HTTPHeaders({"Host": "127.0.0.1"})
        )
        first = next((r for r in rules if r.matcher.match(request) is not None), None)
        if first is rule:
            found.append(url)
            if url.startswith(samples["prefix"]):
                return url
    # a route outside the server's prefix (the proxy sends such URLs elsewhere)
    return found[0] if found else None


def main() -> None:
    samples = json.loads(os.environ["UWS_TEST_SAMPLES"])
    serverapp = JupyterHubSingleUser.initialize_server(argv=sys.argv[1:])
    rules = list(flat_rules(serverapp.web_app.default_router))
    routes = []
    for rule in rules:
        handler = rule.target
        routes.append(
            {
                "pattern": rule.matcher.regex.pattern,
                "handler": f"{handler.__module__}.{handler.__qualname__}",
                "url": example(rule, rules, samples),
            }
        )
    print("ROUTES " + json.dumps(routes), flush=True)
    os._exit(0)  # the server's threads and tasks need not end


if __name__ == "__main__":
    main()
