# `make test` and `make demo` do all the set-up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo bench faults lint docs gearmand chromium gettext postgresql-server clean

# The package is installed in editable "strict" mode: a path entry to a tree of links
# (build/__editable__...), which mypy and editors follow, unlike setuptools' default
# import hook. (manage.py and the tests import the checkout itself, new files included.)
EDITABLE := --config-settings editable_mode=strict

$(BIN)/python:
	@if ! $(PYTHON) -c "import ensurepip, venv" 2>/dev/null; then \
		echo "Installing python3-venv with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The test and development tools (tox, pytest, mypy, sphinx, playwright...).
$(BIN)/tox: pyproject.toml $(BIN)/python
	$(BIN)/pip install --quiet tox -e '.[test]' $(EDITABLE)
	touch $@

# What the demo needs and nothing more: the app, uvicorn, a DATABASE_URL parser.
$(VENV)/.demo: pyproject.toml $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]' $(EDITABLE)
	touch $@

gearmand:
	@if ! command -v gearmand >/dev/null && [ ! -x /usr/sbin/gearmand ]; then \
		echo "Installing gearmand (gearman-job-server, gearman-tools) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q gearman-job-server gearman-tools; \
	fi

# The browser tests drive Debian's chromium through Playwright; never `playwright install`.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing chromium (for the browser tests) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; \
	fi

# tests/test_i18n.py runs makemessages (xgettext) to prove the catalogs are complete.
gettext:
	@if ! command -v xgettext >/dev/null; then \
		echo "Installing gettext (for the translation catalogs' test) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q gettext; \
	fi

## Every check: ruff, mypy, makemigrations --check, the suite on Django 5.2 and 6
## with SQLite and PostgreSQL, and the Sphinx docs with warnings as errors.
test: gearmand chromium gettext $(BIN)/tox
	$(BIN)/python tests/matrix.py $(ARGS)

## The example project: gearmand, two workers and the web server. Ctrl-C stops all.
## It prints the site's URL and its admin's login.
demo: gearmand $(VENV)/.demo
	$(BIN)/python example_project/rundemo.py

## Benchmark: raw gearmand floor versus end-to-end jobs/s on SQLite and PostgreSQL;
## `make bench ARGS=--fanout` measures websocket fan-out instead.
bench: gearmand $(BIN)/tox
	$(BIN)/python -m django_gearattach.bench $(ARGS)

# The fault suite runs a private PostgreSQL cluster with the Debian server binaries.
postgresql-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server binaries (postgresql) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; \
	fi

## The fault suite on simulated hosts (network namespaces: run as root, about 5 minutes).
## Not part of `make test`. `make faults ARGS=--scale=0.25` runs a quarter of the jobs.
faults: gearmand postgresql-server $(BIN)/tox
	$(SUDO) $(BIN)/python -m tests.faults.run $(ARGS)

clean:
	rm -rf $(VENV) .venv-peers .tox docs/_build build
