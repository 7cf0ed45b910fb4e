# Photobooth: `make run` serves with the embedded defaults, `make test` runs the suite.
# Both set up .venv first (idempotent: reinstalls only when pyproject.toml changed).

VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# PostgreSQL run of the suite (trust auth here; CI has the server).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: run test test-sqlite test-postgres lint migrate superuser bench clean

# Find a Python >= 3.12: python3.13/python3.12 on PATH, then pyenv's, then python3.
PYTHON_BOOT := $(shell \
	for c in python3.13 python3.12 python3; do \
		p=$$(command -v $$c 2>/dev/null) || continue; \
		$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
	done; \
	if command -v pyenv >/dev/null 2>&1; then \
		for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])' | sort -rV); do \
			p="$$(pyenv root)/versions/$$v/bin/python3"; \
			[ -x "$$p" ] && { echo $$p; exit 0; }; \
		done; \
	fi)

$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PYTHON_BOOT)" ]; then \
		echo "error: Photobooth needs Python >= 3.12; install python3.12 or python3.13 (or via pyenv)." >&2; \
		exit 1; \
	fi
	@[ -x $(PY) ] || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --no-input

# PUBLIC_BASE_URL follows HOST and PORT unless set: the built-in mockup API is reached there.
run: migrate
	PUBLIC_BASE_URL=$${PUBLIC_BASE_URL:-http://$(HOST):$(PORT)} \
		$(PY) manage.py serve --host $(HOST) --port $(PORT)

test: test-sqlite test-postgres

test-sqlite: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

# The whole suite again on PostgreSQL. Skipped with a notice when the server is absent,
# mandatory (fails) when CI is set. Tests marked `deployment` start their own PostgreSQL
# database whatever DATABASE_URL says: the first run has covered them.
test-postgres: $(VENV)/.installed
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest -m "not deployment"; \
	elif [ -n "$$CI" ]; then \
		echo "error: PostgreSQL is not reachable on 127.0.0.1:5432 and CI requires it." >&2; exit 1; \
	else \
		echo "notice: PostgreSQL not reachable on 127.0.0.1:5432; skipping the PostgreSQL run."; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

superuser: migrate
	$(PY) manage.py createsuperuser

clean:
	rm -rf $(VENV) var
