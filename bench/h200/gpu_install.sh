#!/usr/bin/env bash
# The README's GPU install ("GPU install"), run offline on a lent GPU machine whose image already has CUDA torch:
# golf with its `gpu` extra resolved by pip from a folder of wheels and source archives (WHEELS, default the
# ignored .gpuhouse/: golf's dependencies that the image lacks, the causal-conv1d wheel, mamba-ssm's source
# archive, pytest), then mamba-ssm beside it with --no-deps, then `golf doctor`. Installs into the image's Python
# (a lent machine is discarded after the session). Prints the seconds the two pip lines took.
#   bash bench/h200/gpu_install.sh            # device call carrying .gpuhouse
set -euo pipefail
WHEELS=${WHEELS:-.gpuhouse}
[ -d "$WHEELS" ] || { echo "error: no wheel folder '$WHEELS' (carry it, or set WHEELS)" >&2; exit 2; }
# Offline, the wheel lookups of both setups fail instead of falling back to a build, so force the build path:
# causal-conv1d then takes the carried wheel, and mamba-ssm builds Python-only (golf calls its Triton kernels).
export MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
start=$(date +%s)
python3 -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation -e '.[gpu]'
python3 -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation --no-deps mamba-ssm==2.3.2.post1
echo "gpu install: $(( $(date +%s) - start )) s"
python3 -m pip list 2>/dev/null | grep -iE "^(torch|triton|causal.conv1d|einops|mamba.ssm|golf) "
if compgen -G "$WHEELS/pytest-*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --find-links "$WHEELS" pytest  # for `pytest -m gpu` on this machine
fi
golf doctor
