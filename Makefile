# Two entry points for a new user:  `make demo`  and  `make test`.
# Both create a virtual environment in .venv and install what they need on first use.
# Users with a CUDA machine can pick their PyTorch build:  make demo TORCH_SPEC="torch torchvision"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup browser demo test lint docs docs-serve clean

$(BIN)/.cpcl-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(BIN)/.cpcl-installed

# Headless Chromium + ChromeDriver (Debian packages) for the browser test of the search page.
# Installed with apt-get when missing and root (or sudo) is available; otherwise that one test is skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "note: no apt-get: install chromium and chromedriver yourself to run the browser test"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: not root: run 'sudo apt-get install chromium chromium-driver' to run the browser test"; fi

# the demo's own output folder: a rerun replaces the previous demo (--overwrite)
demo: setup
	$(BIN)/cpcl demo --out runs/demo --overwrite

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup browser lint
	$(BIN)/python -m pytest -q

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or anchor, or an API page
# naming what no longer exists, fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf runs data site .pytest_cache test-artifacts
