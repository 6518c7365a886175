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
nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
time python3 cli.py prepare -p "$CONFIG" "${SETS[@]}" || exit 1
time timeout "${PIPE_TIMEOUT:-520}" python3 cli.py pipeline --no-dvc -p "$CONFIG" "${SETS[@]}" 2>&1 | grep -v "━" 
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/m"
  cp runs/$SEED/metrics/*.json "$OUT/m/" 2>/dev/null
  cp runs/$SEED/plots/train_curve.tsv "$OUT/m/" 2>/dev/null
  cp -r runs/$SEED/artifact "$OUT/artifact" 2>/dev/null
  mkdir -p "$OUT/data" && cp data/sp1024/manifest.json data/sp1024/tokenizer.model data/sp1024/fineweb_val_*.bin "$OUT/data/" 2>/dev/null
  cp reports/report.md "$OUT/m/" 2>/dev/null
fi
exit $rc
