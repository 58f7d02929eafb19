# The same targets run on a laptop and in CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The runtime dependencies, pinned with hashes (`make lock` writes it): the image and
# `make install` install exactly these.
LOCK := requirements/runtime.txt

.PHONY: dev test lint typecheck secrets audit lock pytest install mosquitto compose-tools backup-tools browser-tools docker-engine compose-test soak bench clean

# Run paku-iot locally: Mosquitto child process, HTTP API and collector, SQLite in ./var.
dev: $(STAMP) mosquitto
	$(BIN)/paku-iot dev

# Everything CI checks: lint, types, secrets, known advisories, and the whole test suite
# against real services.
test: lint typecheck secrets audit pytest

pytest: $(STAMP) mosquitto compose-tools backup-tools browser-tools docker-engine
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# No secrets in the tree or anywhere in git history (allowed findings: .secrets.baseline).
secrets: $(STAMP)
	$(BIN)/python scripts/scan_secrets.py

# Known vulnerabilities in the locked runtime dependencies (pip-audit and PyPI's advisories,
# plus requirements/advisories.toml): fails on any, and when PyPI cannot be asked.
audit: $(STAMP)
	$(BIN)/python scripts/audit_deps.py $(LOCK)

# Rewrite the lock from pyproject.toml's runtime dependencies (Python 3.11+, any platform),
# keeping the pins that still fit; `make lock UPGRADE=1` moves every pin to its newest release.
# The runtime pins are resolved together with the dev extras (as constraints, not locked), so
# that the versions the tests run are the ones the image ships.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		$(if $(UPGRADE),--upgrade) --quiet -o $(VENV)/dev-resolution.txt
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		-c $(VENV)/dev-resolution.txt --custom-compile-command 'make lock' \
		$(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)

install: $(STAMP)

# The runtime dependencies from the lock, hash-checked, then paku-iot and its dev extras
# (which leave the locked packages as they are: tests/test_dependencies.py checks).
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "paku-iot needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "could not create a virtual environment: on Debian/Ubuntu run" \
		     "'sudo apt-get install python3-venv' and try again"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The benchmarks (docs/performance.md): Mosquitto, PostgreSQL, the collector and a load
# generator on this machine; results in bench/results/, the plot in docs/img/ingest.png.
# paku-iot serve runs from .venv-runtime (runtime dependencies only, like the image), so that
# memory figures count what production loads.
bench: $(STAMP) mosquitto
	@test -x .venv-runtime/bin/python || $(PYTHON) -m venv .venv-runtime
	.venv-runtime/bin/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	.venv-runtime/bin/python -m pip install --quiet --no-deps .
	PAKU_BENCH_PYTHON=.venv-runtime/bin/python $(BIN)/python -m bench all

# The long reliability runs: 30 s load, long fuzzing, fault injection, and the prod stack on
# a small VM's budget (1 CPU, 1 GB) under 1,000 msgs/s for 5 minutes (pytest marker `soak`),
# one at a time in this process (-n 0): each is meant to have the machine to itself.
soak: $(STAMP) mosquitto compose-tools browser-tools docker-engine
	$(BIN)/pytest -m soak -n 0

# Everything about the containers: the compose files checked without an engine, both stacks
# run on a real Docker engine (dev, prod, crashes), and the small-VM run (5 minutes).
compose-test: $(STAMP) mosquitto compose-tools docker-engine
	$(BIN)/pytest -m "not soak or docker" tests/compose tests/containers

mosquitto:
	@scripts/ensure-mosquitto.sh

# The compose tests check the files with Debian's docker-compose (no engine needed) and run
# the broker container's scripts under busybox sh, as the eclipse-mosquitto image would.
compose-tools:
	@command -v docker-compose >/dev/null && command -v busybox >/dev/null && \
		command -v shellcheck >/dev/null || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$$sudo apt-get install -y -qq docker-compose busybox shellcheck >/dev/null; }

# scripts/backup.sh encrypts archives with age (tests/test_backup.py), as the image does.
backup-tools:
	@command -v age >/dev/null && command -v age-keygen >/dev/null || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$$sudo apt-get install -y -qq age >/dev/null; }

# The tests that run the compose stacks on a real Docker engine (tests/containers/): installs
# docker.io, docker-compose and mmdebstrap when missing and starts dockerd when no engine
# answers (scripts/docker-engine.sh). Without an engine those tests skip, so this only fails
# in CI (CI=true), where they must run.
docker-engine:
	@scripts/docker-engine.sh || { [ "$${CI:-}" != true ] && \
		echo "docker-engine: no Docker engine: the tests in tests/containers/ will skip" >&2; }

# The dashboard's browser tests drive Debian's Chromium through Playwright (no browser download).
browser-tools:
	@command -v chromium >/dev/null || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$$sudo apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
