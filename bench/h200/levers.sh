#!/usr/bin/env bash
# The post-training size levers of issue 21, each alone, on one trained model: quantize → package → plain-window
# eval of the artifact, per variant, from a run folder that already holds train/ and hessian/ (a side_by_side.sh
# job's runs_side/s<seed>/). Every variant starts from "none": int6 for every matrix (int8 embeddings), the
# per-row clip search, lzma, no size target, and a cap raised to 40 MB so an over-cap artifact is still scored.
#   CONFIG=configs/hybrid_seed_fit.yaml SEED=1337 SRC=runs_side/s1337 bash bench/h200/levers.sh
# Variants run in two lanes, one per GPU (LANES=1 for one GPU). Results: runs_lever/<variant>/<seed>/metrics,
# a summary table in $OUT/levers.json, $OUT/levers.tgz.
set -uo pipefail
source bench/h200/h200_env.sh || exit 1
CONFIG=${CONFIG:-configs/hybrid_seed_fit.yaml}; SEED=${SEED:-1337}; SRC=${SRC:-runs_side/s$SEED}; LANES=${LANES:-2}
[ -d "$SRC/$SEED/train" ] && [ -d "$SRC/$SEED/hessian" ] || { echo "error: $SRC/$SEED needs train/ and hessian/" >&2; exit 2; }
# plain windows (stride = the eval window): quantized BPB without the sliding pass's time
EVAL_LEN=$(python3 -c "from golf.config import load_params as l; print(l('$CONFIG').eval.seq_len)") || exit 1
NONE="quant.bits_mamba_in=6 quant.bits_mamba_out=6 quant.bits_attn=6 quant.bits_mlp=6 quant.bits_other=6"
NONE+=" quant.clip_mode=search package.compressor=lzma package.byte_planes=false package.target_bytes=0"
NONE+=" package.cap_bytes=40000000"
VARIANTS=(
  "none|"
  "int5_mamba_in_mlp|quant.bits_mamba_in=5 quant.bits_mlp=5"
  "sigma_clip|quant.clip_mode=sigma"
  "compressor_auto|package.compressor=auto"
  "target_15.9MB|package.target_bytes=15900000 package.cap_bytes=16000000"
)
run_variant() {  # run_variant <gpu> "<name>|<overrides>"
  local gpu=$1 name=${2%%|*} extra=${2#*|} sets=("${GOLF_DATA_ARGS[@]}") s st
  local runs="runs_lever/$name" log="runs_lever/log_$name.txt"
  rm -rf "$runs"; mkdir -p "$runs/$SEED"
  cp -al "$SRC/$SEED/train" "$SRC/$SEED/hessian" "$runs/$SEED/"
  mkdir -p "$runs/$SEED/metrics"; cp "$SRC/$SEED/metrics/hessian.json" "$runs/$SEED/metrics/" 2>/dev/null
  for s in $NONE $extra "runs_dir=$runs" "seeds=[$SEED]" "eval.stride=$EVAL_LEN"; do sets+=(--set "$s"); done
  for st in quantize package eval-sliding; do
    CUDA_VISIBLE_DEVICES=$gpu python3 cli.py "$st" --seed "$SEED" -p "$CONFIG" "${sets[@]}" >> "$log" 2>&1 \
      || { echo "error: $name: $st failed (see $log)"; tail -3 "$log"; return 1; }
  done
  echo "$name done"
}
mkdir -p runs_lever
run_in_lanes "$LANES" run_variant "${VARIANTS[@]}"
python3 - "$SEED" "${VARIANTS[@]}" <<'PY' | tee "${OUT:-runs_lever}/levers.json"
import json, sys
from pathlib import Path
seed, rows = sys.argv[1], {}
for v in sys.argv[2:]:
    name, m = v.split("|")[0], Path("runs_lever") / v.split("|")[0] / seed / "metrics"
    try:
        pkg, ev = json.loads((m / "package.json").read_text()), json.loads((m / "eval_sliding.json").read_text())
    except FileNotFoundError as e:
        rows[name] = {"error": f"missing {e.filename}"}
        continue
    rows[name] = {"total_bytes": pkg["total_bytes"], "model_bytes": pkg["model_bytes"], "compressor": pkg["compressor"],
                  "zeroed_codes": pkg.get("size_target", {}).get("zeroed", 0),
                  "plain_val_bpb": ev["plain_val_bpb"]}
print(json.dumps(rows, indent=1))
sys.exit(1 if any("error" in r for r in rows.values()) else 0)
PY
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then tar czf "$OUT/levers.tgz" runs_lever/*/"$SEED"/metrics runs_lever/log_*.txt; fi
exit $rc
