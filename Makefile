# Two entry points for a new user:  `make demo`  and  `make test`.
# Both create a virtual environment in .venv and install what they need on first use.
# Users with a CUDA machine can pick their PyTorch build:  make demo TORCH_SPEC="torch torchvision"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/.cpcl-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(BIN)/.cpcl-installed

demo: setup
	$(BIN)/cpcl demo --out runs/demo

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs data .pytest_cache
