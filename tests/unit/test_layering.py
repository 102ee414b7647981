"""uws_hub.spawners and uws_hub.authenticators stay plug-ins: importing them
pulls in neither the hub application, nor the ORM, nor the handlers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import uws_hub

HUB_MODULES = [
    "uws_hub.app",
    "uws_hub.orm",
    "uws_hub.apihandlers",
    "uws_hub.handlers",
    "uws_hub.jobs",
    "uws_hub.workspaces",
]


@pytest.mark.parametrize(
    "module",
    [
        "uws_hub.spawners.local",
        "uws_hub.spawners.slurm",
        "uws_hub.spawners.slurm.poller",
        "uws_hub.authenticators.local",
        "uws_hub.authenticators.identity",
        "uws_hub.authenticators.jobenv",
        "uws_hub.authenticators.remote_api",
        "uws_hub.authenticators.ldap",
        "uws_hub.authenticators.oauth",
        "uws_hub.authenticators.globus",
    ],
)
def test_plugins_do_not_import_the_hub(module):
    code = f"import sys, {module}\nbad = [m for m in {HUB_MODULES!r} if m in sys.modules]\nprint(','.join(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{module} imports {out}"


def test_entry_points_are_registered():
    from importlib.metadata import entry_points

    spawners = {ep.name: ep.value for ep in entry_points(group="jupyterhub.spawners")}
    auths = {ep.name: ep.value for ep in entry_points(group="jupyterhub.authenticators")}
    assert spawners["uws-local"] == "uws_hub.spawners.local:WorkspaceLocalProcessSpawner"
    assert spawners["uws-slurm"] == "uws_hub.spawners.slurm:WorkspaceSlurmSpawner"
    assert auths["uws-local"] == "uws_hub.authenticators.local:WorkspaceLocalAuthenticator"
    assert auths["uws-oidc"] == "uws_hub.authenticators.oauth:WorkspaceOIDCAuthenticator"
    assert auths["uws-globus"] == "uws_hub.authenticators.globus:WorkspaceGlobusAuthenticator"
    assert auths["uws-ldap"] == "uws_hub.authenticators.ldap:WorkspaceLDAPAuthenticator"
    assert auths["uws-remote-api"] == "uws_hub.authenticators.remote_api:WorkspaceRemoteAPIAuthenticator"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["uws-hub"] == "uws_hub.app:main"


def _imports(path: Path, module: str) -> set[str]:
    """The uws_hub modules ``module`` imports (those for type checking too: a cycle hidden
    behind TYPE_CHECKING is still one for readers and for mypy)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("uws_hub")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("uws_hub"):
                found.add(target)
                # `from . import x` imports the module x
                found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def test_no_import_cycles():
    """Imports go one way (handlers, services, domain, orm): no cycle, however long."""
    root = Path(uws_hub.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        if "alembic" in path.parts:
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}
    # a package's __init__ importing its own modules is not a cycle through the package
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_hub_leaves_out_what_importing_batchspawner_adds_to_jupyterhub():
    """Importing batchspawner appends its handler (which sets any spawner attribute from a
    request body) to JupyterHub's API handlers; the SLURM spawner names it, so the hub
    leaves it out of its routes (at init, not by rewriting JupyterHub's list on import)."""
    code = (
        "import jupyterhub.apihandlers as api\n"
        "from uws_hub.spawners.slurm import WorkspaceSlurmSpawner\n"
        "added = {h[1] for h in api.default_handlers if h[1].__module__.startswith('batchspawner')}\n"
        "print(bool(added) and added <= set(WorkspaceSlurmSpawner.unwanted_hub_handlers()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"


def test_the_hub_does_not_compile_the_iri_grammar_jsonschema_would_load():
    """rfc3987_syntax (jsonschema's "iri" formats) compiles a grammar as it is imported,
    half of the hub's start-up: the hub starts without it (uws_hub/__init__.py), and
    still checks the formats its schemas use."""
    code = (
        "import sys, uws_hub.app, jsonschema\n"
        "checkers = jsonschema.FormatChecker().checkers\n"
        "print(sys.modules.get('rfc3987_syntax'), 'iri' in checkers, 'uri' in checkers, 'date-time' in checkers)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "None False True True"
