# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: run test lint format typecheck migrate bench bench-smoke clean compile-src

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled at install time: uv does not by default, and where PYTHONDONTWRITEBYTECODE
# is set (or the venv is read-only) every start would compile ~430 modules again (~0.75 s of a
# ~1.3 s start-up on a 2-core machine). `compile-src` does the same for our own (editable) code.
$(STAMP): $(UV) pyproject.toml uv.lock Makefile
	$(UV) sync --frozen --all-groups --compile-bytecode
	@touch $(STAMP)

compile-src: $(STAMP)
	@$(UV) run --frozen python -m compileall -q src

run: compile-src
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

bench: compile-src
	$(UV) run --frozen python -m bench.run

bench-smoke: compile-src
	$(UV) run --frozen python -m bench.run --smoke

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
