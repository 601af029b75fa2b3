# Switchyard: `make run` serves embedded mode, `make test` runs the whole suite (both bootstrap .venv).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test test-only lint format serve worker beat bench migrate catalog clean fuzz soak

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

migrate: $(STAMP)
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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint test-only

test-only: $(STAMP)
	$(PY) -m pytest

# Production mode (README "Production"): uvicorn with WORKERS processes (default $$WEB_CONCURRENCY,
# else one per CPU); refuses to start with unapplied migrations; SIGTERM drains in-flight streams.
serve: $(STAMP)
	$(PY) manage.py serve --host $${HOST:-127.0.0.1} --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

worker: $(STAMP)
	$(VENV)/bin/celery -A switchyard worker --loglevel INFO

beat: $(STAMP)
	$(VENV)/bin/celery -A switchyard beat --loglevel INFO -s var/celerybeat-schedule

# Soak (README "Soak"): two web workers, a Celery worker and beat under a steady mixed load for
# SOAK_SECONDS (default 600). Full mode: DATABASE_URL and REDIS_URL (a database and Redis DB of its own).
soak: $(STAMP)
	$(PY) bench/soak.py

bench: $(STAMP)
	$(PY) bench/run.py

# Schemathesis against the served OpenAPI schema (README "Security"): the same test `make test` runs with
# 20 examples per operation, here FUZZ_EXAMPLES (default 1000) per operation.
fuzz: $(STAMP)
	SWITCHYARD_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(PY) -m pytest -p no:cacheprovider --timeout=0 -rA tests/security/test_fuzz.py

clean:
	rm -rf $(VENV) var staticfiles
