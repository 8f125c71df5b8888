#!/usr/bin/env bash
# `make gpu-check`: the GPU check in an EXISTING CUDA Python (GPU_PYTHON, default python3), whose torch
# is kept. Where DeepSpeed is missing, the wheels in .whl/ (tools/gpu_wheels.sh) and this project are
# installed with --no-deps into .cache/gpu-site, put first on PYTHONPATH (after the checkout itself).
# Then: benchmarks/bench_gpu.py (its sections; without CUDA: the sm_80/sm_90 compile table, the rest
# skipped with one line) and the pytest tests marked `gpu` in GPU_TESTS (default tests/gpu).
# Exit 1 if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${GPU_PYTHON:-python3}
JSON=${GPU_JSON:-$ROOT/gpu_check.json}
SITE=$ROOT/.cache/gpu-site
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # no traceback: one line, and the compile table (needs torch + triton, no GPU) from .venv where it exists
    if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c "import torch" >/dev/null 2>&1; then
        echo "gpu-check: $PY has no torch: compile table with .venv/bin/python (GPU_PYTHON=/path/to/cuda/python for the rest)"
        PY=$ROOT/.venv/bin/python
    else
        echo "gpu-check: $PY has no torch and there is no .venv with one: set GPU_PYTHON to a CUDA Python (or make install)"
        exit 2
    fi
fi
if ! "$PY" -c "import deepspeed" >/dev/null 2>&1; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu-check: DeepSpeed missing in $PY: installing .whl/*.whl and the project (--no-deps) into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .whl/*.whl || exit 2
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
            --target "$SITE" . >/dev/null 2>&1 || echo "gpu-check: project not installed into $SITE (run from the checkout)"
        export PYTHONPATH="$ROOT:$SITE:${PYTHONPATH#"$ROOT:"}"
    else
        echo "gpu-check: DeepSpeed missing in $PY and no .whl/ (run tools/gpu_wheels.sh where pip has a network):" \
             "the trainer section will fail"
    fi
fi
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR=cuda
else
    echo "gpu-check: no CUDA device: compile table only, every other section skipped"
fi
"$PY" benchmarks/bench_gpu.py --json "$JSON" "$@"
bench=$?
# Only GPU_TESTS are collected (default tests/gpu): other test folders import packages a CUDA image may
# lack (data_prep/finetune extras), and a collection error would fail the check.
# shellcheck disable=SC2086
"$PY" -m pytest -q -rs -m gpu -p no:cacheprovider ${GPU_TESTS:-tests/gpu}
tests=$?
[ $tests -eq 5 ] && tests=0  # no test selected is not a failure
echo "gpu-check: bench_gpu exit $bench, gpu tests exit $tests; results in $JSON"
[ $bench -eq 0 ] && [ $tests -eq 0 ]
