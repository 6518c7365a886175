#!/usr/bin/env bash
# Issue 23's TTT levers, eval only: one trained artifact per side scored under several score-first TTT settings
# (bench/eval_variants.py; each variant from a fresh copy of the model), the hybrid on GPU 0 and attention-only on
# GPU 1 at once. Each variant changes the config's own ttt section (chunk 32,768, stride 256, lr 0.005, 1 epoch,
# every parameter); the first row of each side is that base, and one sliding row checks the artifact against
# its eval_sliding metric.
#   bash bench/h200/ttt_levers.sh     # after bench/h200/gpu_install.sh on the same warm machine; carry
#                                     # .carry_art/data and the two artifacts' folders (ART_H, ART_A below)
# Returns $OUT/ttt_<side>.json and $OUT/log_<side>.txt.
set -uo pipefail
HYBRID=${HYBRID:-configs/hybrid_seed_fit.yaml}; ATTN=${ATTN:-configs/attn_fit.yaml}
ART_H=${ART_H:-.carry_art/issue23/run_hybrid_seed_fit_1337/runs/1337/artifact}
ART_A=${ART_A:-.carry_art/issue23/run_attn_fit_1337/runs/1337/artifact}
DATA=${DATA:-.carry_art/data/sp1024}
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1
COMMON='{}, {"lr": 0.0025}, {"lr": 0.01}, {"epochs": 2}, {"lr_schedule": "cosine", "lr": 0.01}, {"chunk_tokens": 16384}, {"params": "mlp"}'
TTT_H=${TTT_H:-"[$COMMON, {\"params\": \"dynamics_norms\", \"lr\": 0.02}, {\"params\": \"ssm\"}]"}
TTT_A=${TTT_A:-"[$COMMON, {\"params\": \"norms\", \"lr\": 0.02}]"}
lane() {  # lane <gpu> <side> <config> <artifact> <ttt variants>
  CUDA_VISIBLE_DEVICES=$1 timeout "${LANE_TIMEOUT:-540}" python3 bench/eval_variants.py "$4" "$DATA" -p "$3" \
    --sliding '[[2048, 256, 64]]' --stateful '[]' --ttt "$5" --out "$OUT/ttt_$2.json" > "$OUT/log_$2.txt" 2>&1
  echo "$2: exit $? ($(grep -c '"kind": "ttt"' "$OUT/log_$2.txt") TTT variants done)"
}
lane 0 hybrid "$HYBRID" "$ART_H" "$TTT_H" &
lane 1 attn "$ATTN" "$ART_A" "$TTT_A" &
wait
