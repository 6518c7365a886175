#!/usr/bin/env bash
# One seed of the full pipeline on the lent H200 (bench/RESULTS.md): prepare the shared corpus with the
# shared 1024 tokenizer, then train (wallclock from $WALL, default 240 s) → hessian → quantize → package →
# eval_sliding → eval_ttt → report, in one process (Triton kernels compile once).
#   CONFIG=configs/hybrid_seed.yaml SEED=1337 WALL=240 bash bench/h200_pipeline.sh
set -uo pipefail
source bench/h200_env.sh || exit 1
CONFIG=${CONFIG:-configs/hybrid_seed.yaml}; SEED=${SEED:-1337}; WALL=${WALL:-240}
SETS=()
for s in "${GOLF_DATA_SETS[@]}"; do SETS+=(--set "$s"); done
SETS+=(--set "seeds=[$SEED]" --set "train.wallclock_s=$WALL" --set "package.compare_compressors=false")
for s in ${EXTRA_SETS:-}; do SETS+=(--set "$s"); done  # e.g. EXTRA_SETS="eval.stride=256 ttt.lr=0.005"
nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
time python3 cli.py prepare -p "$CONFIG" "${SETS[@]}" || exit 1
time timeout "${PIPE_TIMEOUT:-520}" python3 cli.py pipeline --no-dvc -p "$CONFIG" "${SETS[@]}" 2>&1 | grep -v "━" 
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then  # one tarball: a device call returns only a few files
  tar czf "$OUT/run_$SEED.tgz" runs/$SEED/metrics runs/$SEED/plots runs/$SEED/artifact reports \
    data/sp1024/manifest.json data/sp1024/tokenizer.model data/sp1024/fineweb_val_000000.bin 2>/dev/null
fi
exit $rc
