# Two commands on a fresh machine:
#   make quickstart   the CPU pipeline end to end (see README)
#   make test         the test suite (CPU, gloo; ~15-20 minutes on 2 cores)
# On a GPU machine (docs/cluster.md):
#   make test-gpu     tests/gpu: Transformer Engine, FP8, grouped-GEMM MoE, NCCL layouts
#   make gpu-check    tests/gpu + the throughput bench, < 8 min, results in gpu_check_results/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first: `torch==2.13.0` resolves to the CPU build that lies on this project's machines; a
# bare `torch` requirement would pull a multi-GB CUDA build. Override on GPU machines, e.g.
# `make install TORCH_SPEC=` to keep the container's torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
QUICKSTART_DIR ?= runs/quickstart

.PHONY: install quickstart test test-slow test-all test-gpu gpu-check lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PIP) install -q "$(TORCH_SPEC)"; fi
	$(PIP) install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) examples/quickstart.py --output-dir $(QUICKSTART_DIR)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# GPU targets use the Python that has CUDA, Transformer Engine and this package's dependencies:
# this checkout's venv if there is one, else python3 (the container's; see the Dockerfile).
# Multi-GPU tests (TP/CP/EP against one GPU over NCCL) run when 2+ GPUs are visible.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
test-gpu:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m pytest tests/gpu -q -rs

gpu-check:
	PYTHON=$(GPU_PYTHON) tools/gpu_check.sh gpu_check_results

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# CPU benchmarks; each prints ratios measured side by side (results: bench/RESULTS.md).
# bench_sampling.py needs a trained checkpoint (make quickstart); bench_preprocess.py needs
# Megatron-LM's tools/preprocess_data.py (see its docstring): MEGATRON_LM_DIR=...
MEGATRON_LM_DIR ?= /tmp/megatron-lm
bench: $(STAMP)
	$(PY) bench/bench_cpu_shim.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_dataset_index.py
	$(PY) bench/bench_data_loader.py
	$(PY) bench/bench_checkpoint_formats.py
	$(PY) bench/bench_sampling.py --load $(QUICKSTART_DIR)/checkpoints --prompt-tokens 96 --gen-length 128
	$(PY) bench/bench_eval.py --load $(QUICKSTART_DIR)/checkpoints
	if [ -d "$(MEGATRON_LM_DIR)" ]; then $(PY) bench/bench_preprocess.py --megatron-lm-dir $(MEGATRON_LM_DIR); fi

clean:
	rm -rf $(VENV) runs build *.egg-info
