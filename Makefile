# Two commands do all the set-up on a fresh machine (Python 3.11, Debian):
#   make run    create the environment, start the built-in emulator, run a 30 s headless demo
#   make test   install what the tests need, check style and types, run the whole suite (CI runs exactly this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= scenarios/demo.yaml
RUN_ARGS ?= --headless --only-summary

# System packages the tests need (Debian): a real metrics server for the InfluxDB tests and
# a real browser for the web UI and report tests (Playwright drives the system chromium), a real
# forward proxy (tinyproxy) for the proxy tests, and shellcheck, which actionlint runs on the example
# workflow's scripts.
SYSTEM_PACKAGES := victoria-metrics chromium tinyproxy-bin shellcheck
SYSTEM_BINARIES := victoria-metrics chromium tinyproxy shellcheck

.PHONY: install install-test system-deps run sweep levers lint test test-repeat bench soak clean

# What running needs (make run, sweep, levers, bench, soak), and on top what the tests and the
# style and type checks need (make test, lint); each installed once, again when these files change
# (pip builds harness/_loopread.c in place).
$(VENV)/.installed: pyproject.toml constraints.txt harness/_loopread.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/locust -f locustfile.py --scenario $(SCENARIO) $(RUN_ARGS)

# A capacity sweep against the emulator with a capacity (about 3 minutes): the sustainable rate
# under the scenario's SLOs, and the capacity curve in runs/sweep-report.html.
sweep: install
	$(BIN)/locust -f locustfile.py --headless --only-summary --scenario scenarios/sweep.yaml \
		--emulator-profile scenarios/emulator/capacity.yaml --report runs/sweep-report.html --summary-json runs/sweep-summary.json

# The latency levers of Anthropic's "Reducing latency" guide as one experiment against the emulator
# (about 2 minutes): each lever a variant, compared with the baseline with 95 % intervals; the
# report with the variants' CDFs in runs/levers-report.html. The emulator's effects are synthetic.
levers: install
	$(BIN)/locust -f locustfile.py --headless --only-summary --scenario scenarios/latency-levers.yaml \
		--emulator-profile scenarios/emulator/levers.yaml --report runs/levers-report.html --summary-json runs/levers-summary.json

system-deps:
	@for bin in $(SYSTEM_BINARIES); do command -v $$bin >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	fi

# Style and types, enforced: ruff (lint and format, configured in pyproject.toml) and mypy.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install-test system-deps lint
	$(BIN)/python -m tests.support.shards

# Flake hunter (not in CI): the suite N times, each on a fresh clone; lists every test that failed once.
N ?= 5
test-repeat:
	$(PYTHON) .ci/test-repeat $(N)

bench: install
	$(BIN)/python -m benchmarks.bench

# Long-run check (not in CI): 10 min at 100 users, RSS slope per process and disk per million requests.
SOAK_ARGS ?=
soak: install
	$(BIN)/python -m harness.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
