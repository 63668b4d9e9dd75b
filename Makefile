# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
CORE := $(VENV)/.installed-core
# system packages: no recommended extras, and their output kept in a log shown only when they fail
APT_LOG := $(VENV)/apt.log
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: demo test bench lint readme settings clean system

# pip's output goes to .venv/pip.log, shown only when an install fails
PIP_LOG := $(VENV)/pip.log
PIP := $(BIN)/pip install -q --disable-pip-version-check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); false; }

# the demo needs the core only (what `pip install .` gives)
$(CORE): pyproject.toml | $(VENV)/bin/python
	@echo "installing batch-scheduler (the core) into $(VENV); log: $(PIP_LOG)"
	@$(PIP) -e . >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); false; }
	@touch $(CORE)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@echo "installing batch-scheduler with the dev extras into $(VENV); log: $(PIP_LOG)"
	@$(PIP) -e '.[dev,bench,parquet,cluster,vertex]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); false; }
	@touch $(STAMP) $(CORE)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy batch_scheduler

# Debian's packages the tests use, installed when missing (CI runs as root on a fresh machine; elsewhere a
# missing one makes its tests fail with what to install): chromium renders the status page, postgresql's
# server binaries back the cluster tests (tests/cluster/servers.py), zsh and fish check the completions
system: | $(VENV)/bin/python
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-liberation"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v zsh >/dev/null 2>&1 || missing="$$missing zsh"; \
	command -v fish >/dev/null 2>&1 || missing="$$missing fish"; \
	if [ -n "$$missing" ]; then echo "installing$$missing (Debian's packages; log: $(APT_LOG))"; \
		( [ "$$(id -u)" = 0 ] && apt-get update -qq && $(APT) $$missing ) >$(APT_LOG) 2>&1 \
		|| { tail -n 30 $(APT_LOG); [ "$$CI" != "true" ]; }; fi

# two workers, each taking whole files (a file's module fixtures and servers are started once): the suite
# mostly waits on subprocesses, simulators and servers, so two cores run it in about half the time
test: $(STAMP) lint system
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: $(CORE)
	$(BIN)/python -m batch_scheduler.commands.demo

readme: $(STAMP)  # the option table in README.md, from batch_scheduler/core/options.py
	$(BIN)/python -m batch_scheduler.core.option_docs --readme README.md

settings: $(STAMP)  # the typed option fields of Settings in batch_scheduler/core/settings.py, from the same table
	$(BIN)/python -m batch_scheduler.core.option_docs --settings batch_scheduler/core/settings.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-out .pytest_cache
