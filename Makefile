# The two commands a newcomer needs: `make dev` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup redis dev test check protos

setup: $(VENV)/.installed redis

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Tests and the local stack start their own redis-server; Debian's package provides it.
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

dev: setup
	$(BIN)/spillway dev

test: setup
	$(BIN)/pytest

# Static checks: lint, types, the proto rules, and generated stubs that match protos/.
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/python tools/genproto.py --check

protos: setup
	$(BIN)/python tools/genproto.py
