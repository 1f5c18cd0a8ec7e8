# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: run test lint format typecheck migrate bench bench-smoke clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-groups
	@touch $(STAMP)

run: $(STAMP)
	$(UV) run --frozen crew-platform migrate
	$(UV) run --frozen crew-platform serve

migrate: $(STAMP)
	$(UV) run --frozen crew-platform migrate

test: $(STAMP)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: $(STAMP)
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: $(STAMP)
	$(UV) run --frozen python -m bench.run

bench-smoke: $(STAMP)
	$(UV) run --frozen python -m bench.run --smoke

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
