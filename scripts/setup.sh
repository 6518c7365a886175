#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment in .venv with golf and its dependencies (CPU).
#   GOLF_TORCH_VERSION   torch version to pin (default 2.13.0)
#   GOLF_TORCH_INDEX     index to take torch from, e.g. https://download.pytorch.org/whl/cpu where no local
#                        wheel or configured index has a CPU build (PyPI's Linux torch is the CUDA build, GBs)
# On a CUDA machine see README "GPU install" for the fast kernels (mamba-ssm, causal-conv1d).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned requirement can pull a multi-GB CUDA build onto a CPU machine.
.venv/bin/python -m pip install -q "torch==${GOLF_TORCH_VERSION:-2.13.0}" \
    ${GOLF_TORCH_INDEX:+--index-url "$GOLF_TORCH_INDEX"}
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup done: .venv ready (activate it: source .venv/bin/activate, or prefix commands with .venv/bin/)"
