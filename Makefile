# The two commands: `make serve` and `make test`. Both bootstrap everything on a fresh machine that has
# python3 (>= 3.11) and make: the virtualenv, the package with its extras, the database schema, and the
# self-signed certificate (made by the server on first start).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup serve test lint interop bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e examples/echo_plugin   # the example plugin the tests run
	@touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(VENV)/bin/xmppim migrate
	exec $(VENV)/bin/xmppim serve

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check xmppim plugins
	$(VENV)/bin/mypy xmppim plugins

interop: setup
	bash scripts/interop.sh $(INTEROP_ARGS)

bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
