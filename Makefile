# Every target sets itself up: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

# The dependencies come pinned, with their hashes, from requirements-dev.lock (`make lock`
# writes it and requirements.lock, the runtime set, from pyproject.toml); the project itself
# goes in editable, without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet -e . --no-deps
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the service with its development tools

UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet --custom-compile-command 'make lock'

.PHONY: lock
lock: $(STAMP) ## Pin the dependencies again from pyproject.toml (requirements*.lock)
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

.PHONY: run
run: $(STAMP) ## Serve the exchange (SQLite in ./var unless EXCHANGE_DATABASE_URL is set)
	$(BIN)/litestar run

# The console's browser tests drive Debian's chromium (headless, through Playwright's Python API;
# never `playwright install`). As root it is installed when missing; otherwise those tests skip,
# except in CI, where a missing browser fails them.
.PHONY: browser
browser: ## Install Debian's chromium for the console's browser tests (as root, when missing)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (the console's browser tests)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }; \
	  else \
	    echo "chromium is missing: the console's browser tests will skip (sudo apt-get install -y chromium)"; \
	  fi; }

.PHONY: test
test: $(STAMP) browser ## Run the whole suite, on SQLite and on PostgreSQL
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## Lint, check formatting, type-check and check the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks against PostgreSQL (see bench/README.md); installs wrk as root
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk (the load generator of the API scenarios)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }; \
	  else \
	    echo "wrk is needed: sudo apt-get install -y wrk (or build it from github.com/wg/wrk)"; \
	    exit 1; \
	  fi; }
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and caches (keeps ./var)
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
