# The two commands a newcomer needs: `make dev` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# What pip cannot provide comes from Debian's packages, as root or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -qq

.PHONY: setup python3-venv redis promtool dev test check protos bench

setup: $(VENV)/.installed redis

# Order-only, so that checking for python3-venv does not rebuild the venv every time.
$(VENV)/.installed: pyproject.toml | python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian's python3 leaves ensurepip, which `-m venv` needs, to python3-venv: without it
# `-m venv --help` still works but `import ensurepip` fails. A missing python3 is
# installed with it.
python3-venv:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv from Debian's packages"; \
	  $(APT_GET) update && $(APT_GET) install -y --no-install-recommends python3-venv; }

# Tests and the local stack start their own redis-server; Debian's package provides it.
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  $(APT_GET) update && $(APT_GET) install -y --no-install-recommends redis-server; }

# `make check` lints the alerting rules with promtool, unpacked from Debian's prometheus
# package rather than installed: the package's postinst enables and starts a Prometheus
# server on a systemd host. A promtool already on PATH is used as is.
promtool: $(BIN)/promtool

# The download runs as whoever runs make: naming that user as apt's sandbox saves the
# warning apt prints for root when its _apt user cannot write the temporary directory.
$(BIN)/promtool: | $(VENV)/.installed
	@if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; else \
	  echo "unpacking promtool from Debian's prometheus package"; \
	  tmp=$$(mktemp -d) && $(APT_GET) update && \
	  (cd $$tmp && apt-get -qq -o APT::Sandbox::User="$$(id -un)" download prometheus) && \
	  dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -xO ./usr/bin/promtool >$$tmp/promtool && \
	  install -m 755 $$tmp/promtool $@; status=$$?; rm -rf $$tmp; exit $$status; fi

dev: setup
	$(BIN)/spillway dev

test: setup
	$(BIN)/pytest

# How lean the control plane is, against bare baselines in the same run (BENCHMARKS.md).
bench: setup
	$(BIN)/python tools/bench.py --json bench.json

# Static checks: lint, types, the proto rules, generated stubs that match protos/, and
# the alerting rules.
check: setup promtool
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/python tools/genproto.py --check
	$(BIN)/promtool check rules ops/prometheus/alerts.yml

protos: setup
	$(BIN)/python tools/genproto.py
