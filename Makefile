# Two commands for a newcomer: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MODE   ?= standard
STAMP  := $(VENV)/.installed

.PHONY: demo test test-quick lint clean schema bench wheelhouse man

WHEELHOUSE := $(VENV)/cache/wheelhouse

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(PY) -m vaultpki.dev.demo --mode $(MODE) --out demo

# The hashicorp/vault 5.6.0 schema (npm @cdktf/provider-vault, integrity-checked) for the
# offline terraform validate/test stand-in; fetched once into .venv/cache.
schema: $(STAMP)
	tools/fetch-vault-schema.sh $(VENV)/cache >/dev/null

# The man pages in man/ (vaultpki.1 and one per command), rendered from the CLI's help by click-man and committed: the
# wheel ships them (share/man/man1), and tests/integration/test_completion_man.py fails while they differ from a fresh
# rendering. Run it after changing any command's help text.
man: $(STAMP)
	rm -f man/*.1
	$(VENV)/bin/click-man --target man vaultpki

# vaultpki's dependencies as wheels, downloaded once: the deployment tests install vaultpki with pip, as the
# install docs say, into fresh root file systems, from this folder and never from an index (tests/support/wheel.py).
$(WHEELHOUSE)/.done: pyproject.toml
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) .
	rm -f $(WHEELHOUSE)/vaultpki-*.whl
	touch $@

wheelhouse: $(STAMP) $(WHEELHOUSE)/.done

# The whole suite: what CI runs, and what must pass before a change goes in.
test: $(STAMP) schema wheelhouse
	$(PY) -m pytest -q

# Day-to-day: everything but the tests marked `slow` (those that wait in real time for renewals,
# elections and outages). One test: $(PY) -m pytest tests/unit/test_config.py::test_parse_errors
test-quick: $(STAMP) schema wheelhouse
	$(PY) -m pytest -q -m "not slow"

# Speed and memory, measured side by side against the same OpenBao in one run (never in a timed test).
# vaultpki runs from a second venv holding only its own dependencies, as a user's install does: the dev
# extras bring packages that vaultpki's dependencies load when they are there (mypy's typing_extensions,
# which msgspec imports: ~2 % of a cold command). The benchmarks themselves run in .venv.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e .
	touch $@

bench: $(STAMP) $(BENCH_STAMP)
	BENCH_PYTHON=$(CURDIR)/$(BENCH_VENV)/bin/python $(PY) bench/agent_bench.py
	BENCH_PYTHON=$(CURDIR)/$(BENCH_VENV)/bin/python $(PY) bench/bulk_bench.py
	BENCH_PYTHON=$(CURDIR)/$(BENCH_VENV)/bin/python $(PY) bench/fleet_bench.py

lint: $(STAMP)
	$(PY) -m ruff check vaultpki tests tools bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(BENCH_VENV) demo .pytest_cache .mypy_cache .ruff_cache
