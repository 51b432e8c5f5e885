# The two commands of the README: `make run` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: run test lint venv bench-ingest bench-guard amo-widget css

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	SANDBOX_ENABLED=$${SANDBOX_ENABLED:-1} $(PY) -m app.local

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

# Two pytest-xdist workers (one per core); each has its own Redis database and PostgreSQL database
# (tests/conftest.py). `make test PYTEST_ARGS=` runs in one process.
PYTEST_ARGS ?= -n 2 --dist worksteal

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Webhook ingest vs a bare Flask endpoint under the same gunicorn settings (bench/RESULTS.md).
bench-ingest: venv
	$(PY) bench/ingest.py $(BENCH_ARGS)

# The amoCRM widget archive for upload: dist/widget.zip (backend address from PUBLIC_URL).
amo-widget:
	$(PYTHON) -m installers.amo_widget --out dist/widget.zip

# Guard latency and CRM requests per illegal move: sandbox portal over TLS, gunicorn, RQ worker processes.
bench-guard: venv
	$(PY) bench/guard.py $(BENCH_ARGS)

# The Bitrix24 UI kit tokens for the pages (app/web/static/css/b24style.css, committed): needs Node and npm,
# only when app/web/style/tokens.css or the kit's version changes.
css:
	cd app/web/style && npm ci --no-audit --no-fund && npm run build
