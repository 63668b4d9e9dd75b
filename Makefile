# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint readme clean postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench,cluster]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# The cluster tests start a throwaway PostgreSQL from Debian's server binaries (tests/cluster/servers.py).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
		else \
			echo "make: PostgreSQL server binaries missing (apt-get install postgresql); cluster tests skip"; \
		fi; \
	fi

test: $(STAMP) lint postgres
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m batch_scheduler.commands.demo

readme: $(STAMP)  # the option table in README.md, from batch_scheduler/core/options.py
	$(BIN)/python -m batch_scheduler.core.options --readme README.md

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-out .pytest_cache
