# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint readme settings clean browser postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench,parquet,cluster,vertex]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy batch_scheduler

# the status page's test renders it in headless Chromium (Debian's package); under CI (root, a fresh
# machine) a browser that cannot be installed fails the run, elsewhere the test skips without one
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| [ "$$CI" != "true" ]

# the cluster tests start a throwaway PostgreSQL from Debian's server binaries (tests/cluster/servers.py);
# under CI (root) they are installed when missing, elsewhere the cluster tests skip without them
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ( [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql ) \
		|| [ "$$CI" != "true" ]

test: $(STAMP) lint browser postgres
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m batch_scheduler.commands.demo

readme: $(STAMP)  # the option table in README.md, from batch_scheduler/core/options.py
	$(BIN)/python -m batch_scheduler.core.options --readme README.md

settings: $(STAMP)  # the typed option fields of Settings in batch_scheduler/core/settings.py, from the same table
	$(BIN)/python -m batch_scheduler.core.options --settings batch_scheduler/core/settings.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-out .pytest_cache
