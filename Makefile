# Two commands do all the set-up on a fresh machine (Python 3.11, Debian):
#   make run    create the environment, start the built-in emulator, run a 30 s headless demo
#   make test   install what the tests need and run the whole suite (CI runs exactly this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= scenarios/demo.yaml
RUN_ARGS ?= --headless --only-summary --stop-timeout 30s

.PHONY: install run test clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/locust -f locustfile.py --scenario $(SCENARIO) $(RUN_ARGS)

test: install
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
