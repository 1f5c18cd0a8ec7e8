# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: run dev stub example examples test browser lint format migrate bench bench-smoke \
	profile-engine clean compile-src

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled at install time: uv does not by default, and where PYTHONDONTWRITEBYTECODE
# is set (or the venv is read-only) every start would compile every imported module again, most
# of the start-up time. `compile-src` does the same for our own (editable) code.
# `make run` installs only what the service needs; `make test` adds the dev group (test and lint
# tools), `make bench` the bench group too. `--inexact` keeps what another target installed.
SYNC := $(UV) sync --frozen --inexact --compile-bytecode --no-default-groups
RUN_STAMP := $(VENV)/.synced-run
DEV_STAMP := $(VENV)/.synced-dev
BENCH_STAMP := $(VENV)/.synced-bench

$(RUN_STAMP): $(UV) pyproject.toml uv.lock Makefile
	$(SYNC)
	@touch $@

$(DEV_STAMP): $(UV) pyproject.toml uv.lock Makefile
	$(SYNC) --group dev
	@touch $@

$(BENCH_STAMP): $(UV) pyproject.toml uv.lock Makefile
	$(SYNC) --group dev --group bench
	@touch $@

compile-src: $(RUN_STAMP)
	@$(UV) run --frozen --no-sync python -m compileall -q src

run: compile-src
	$(UV) run --frozen --no-sync crew-platform migrate
	$(UV) run --frozen --no-sync crew-platform serve

# `make dev`: the server with auto-reload on code changes (HOST/PORT and the rest from the
# environment, as for `make run`).
dev: $(RUN_STAMP)
	$(UV) run --frozen --no-sync crew-platform serve --migrate --reload

# `make stub`: the OpenAI-compatible LLM stub the tests use, for runs without a key. Point the
# server at it: CEREBRAS_API_KEY=x CEREBRAS_BASE_URL=http://127.0.0.1:9100/v1 make run
STUB_HOST ?= 127.0.0.1
STUB_PORT ?= 9100
stub: $(RUN_STAMP)
	$(UV) run --frozen --no-sync python -m crew_platform.devtools.llm_stub \
		--host $(STUB_HOST) --port $(STUB_PORT)

# `make example NAME=research_dag` runs one script of examples/ against a running server,
# `make examples` all of them. They use only Python's standard library.
BASE_URL ?= http://localhost:8000
NAME ?= content_pipeline
EXAMPLES := content_pipeline research_dag report_with_expected_output
example:
	$(PYTHON) examples/$(NAME).py --base-url $(BASE_URL)

examples:
	@set -e; for name in $(EXAMPLES); do \
		echo "== $$name"; $(PYTHON) examples/$$name.py --base-url $(BASE_URL); done

migrate: $(RUN_STAMP)
	$(UV) run --frozen --no-sync crew-platform migrate

# The offline /docs test drives Debian's chromium (not Playwright's download, which needs the
# internet). Installed only where it is missing and we may: as root, with apt-get; else a no-op.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1; then \
		echo "Installing chromium (apt-get) for tests/test_docs_offline.py"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq && apt-get install -y -qq chromium; } \
			>/dev/null || echo "chromium not installed: the browser test skips (fails under CI=true)"; \
	fi

test: browser $(DEV_STAMP)
	$(UV) run --frozen --no-sync pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync ruff format --check .
	$(UV) run --frozen --no-sync mypy
	$(UV) run --frozen --no-sync lint-imports

format: $(DEV_STAMP)
	$(UV) run --frozen --no-sync ruff format .
	$(UV) run --frozen --no-sync ruff check --fix .

bench: $(BENCH_STAMP) compile-src
	$(UV) run --frozen --no-sync python -m bench.run

bench-smoke: $(BENCH_STAMP) compile-src
	$(UV) run --frozen --no-sync python -m bench.run --smoke

# `make profile-engine PROFILE_TASKS=50 PROFILE_OUT=/tmp/engine.txt`; pyinstrument is not a
# project dependency, `--with` brings it for this command only.
PROFILE_TASKS ?= 50
PROFILE_OUT ?=
profile-engine: $(BENCH_STAMP) compile-src
	$(UV) run --frozen --no-sync --with pyinstrument \
		python -m bench.profile_engine $(PROFILE_TASKS) $(PROFILE_OUT)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
