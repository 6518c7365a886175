#!/usr/bin/env bash
# Training on 1 and on N GPUs at the SAME global batch (train.batch_tokens), step-driven so both runs follow one
# schedule: tokens/s, the speed-up, and how far the two loss curves part over the first STEPS steps.
#   N=2 STEPS=200 CONFIGS="configs/hybrid_12_b131k.yaml configs/baseline_attn_b131k.yaml" bash bench/h200/multi_gpu.sh
# The 1-GPU runs of the configs go side by side, one per GPU (CUDA_VISIBLE_DEVICES), when there are as many GPUs
# as configs; the N-GPU runs follow one after another. Results: runs_multi/multi_gpu.json and $OUT/multi_gpu.tgz.
# LOCAL=1 skips the GPU machine's setup (bench/h200/h200_env.sh) and its corpus settings, for a CPU dry run with
# params.yaml (e.g. LOCAL=1 N=2 STEPS=20 CONFIGS=params.yaml EXTRA_SETS="train.device=cpu").
# One artifact scored on 1 and N processes: bench/h200/eval_parity.sh.
set -uo pipefail
N=${N:-2}; STEPS=${STEPS:-200}; SEED=${SEED:-1337}
CONFIGS=${CONFIGS:-configs/hybrid_12_b131k.yaml configs/baseline_attn_b131k.yaml}
SETS=()
if [ -z "${LOCAL:-}" ]; then
  source bench/h200/h200_env.sh || exit 1
  require_causal_conv1d || exit 3
  SETS=("${GOLF_DATA_ARGS[@]}")
  nvidia-smi --query-gpu=name,uuid,power.limit,clocks.max.sm --format=csv,noheader
fi
SETS+=(--set "seeds=[$SEED]" --set "train.wallclock_s=0" --set "train.max_steps=$STEPS" --set "train.log_every=10"
       --set "train.checkpoint_every=100000")
for s in ${EXTRA_SETS:-}; do SETS+=(--set "$s"); done
mkdir -p runs_multi
first=${CONFIGS%% *}
python3 cli.py prepare -p "$first" "${SETS[@]}" >/dev/null || exit 1
train() {  # train <config> <nproc> [CUDA_VISIBLE_DEVICES]
  local name; name=$(basename "$1" .yaml)
  local env=(); [ -n "${3:-}" ] && env=(env "CUDA_VISIBLE_DEVICES=$3")
  "${env[@]}" python3 cli.py train --seed "$SEED" -p "$1" "${SETS[@]}" --set "runs_dir=runs_multi/${name}_n$2" \
    --set "launch.nproc_per_node=$2" > "runs_multi/${name}_n$2.log" 2>&1
  local rc=$?; grep -v "━" "runs_multi/${name}_n$2.log" | tail -3; return $rc
}
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
read -ra cfgs <<< "$CONFIGS"
if [ "$ngpu" -ge "${#cfgs[@]}" ] && [ "$ngpu" -gt 1 ]; then
  pids=(); i=0
  for c in "${cfgs[@]}"; do train "$c" 1 "$i" & pids+=($!); i=$((i + 1)); done
  for p in "${pids[@]}"; do wait "$p" || exit 1; done
else
  for c in "${cfgs[@]}"; do train "$c" 1 || exit 1; done
fi
for c in "${cfgs[@]}"; do train "$c" "$N" || exit 1; done
python3 - "$N" "$SEED" "${cfgs[@]}" <<'PY'
import csv, json, sys
from pathlib import Path
n, seed, configs = sys.argv[1], sys.argv[2], sys.argv[3:]

def run(name, k):
    d = Path(f"runs_multi/{name}_n{k}/{seed}")
    metrics = json.loads((d / "metrics/train.json").read_text())
    rows = list(csv.DictReader((d / "plots/train_curve.tsv").open(), delimiter="\t"))
    return metrics, {int(r["step"]): r for r in rows}

out = {"gpus": int(n), "configs": {}}
for cfg in configs:
    name = Path(cfg).stem
    (m1, c1), (mn, cn) = run(name, 1), run(name, n)
    common = sorted(set(c1) & set(cn))
    diffs = [abs(float(c1[s]["train_loss"]) - float(cn[s]["train_loss"])) for s in common]
    # steady-state step time from the curve (steps 50..150: after compile and warm-up, before QAT switches on)
    def ms_per_step(c):
        a, b = c.get(50), c.get(150)
        return None if a is None or b is None else round(1000 * (float(b["train_s"]) - float(a["train_s"])) / 100, 2)
    out["configs"][name] = {
        "steps": [m1["steps"], mn["steps"]], "world_sizes": [m1["world_size"], mn["world_size"]],
        "tok_per_s_1": m1["tok_per_s"], f"tok_per_s_{n}": mn["tok_per_s"],
        "speedup": round(mn["tok_per_s"] / m1["tok_per_s"], 3),
        "ms_per_step_50_150": [ms_per_step(c1), ms_per_step(cn)],
        "warmup_s": [m1["warmup_s"], mn["warmup_s"]],
        "val_bpb": [m1["val_bpb"], mn["val_bpb"]],
        "curve_steps_compared": len(common),
        "max_abs_loss_diff": round(max(diffs), 5) if diffs else None,
        "mean_abs_loss_diff": round(sum(diffs) / len(diffs), 5) if diffs else None,
        "loss_at_last_common_step": [c1[common[-1]]["train_loss"], cn[common[-1]]["train_loss"]] if common else None,
    }
Path("runs_multi/multi_gpu.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out, indent=1))
PY
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/multi_gpu.tgz" runs_multi/*.json runs_multi/*.log runs_multi/*/"$SEED"/metrics \
    runs_multi/*/"$SEED"/plots runs_multi/*/"$SEED"/train/provenance.json
fi
