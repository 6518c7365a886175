#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment in .venv with golf and its dependencies (CPU).
# On a CUDA machine add the fast kernels afterwards: .venv/bin/pip install -e '.[gpu]'
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned requirement can pull a multi-GB CUDA build onto a CPU machine.
.venv/bin/python -m pip install -q "torch==${GOLF_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup done: .venv ready"
