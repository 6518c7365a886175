#!/usr/bin/env bash
# Two whole pipelines at once on a two-GPU machine (nvidia-h200-x2), one per GPU, on the carried corpus: two seeds
# of one config, or the two sides of a comparison, run under the same host and at the same commit.
#   WALL=240 bash bench/h200/side_by_side.sh "configs/a.yaml 1337" "configs/b.yaml 1337 train.lr_matrix=0.03"
# Each argument: a params file, a seed, then any --set overrides. Returns $OUT/run_<i>_<seed>.tgz (the layout of
# bench/h200/h200_pipeline.sh's run_<seed>.tgz, for bench/save_run.py), gpu_samples.csv and the logs.
set -uo pipefail
source bench/h200/h200_env.sh || exit 1
require_causal_conv1d || exit 3
[ "$GOLF_DATA_NAME" = sp1024 ] || { echo "error: a scored pipeline needs all four train shards" >&2; exit 2; }
[ $# -ge 1 ] || { echo "usage: bench/h200/side_by_side.sh \"<config> <seed> [key=value ...]\" ..." >&2; exit 2; }
WALL=${WALL:-240}
nvidia-smi --query-gpu=index,name,uuid,power.limit,clocks.max.sm --format=csv,noheader
SAMPLER=""
if [ -n "${OUT:-}" ]; then
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,power.draw,temperature.gpu,utilization.gpu \
    --format=csv -l 5 > "$OUT/gpu_samples.csv" 2>&1 &
  SAMPLER=$!
fi
run_side() {  # run_side <index> <config> <seed> [overrides...]: the pipeline in its own runs folder on GPU <index>
  local i=$1 cfg=$2 seed=$3; shift 3
  local sets=("${GOLF_DATA_ARGS[@]}" --set "seeds=[$seed]" --set "train.wallclock_s=$WALL"
              --set "package.compare_compressors=false" --set "runs_dir=runs_side/$i")
  for s in "$@"; do sets+=(--set "$s"); done
  CUDA_VISIBLE_DEVICES=$i timeout "${PIPE_TIMEOUT:-540}" python3 cli.py pipeline --no-dvc -p "$cfg" "${sets[@]}" \
    > "runs_side/log_$i.txt" 2>&1
  local rc=$?
  grep -v "━" "runs_side/log_$i.txt" | grep -E "== |val_bpb|steps|error" | tail -20
  if [ -n "${OUT:-}" ]; then
    # the report stage of both sides writes reports/: keep this side's own metrics and artifact instead
    tar czf "$OUT/run_${i}_$seed.tgz" --transform "s,^runs_side/$i/,runs/," "runs_side/$i/$seed/metrics" \
      "runs_side/$i/$seed/plots" "runs_side/$i/$seed/artifact" "runs_side/$i/$seed/train/provenance.json" \
      data/sp1024/manifest.json 2>/dev/null
    cp "runs_side/log_$i.txt" "$OUT/log_$i.txt"
  fi
  return $rc
}
mkdir -p runs_side
first=($1)
time python3 cli.py prepare -p "${first[0]}" "${GOLF_DATA_ARGS[@]}" || exit 1
pids=(); i=0
for side in "$@"; do
  read -ra words <<< "$side"
  run_side "$i" "${words[@]}" & pids+=($!); i=$((i + 1))
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; fi
exit $rc
