# asyncdock: `make demo` to try it, `make test` to test it.
SHELL := /bin/bash
PYTHON := .venv/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k pull -x --lf'
PYTEST_ARGS ?=

.PHONY: demo setup lint test test-vs-docker stop

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

stop:
	bash scripts/stop.sh

# pytest exits 5 when it ran no test: make fails on it like on any other non-zero status.
test: setup lint
	$(PYTHON) -m pytest tests -x -q -m 'not dockerd' $(PYTEST_ARGS)

# mypy: strict over the base layer and the plugin interfaces (files and flags: pyproject.toml)
lint: setup
	$(PYTHON) -m ruff check asyncdock plugins tests bench scripts
	$(PYTHON) -m mypy

# Opt-in: tests comparing asyncdock with a real dockerd.
test-vs-docker: setup
	$(PYTHON) -m pytest tests -x -q -m dockerd $(PYTEST_ARGS)
