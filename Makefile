# Everything runs inside .venv, created on first use from the Python on PATH (3.10+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines get the CPU wheel that pip finds locally; override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Tests and the demo use the built-in model only: never reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# `make images BACKENDS=pytorch` builds one; see README, "Running in containers".
BACKENDS ?= pytorch vllm tensorrt

.PHONY: setup demo test lint unit integration images bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[pytorch,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lem campaign campaigns/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests tools docs benchmarks
	$(BIN)/ruff format --check src tests tools docs benchmarks
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

test: lint
	$(BIN)/pytest tests -q

# The images carry the schema fingerprint of this checkout; lem refuses images without it.
images: $(STAMP)
	LEM_SCHEMA_FINGERPRINT=$$($(BIN)/python -c 'from llenergymeasure.results.schema import schema_fingerprint; print(schema_fingerprint())') \
		docker compose build $(BACKENDS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
