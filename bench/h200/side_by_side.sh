#!/usr/bin/env bash
# Pipelines at once on a two-GPU machine (nvidia-h200-x2), one queue of jobs per GPU, on the carried corpus: seeds
# of one config, or the two sides of a comparison, run under the same host and at the same commit.
#   WALL=240 bash bench/h200/side_by_side.sh "configs/a.yaml 1337" "configs/b.yaml 1337 train.lr_matrix=0.03"
# Each argument is one GPU's queue (argument i runs on GPU i): jobs separated by " ; ", each a params file, a seed,
# then any key=value overrides. A word stages=train,hessian,... runs just those stage commands in that order (one
# process each, in the job's own runs folder, so a later call on the same warm machine can run the rest); without
# it the job runs the whole pipeline in one process. A 240-s run of the 18-layer model needs most of a 600-s call,
# so its evals can go to the next call:
#   "configs/hybrid_seed_fit.yaml 1337 stages=train,hessian,quantize,package" "configs/hybrid_seed_fit.yaml 42 ..."
#   "configs/hybrid_seed_fit.yaml 1337 stages=eval-sliding,eval-ttt ; configs/hybrid_seed_fit.yaml 42 stages=..."
# Job <seed>'s runs folder is runs_side/s<seed>/ (whichever GPU and call ran it). Returns, per job,
# $OUT/run_<seed>_<stage>-<stage>....tgz (the layout of h200_pipeline.sh's run_<seed>.tgz, for bench/save_run.py),
# $OUT/log_<seed>_<stages>.txt and gpu_samples.csv.
set -uo pipefail
source bench/h200/h200_env.sh || exit 1
require_causal_conv1d || exit 3
[ "$GOLF_DATA_NAME" = sp1024 ] || { echo "error: a scored pipeline needs all four train shards" >&2; exit 2; }
[ $# -ge 1 ] || { echo "usage: bench/h200/side_by_side.sh \"<config> <seed> [stages=a,b] [key=value ...] [; ...]\" ..." >&2; exit 2; }
WALL=${WALL:-240}
nvidia-smi --query-gpu=index,name,uuid,power.limit,clocks.max.sm --format=csv,noheader
SAMPLER=""
if [ -n "${OUT:-}" ]; then
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,power.draw,temperature.gpu,utilization.gpu \
    --format=csv -l 5 > "$OUT/gpu_samples.csv" 2>&1 &
  SAMPLER=$!
fi
run_job() {  # run_job <gpu> <config> <seed> [stages=a,b] [overrides...]
  local gpu=$1 cfg=$2 seed=$3; shift 3
  local stages="pipeline" sets=("${GOLF_DATA_ARGS[@]}" --set "seeds=[$seed]" --set "train.wallclock_s=$WALL"
    --set "package.compare_compressors=false" --set "runs_dir=runs_side/s$seed")
  local s
  for s in "$@"; do
    if [[ $s == stages=* ]]; then stages=${s#stages=}; else sets+=(--set "$s"); fi
  done
  local tag="${seed}_${stages//,/-}" log rc=0 st
  log="runs_side/log_$tag.txt"; : > "$log"
  for st in ${stages//,/ }; do
    echo "== $st seed $seed on GPU $gpu ($(date +%T))" >> "$log"
    local left=$((DEADLINE - SECONDS)) cmd=(cli.py "$st" --seed "$seed")
    [ "$st" = pipeline ] && cmd=(cli.py pipeline --no-dvc)
    if [ $left -le 0 ]; then echo "error: no time left for $st (PIPE_TIMEOUT)" >> "$log"; rc=1; break; fi
    CUDA_VISIBLE_DEVICES=$gpu timeout "$left" python3 "${cmd[@]}" -p "$cfg" "${sets[@]}" >> "$log" 2>&1 || rc=1
    [ $rc = 0 ] || break
  done
  echo "== end rc=$rc ($(date +%T))" >> "$log"
  grep -v "━" "$log" | grep -E "== |val_bpb|steps|bytes|error" | tail -24
  if [ -n "${OUT:-}" ]; then
    # the report stage writes the shared reports/: keep this job's own metrics and artifact instead
    local art=()  # the artifact (up to 16 MB) comes back once, from the job that packaged it
    [[ $stages == pipeline || $stages == *package* ]] && art=("runs_side/s$seed/$seed/artifact")
    tar czf "$OUT/run_$tag.tgz" --transform "s,^runs_side/s$seed/,runs/," "runs_side/s$seed/$seed/metrics" \
      "runs_side/s$seed/$seed/plots" "${art[@]}" "runs_side/s$seed/$seed/train/provenance.json" \
      "runs_side/s$seed/$seed/logs" data/sp1024/manifest.json 2>/dev/null
    cp "$log" "$OUT/"
  fi
  return $rc
}
run_queue() {  # run_queue <gpu> "<job> ; <job> ...": the jobs in order on that GPU, stopping at none
  local gpu=$1 rc=0 job jobs words
  IFS=';' read -ra jobs <<< "$2"
  for job in "${jobs[@]}"; do
    read -ra words <<< "$job"
    [ ${#words[@]} -ge 2 ] || continue
    run_job "$gpu" "${words[@]}" || rc=1
  done
  return $rc
}
mkdir -p runs_side
DEADLINE=$((SECONDS + ${PIPE_TIMEOUT:-560}))  # every stage is stopped by then, leaving the call time to pack results
first=($1)
time python3 cli.py prepare -p "${first[0]}" "${GOLF_DATA_ARGS[@]}" || exit 1
pids=(); i=0
for queue in "$@"; do
  run_queue "$i" "$queue" & pids+=($!); i=$((i + 1))
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; fi
exit $rc
