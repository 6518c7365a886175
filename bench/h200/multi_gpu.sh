#!/usr/bin/env bash
# Multi-GPU scaling on a lent multi-GPU machine (nvidia-h200-x2 / -x4): training tokens/s on 1 and N GPUs
# at the same per-GPU batch, and the eval BPB of one artifact scored on 1 and on N processes.
#   N=2 WALL=60 CONFIG=configs/hybrid_12.yaml bash bench/h200/multi_gpu.sh      # results: $OUT/multi_gpu.tgz
# LOCAL=1 skips the GPU machine's setup (bench/h200/h200_env.sh) and its corpus settings, for a CPU dry run with
# params.yaml (e.g. LOCAL=1 N=2 WALL=10 CONFIG=params.yaml EXTRA_SETS="train.device=cpu eval.device=cpu").
set -uo pipefail
N=${N:-2}; WALL=${WALL:-60}; CONFIG=${CONFIG:-configs/hybrid_12.yaml}; SEED=${SEED:-1337}
SETS=()
if [ -z "${LOCAL:-}" ]; then
  source bench/h200/h200_env.sh || exit 1
  SETS=("${GOLF_DATA_ARGS[@]}")
fi
SETS+=(--set "seeds=[$SEED]" --set "train.wallclock_s=$WALL" --set "package.compare_compressors=false")
for s in ${EXTRA_SETS:-}; do SETS+=(--set "$s"); done
BATCH=$(python3 -c "from golf.config import load_params as l; print(l('$CONFIG').train.batch_tokens)")
mkdir -p runs_multi
python3 cli.py prepare -p "$CONFIG" "${SETS[@]}" >/dev/null || exit 1
for n in 1 "$N"; do  # same per-GPU batch: the global batch grows with the GPU count
  python3 cli.py train --seed "$SEED" -p "$CONFIG" "${SETS[@]}" --set "runs_dir=runs_multi/n$n" \
    --set "launch.nproc_per_node=$n" --set "train.batch_tokens=$((BATCH * n))" 2>&1 | grep -v "━" | tail -4 || exit 1
done
R=(--seed "$SEED" -p "$CONFIG" "${SETS[@]}" --set "runs_dir=runs_multi/n1")
for stage in hessian quantize package; do python3 cli.py "$stage" "${R[@]}" >/dev/null || exit 1; done
for n in 1 "$N"; do
  python3 cli.py eval-sliding "${R[@]}" --set "launch.nproc_per_node=$n" >/dev/null || exit 1
  cp "runs_multi/n1/$SEED/metrics/eval_sliding.json" "runs_multi/eval_sliding_n$n.json"
done
python3 - "$N" "$SEED" <<'PY'
import json, sys
n, seed = sys.argv[1], sys.argv[2]
t1 = json.load(open(f"runs_multi/n1/{seed}/metrics/train.json"))
tn = json.load(open(f"runs_multi/n{n}/{seed}/metrics/train.json"))
e1 = json.load(open("runs_multi/eval_sliding_n1.json"))
en = json.load(open(f"runs_multi/eval_sliding_n{n}.json"))
out = {"gpus": int(n), "tok_per_s_1": t1["tok_per_s"], f"tok_per_s_{n}": tn["tok_per_s"],
       "scaling": tn["tok_per_s"] / t1["tok_per_s"], "world_sizes": [t1["world_size"], tn["world_size"]],
       "eval_bpb_1": e1["val_bpb"], f"eval_bpb_{n}": en["val_bpb"], "eval_bpb_diff": en["val_bpb"] - e1["val_bpb"],
       "eval_s_1": e1["eval_s"], f"eval_s_{n}": en["eval_s"]}
json.dump(out, open("runs_multi/multi_gpu.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/multi_gpu.tgz" runs_multi/*.json runs_multi/n*/"$SEED"/metrics runs_multi/n*/"$SEED"/plots
fi
