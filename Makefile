# Switchyard: `make run` serves embedded mode, `make test` runs the whole suite (both bootstrap .venv).
#
# Python: PYTHON=/path/to/python3.x if given, else the first of python3.11, python3.12, python3.13, python3
# that runs and is 3.11-3.13 (3.11 first: the Docker image and the reference CI run use it). A .venv made
# by another interpreter than the chosen one is rebuilt (its stamp names the version).
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
SUPPORTED_CHECK := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c '$(SUPPORTED_CHECK)' >/dev/null 2>&1 && { command -v $$p; exit 0; }; done)
endif
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
HASH := $(shell sha1sum pyproject.toml | cut -c1-12)
# `make run` needs only the runtime dependencies; `make test`/`lint` add the dev extra (pytest, mypy,
# Playwright...), `make docs` the docs extra. Each stamp is per interpreter version and pyproject.toml.
RUN_STAMP := $(VENV)/.installed-run-$(PYVER)-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(PYVER)-$(HASH)
DOCS_STAMP := $(VENV)/.installed-docs-$(PYVER)-$(HASH)

.PHONY: run test test-only lint format serve worker beat bench migrate catalog clean fuzz soak docs docs-serve venv screenshots

# Creates .venv with $(PYTHON), or rebuilds it when another interpreter version made it.
venv:
	@test -n "$(PYTHON)" || { echo "No Python 3.11, 3.12 or 3.13 found (tried python3.11, python3.12, python3.13, python3): install one, or run make PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -n "$(PYVER)" || { echo "PYTHON=$(PYTHON) does not run (a pyenv shim for a version that is not active?): give the interpreter's full path" >&2; exit 1; }
	@$(PYTHON) -c '$(SUPPORTED_CHECK)' || { echo "PYTHON=$(PYTHON) is Python $(PYVER); Switchyard supports 3.11, 3.12 and 3.13" >&2; exit 1; }
	@have=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true); \
	if [ "$$have" != "$(PYVER)" ]; then \
	  if [ -n "$$have" ]; then echo "$(VENV) was made by Python $$have, not $(PYVER) ($(PYTHON)): rebuilding it"; \
	  elif [ -e $(VENV) ]; then echo "$(VENV) has no working interpreter: rebuilding it"; fi; \
	  rm -rf $(VENV) && echo "creating $(VENV) with $(PYTHON) (Python $(PYVER))" && $(PYTHON) -m venv $(VENV) \
	    && $(PY) -m pip install --disable-pip-version-check --upgrade pip; \
	fi

$(RUN_STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv
	@echo "installing the runtime dependencies into $(VENV) (Python $(PYVER))"
	$(PY) -m pip install --disable-pip-version-check .
	@rm -f $(VENV)/.installed-run-*
	@touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv
	@echo "installing the runtime and dev dependencies into $(VENV) (Python $(PYVER))"
	$(PY) -m pip install --disable-pip-version-check ".[dev]"
	@rm -f $(VENV)/.installed-run-* $(VENV)/.installed-dev-*
	@touch $(RUN_STAMP) $(DEV_STAMP)

$(DOCS_STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv
	$(PY) -m pip install --disable-pip-version-check ".[docs]"
	@rm -f $(VENV)/.installed-docs-*
	@touch $(DOCS_STAMP)

migrate: $(RUN_STAMP)
	$(PY) manage.py migrate --noinput -v0

catalog: migrate
	$(PY) manage.py load_catalog routing/catalog/default.yaml

run: catalog
	@KEY=$$($(PY) manage.py seed_demo | tail -n 1); \
	echo ""; \
	echo "  Switchyard (embedded mode) on http://127.0.0.1:$(PORT)   admin: http://127.0.0.1:$(PORT)/admin/"; \
	echo "  Admin login: admin@switchyard.local / switchyard-admin"; \
	echo "  Demo API key: $$KEY"; \
	echo ""; \
	echo "  curl http://127.0.0.1:$(PORT)/api/v1/chat/completions \\"; \
	echo "    -H \"Authorization: Bearer $$KEY\" -H 'Content-Type: application/json' \\"; \
	echo "    -d '{\"model\": \"switchyard/sim-1\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'"; \
	echo ""; \
	exec $(VENV)/bin/uvicorn switchyard.asgi:application --http switchyard.server:TimedHttpToolsProtocol --host 127.0.0.1 --port $(PORT) --log-level warning

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports --no-cache

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint test-only

test-only: $(DEV_STAMP)
	$(PY) -m pytest

# Production mode (docs/operations/production.md): uvicorn with WORKERS processes (default $$WEB_CONCURRENCY,
# else one per CPU); refuses to start with unapplied migrations; SIGTERM drains in-flight streams.
serve: $(RUN_STAMP)
	$(PY) manage.py serve --host $${HOST:-127.0.0.1} --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

worker: $(RUN_STAMP)
	$(VENV)/bin/celery -A switchyard worker --loglevel INFO

beat: $(RUN_STAMP)
	$(VENV)/bin/celery -A switchyard beat --loglevel INFO -s var/celerybeat-schedule

# Soak (docs/performance.md "Soak"): two web workers, a Celery worker and beat under a steady mixed load for
# SOAK_SECONDS (default 600). Full mode: DATABASE_URL and REDIS_URL (a database and Redis DB of its own).
soak: $(DEV_STAMP)
	$(PY) bench/soak.py

bench: $(DEV_STAMP)
	$(PY) bench/run.py

# Schemathesis against the served OpenAPI schema (docs/operations/hardening.md): the same test `make test` runs with
# 20 examples per operation, here FUZZ_EXAMPLES (default 1000) per operation.
fuzz: $(DEV_STAMP)
	SWITCHYARD_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(PY) -m pytest -p no:cacheprovider --timeout=0 -rA tests/security/test_fuzz.py

# The documentation site (docs/, mkdocs.yml); broken links fail the build, as in CI.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# Every page at 390 and 1440 px, light and dark, from a live server with seeded data, as PNGs under
# artifacts/screenshots/ (docs/dashboard.md). Needs /usr/bin/chromium (apt-get install chromium).
screenshots: $(DEV_STAMP)
	$(PY) -m pytest -p no:cacheprovider -q -s tests/dashboard/screenshots.py

clean:
	rm -rf $(VENV) var staticfiles
