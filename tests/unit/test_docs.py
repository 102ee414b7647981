"""The documentation stays honest: docs/config-reference.md is what the
generator makes from the traits today, every uws-hub option has help text, and
every configurable class of uws-hub is in the generator's class list."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import signal
import subprocess

import pytest

from ..hubutil import REPO

DOCS = REPO / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_config_reference", DOCS / "generate_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return load_generator()


def test_config_reference_is_up_to_date(gen):
    expected = gen.render()
    actual = (DOCS / "config-reference.md").read_text()
    assert actual == expected, (
        "docs/config-reference.md is out of date with the traits:"
        " run `python docs/generate_config_reference.py` and commit the result"
    )


def test_generation_is_deterministic(gen):
    assert gen.render() == load_generator().render()


def test_every_uws_trait_has_help(gen):
    missing = []
    for cls in {*gen.CLASSES, *(c for c in gen.uws_configurables() if issubclass(c, gen.HasTraits))}:
        for name, trait in gen.own_traits(cls).items():
            if not inspect.cleandoc(trait.help or "").strip():
                missing.append(f"{gen.defining_class(cls, name).__name__}.{name}")
    assert not missing, f"uws-hub options without help= text: {sorted(set(missing))}"


def test_every_configurable_class_is_documented(gen):
    """A new configurable class (a SLURM spawner, a quota manager) must be added to CLASSES."""
    covered = {klass for cls in gen.CLASSES for klass in cls.__mro__}
    missing = [f"{c.__module__}.{c.__qualname__}" for c in gen.uws_configurables() if c not in covered]
    assert not missing, f"add these classes to CLASSES in docs/generate_config_reference.py: {missing}"


def test_reference_lists_uws_options_and_changed_defaults():
    text = (DOCS / "config-reference.md").read_text()
    documented = set(re.findall(r"^### `c\.(\w+\.\w+)`", text, re.M))
    for name in ("workspaces_root", "job_types", "system_users", "max_upload_bytes", "max_seed_bytes"):
        assert f"UWSHub.{name}" in documented
    # JupyterHub options whose default uws-hub changes
    for name in ("allow_named_servers", "default_url", "spawner_class", "authenticator_class", "extra_user_scopes"):
        assert f"UWSHub.{name}" in documented
    # only uws-hub's own options and changed defaults: none of JupyterHub's others
    for name in ("base_url", "db_url", "bind_url", "cookie_secret"):
        assert f"UWSHub.{name}" not in documented
    assert "WorkspaceLocalAuthenticator.bcrypt_rounds" in documented
    assert "WorkspaceLocalAuthenticator.admin_users" not in documented


def test_docs_link_to_each_other():
    admin = (DOCS / "admin-guide.md").read_text()
    assert "config-reference.md" in admin
    for name in ("user-guide.md", "admin-guide.md", "api.md", "config-reference.md", "openapi.yaml"):
        assert (DOCS / name).is_file(), name


#: options whose default depends on other settings, so `--generate-config` (which
#: shows the trait's static value) cannot show it; their help says what it is
DEPENDENT_DEFAULTS = {
    "UWSHub.job_types",  # built-in job types (a fresh copy per hub)
    "UWSHub.resource_spawners",  # {"local": "uws-local"} (a fresh copy per hub)
    "WorkspaceLDAPAuthenticator.server_port",  # 389, or 636 with use_ssl
    "WorkspaceGlobusAuthenticator.provider_name",  # changes OAuthenticator's default
}


def test_documented_defaults_are_what_generate_config_writes(gen):
    """`uws-hub --generate-config` and config-reference.md show the same default."""
    differ = []
    for cls in gen.CLASSES:
        instance = cls()
        for name, trait in gen.own_traits(cls).items():
            key = f"{cls.__name__}.{name}"
            if key not in DEPENDENT_DEFAULTS and repr(instance.trait_defaults(name)) != trait.default_value_repr():
                differ.append(
                    f"{key}: documented {instance.trait_defaults(name)!r}, generated {trait.default_value_repr()}"
                )
    assert not differ, differ


def test_make_run_says_where_the_hub_listens(tmp_path):
    """`make run` announces the URL of UWS_BIND_URL (which jupyterhub_config.py listens at)."""
    env = {**os.environ, "UWS_BIND_URL": "http://127.0.0.1:28123"}
    # -o install: the venv is there; the hub it starts is stopped as soon as the line is read
    make = subprocess.Popen(
        ["make", "-s", "-o", "install", "run", f"STATE={tmp_path / 'state'}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in make.stdout:
            lines.append(line)
            if line.startswith("Starting uws-hub"):
                break
    finally:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait()
    assert lines[-1].startswith("Starting uws-hub at http://127.0.0.1:28123 "), "".join(lines)
