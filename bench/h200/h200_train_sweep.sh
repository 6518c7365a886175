#!/usr/bin/env bash
# Short training runs of several variants in one device call, on the carried corpus: the train stage alone (no
# hessian, quantize or eval stages), each ending with its exact pre-quant val BPB. Cheaper than full pipelines
# for ranking settings that change what is learned (learning rates, warmdown, EMA, batch): several variants fit in
# one call where a 240-s pipeline takes a whole one. A shorter budget's ranking need not hold at 240 s; confirm
# the winner with bench/h200/h200_pipeline.sh.
#   CONFIG=configs/hybrid_12_b131k.yaml SEED=1337 WALL=90 bash bench/h200/h200_train_sweep.sh \
#       "" "train.lr_mamba=0.02" "train.lr_matrix=0.03 train.lr_mamba=0.02"
# Each argument is one variant, as in h200_throughput_sweep.sh: space-separated params overrides ("" = the config
# as it is), a word config=<file> switching the params file. Carry `.carry` (corpus, tokenizer, mamba-ssm wheel),
# as for h200_pipeline.sh. Variant <label> trains under runs_sweep/<label>/<seed>/; a variant that fails or runs
# past PER_VARIANT_TIMEOUT seconds (default 300, times PER_GPU) is reported and the sweep goes on. Prints one line
# per variant (steps, tok/s, pre-quant val BPB); returns every variant's metrics, curve and log as $OUT/train_sweep.tgz, with
# train/profile.json for a variant that sets train.profile_steps (the loop's own steps under torch.profiler).
# GPUS=2 (nvidia-h200-x2) runs two variants at a time, one per GPU: half the call time for a sweep.
# PER_GPU=2 or 3 runs that many variants at a time on each GPU, variant i on GPU i % GPUS. Only for fixed-step runs
# (WALL=0 and a train.max_steps in the variants): what they learn does not depend on their speed, and sharing a
# GPU overlaps one run's compile and evaluation with another's training. Their tok/s and profiles then say
# nothing about speed. Under a wall-clock budget sharing would change the result, so it is refused.
set -uo pipefail
CONFIG=${CONFIG:-configs/hybrid_12_b131k.yaml}; SEED=${SEED:-1337}; WALL=${WALL:-90}
GPUS=${GPUS:-1}; PER_GPU=${PER_GPU:-1}
if ! [[ $PER_GPU =~ ^[1-9][0-9]*$ ]]; then
  echo "error: PER_GPU must be a positive whole number of runs per GPU, not '$PER_GPU'" >&2; exit 2
fi
if [ "$PER_GPU" != 1 ] && [ "$WALL" != 0 ]; then
  echo "error: PER_GPU=$PER_GPU shares each GPU between runs, which changes what a ${WALL}-s budget buys: use it" \
       "only with WALL=0 and a fixed train.max_steps" >&2; exit 2
fi
source bench/h200/h200_env.sh >/dev/null || exit 1
require_causal_conv1d || exit 3
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.max.sm --format=csv,noheader 2>/dev/null
python3 cli.py prepare -p "$CONFIG" "${GOLF_DATA_ARGS[@]}" > /dev/null || { echo "prepare failed"; exit 1; }
[ $# -gt 0 ] || set -- ""
mkdir -p runs_sweep
run_variant() {  # run_variant <gpu> "<variant>"
  local gpu=$1 variant=$2 dir rc prof
  parse_variant "$variant" "$CONFIG" || return 0
  if [ "$VARIANT_TREE" != . ]; then
    echo "variant '$variant': tree= is for h200_throughput_sweep.sh; skipped"; return 0
  fi
  dir="runs_sweep/$VARIANT_LABEL"
  env "${VARIANT_ENV[@]}" CUDA_VISIBLE_DEVICES=$gpu timeout "${PER_VARIANT_TIMEOUT:-$(( 300 * PER_GPU ))}" \
    python3 cli.py train -p "$VARIANT_CFG" \
    --seed "$SEED" "${GOLF_DATA_ARGS[@]}" --set "train.wallclock_s=$WALL" --set "runs_dir=$dir" "${VARIANT_SETS[@]}" \
    > "$dir.log" 2>&1
  rc=$?
  python3 - "$dir/$SEED/metrics/train.json" "$VARIANT_LABEL" "$rc" "$gpu" <<'PY'
import json, sys
path, label, rc, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
try:
    m = json.load(open(path))
except (OSError, ValueError):
    print(f"{label} (GPU {gpu}): no metrics (exit code {rc}); see its log")
else:
    print(f"{label} (GPU {gpu}): {m['steps']} steps, {m['tok_per_s']:,.0f} tok/s, warm-up {m['warmup_s']} s, "
          f"pre-quant val_bpb {m['val_bpb']:.5f}" + ("" if rc == 0 else f" (exit code {rc})"))
PY
  prof="$dir/$SEED/train/profile.json"
  if [ -f "$prof" ]; then python3 -c "import json, sys; p = json.load(open(sys.argv[1])); print('  profile:', {k: p.get(k) for k in ('first_step', 'steps', 'wall_ms_per_step', 'device_busy_ms_per_step', 'device_busy_frac')}, 'host ms/step by phase:', p.get('host_ranges_ms'), 'host calls:', [(c['name'], c['ms_per_step']) for c in p.get('host_runtime_calls', [])[:4]])" "$prof"; fi
}
# GPUS=2 on a two-GPU machine: variant i runs on GPU i % 2, the lanes at once (same host, same commit); with
# PER_GPU, GPUS * PER_GPU lanes, lane k on GPU k % GPUS
run_on_gpu() { run_variant $(( $1 % GPUS )) "$2"; }
run_in_lanes $(( GPUS * PER_GPU )) run_on_gpu "$@"
if [ -n "${OUT:-}" ]; then  # one tarball: a device call returns only a few files
  # profile.json exists only for variants that profile: a missing one is not a failure of the sweep
  tar czf "$OUT/train_sweep.tgz" --ignore-failed-read runs_sweep/*.log runs_sweep/*/"$SEED"/metrics runs_sweep/*/"$SEED"/plots \
    runs_sweep/*/"$SEED"/train/provenance.json runs_sweep/*/"$SEED"/train/profile.json 2>/dev/null
fi
