#!/usr/bin/env bash
# Wheels for `make gpu-check` on a CUDA machine whose Python lacks DeepSpeed and has no network
# (the lent H200 image: Python 3.12, torch 2.11 + CUDA 13; see docs/gpu-check.md). Run here, where
# pip reaches PyPI; the wheels land in .whl/ (git-ignored) and travel with the working tree.
#   tools/gpu_wheels.sh            # versions from constraints.txt, for CPython 3.12 x86-64
#   PYVER=3.11 tools/gpu_wheels.sh # another target Python
# Exactly the packages pretrain needs that such an image is missing: DeepSpeed (pure Python when built
# with DS_BUILD_OPS=0: its CUDA ops are JIT-built on the GPU machine at first use) and its
# dependencies hjson and pydantic (+ pydantic_core, annotated-types, typing-inspection). torch, numpy,
# transformers, h5py, tensorboard, ... are the image's own and are never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
OUT=${WHEEL_DIR:-.whl}
mkdir -p "$OUT"
pin() {  # NAME -> NAME==VERSION from constraints.txt (spelling of - and _ ignored)
    local re
    re=$(echo "$1" | sed 's/[-_]/[-_]/g')
    grep -i -E "^${re}==" constraints.txt | head -1
}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
BINARY=(hjson pydantic pydantic_core annotated-types typing-inspection)
for name in "${BINARY[@]}"; do
    spec=$(pin "$name")
    [ -n "$spec" ] || { echo "gpu_wheels: $name is not pinned in constraints.txt" >&2; exit 2; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        "${PLATFORMS[@]}" -d "$OUT" "$spec"
done
ds=$(pin deepspeed)
if ! ls "$OUT"/deepspeed-*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "$ds"
    # setup.py imports torch: build without isolation, in this Python (which has torch), ops off.
    DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$tmp"/deepspeed-*.tar.gz
fi
echo "gpu_wheels: $(ls "$OUT" | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1)):"
ls "$OUT"
