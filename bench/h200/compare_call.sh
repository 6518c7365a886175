#!/usr/bin/env bash
# One device call of a `golf compare` that adds one seed per call (bench/README, "Issue 23's decisive comparison"):
# A on GPU 0 and B on GPU 1 at once, resuming the comparison in $CMP (default compare/issue23/, ignored, so kept on a warm machine), then
# each side's newest seed packed for bench/save_run.py as $OUT/run_<side>_<seed>.tgz (runs/<seed>/... as in
# h200_pipeline.sh's tarball, the artifact included), the log, GPU samples and, once two seeds are in, the report.
#   A=configs/hybrid_seed_fit.yaml B=configs/attn_fit.yaml SEEDS=1 bash bench/h200/compare_call.sh
#   EXTRA_SETS="model.ssm_scan=golf" CMP=compare/golf_scan SEEDS=1 bash bench/h200/compare_call.sh  # both sides
# The machine must have had bench/h200/gpu_install.sh, and the call carries .carry/corpus and .carry/tok.
set -uo pipefail
A=${A:-configs/hybrid_seed_fit.yaml}; B=${B:-configs/attn_fit.yaml}; SEEDS=${SEEDS:-1}; CMP=${CMP:-compare/issue23}
WALL=${WALL:-240}
source bench/h200/h200_env.sh || exit 1
[ "${GOLF_ENV_DATA_ONLY:-0}" = 1 ] || require_causal_conv1d || exit 3  # data only: tests/test_h200_env.py
OUT=${OUT:-}
SAMPLER=""
if [ -n "$OUT" ]; then
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,power.draw,clocks.sm --format=csv -l 5 \
    > "$OUT/gpu_samples_seeds$SEEDS.csv" 2>&1 &
  SAMPLER=$!
fi
log=${OUT:-.}/log_seeds$SEEDS.txt
# stop well inside the call's 600 s, leaving time to pack (an interrupted seed reruns in the next call)
extra=(); for s in ${EXTRA_SETS:-}; do extra+=(--set "$s"); done  # EXTRA_SETS: overrides for both sides
timeout "${CMP_TIMEOUT:-560}" golf compare "$A" "$B" --seeds "$SEEDS" --out "$CMP" \
  --set "train.wallclock_s=$WALL" "${GOLF_DATA_SETS[@]/#/--set=}" "${extra[@]}" 2>&1 | grep --line-buffered -v "━" | tee "$log"
rc=${PIPESTATUS[0]}
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
if [ -n "$OUT" ]; then
  for cfg in "$A" "$B"; do
    side=$(basename "$cfg" .yaml)
    # the seed whose last stage wrote its metrics most recently (fractional mtimes: this call's seed)
    seed=$(find "$CMP/runs/$side" -mindepth 3 -maxdepth 3 -path '*/metrics/eval_ttt.json' -printf '%T@ %p\n' \
      2>/dev/null | sort -n | tail -1 | sed -E 's,.*/runs/[^/]+/([0-9]+)/metrics/eval_ttt.json$,\1,')
    [ -n "$seed" ] || continue
    tar czf "$OUT/run_${side}_$seed.tgz" --transform "s,^$CMP/runs/$side/,runs/," \
      "$CMP/runs/$side/$seed/metrics" "$CMP/runs/$side/$seed/plots" "$CMP/runs/$side/$seed/artifact" \
      "$CMP/runs/$side/$seed/train/provenance.json" "$CMP/runs/$side/$seed/logs" 2>/dev/null
  done
  [ -d "$CMP/report" ] && tar czf "$OUT/report.tgz" "$CMP/report" "$CMP/compare.json"
  cp "$CMP/compare.json" "$OUT/" 2>/dev/null
  ls -l "$OUT"
fi
exit "$rc"
