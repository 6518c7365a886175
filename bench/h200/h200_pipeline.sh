#!/usr/bin/env bash
# One seed of the full pipeline on the lent H200 (bench/RESULTS.md): prepare the shared corpus with the
# shared 1024 tokenizer, then train (wallclock from $WALL, default 240 s) → hessian → quantize → package →
# eval_sliding → eval_ttt → report, in one process (Triton kernels compile once).
#   CONFIG=configs/hybrid_seed.yaml SEED=1337 WALL=240 bash bench/h200/h200_pipeline.sh
# SAVE_GPU_CACHE=1 also returns the torch.compile/Triton caches as $OUT/gpu_cache.tgz.part*; copy them into the
# ignored .carry_cache/ and carry that in a later session's first call (h200_env.sh unpacks them).
set -uo pipefail
source bench/h200/h200_env.sh || exit 1
require_causal_conv1d || exit 3
# a scored run trains on every carried shard (TRAIN_SHARDS is for profile and throughput calls)
[ "$GOLF_DATA_NAME" = sp1024 ] || { echo "error: a scored pipeline needs all four train shards, not TRAIN_SHARDS='$TRAIN_SHARDS'" >&2; exit 2; }
CONFIG=${CONFIG:-configs/hybrid_seed.yaml}; SEED=${SEED:-1337}; WALL=${WALL:-240}
SETS=("${GOLF_DATA_ARGS[@]}")
SETS+=(--set "seeds=[$SEED]" --set "train.wallclock_s=$WALL" --set "package.compare_compressors=false")
for s in ${EXTRA_SETS:-}; do SETS+=(--set "$s"); done  # e.g. EXTRA_SETS="eval.stride=256 ttt.lr=0.005"
nproc; nvidia-smi --query-gpu=name,memory.total,driver_version,uuid,power.limit,clocks.max.sm --format=csv,noheader
# clocks, power and temperature every 5 s while the stages run: lent machines differed by up to 13% in the
# hybrid's step time (RESULTS, fifth block), and these samples tell a throttled GPU from a slower code path
SAMPLER=""
if [ -n "${OUT:-}" ]; then
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu \
    --format=csv -l 5 > "$OUT/gpu_samples_$SEED.csv" 2>&1 &
  SAMPLER=$!
fi
time python3 cli.py prepare -p "$CONFIG" "${SETS[@]}" || exit 1
time timeout "${PIPE_TIMEOUT:-520}" python3 cli.py pipeline --no-dvc -p "$CONFIG" "${SETS[@]}" 2>&1 | grep -v "━" 
rc=${PIPESTATUS[0]}
if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; fi
if [ -n "${OUT:-}" ]; then  # one tarball: a device call returns only a few files
  tar czf "$OUT/run_$SEED.tgz" runs/$SEED/metrics runs/$SEED/plots runs/$SEED/artifact \
    runs/$SEED/train/provenance.json runs/$SEED/train/profile.json reports \
    data/sp1024/manifest.json data/sp1024/tokenizer.model data/sp1024/fineweb_val_000000.bin 2>/dev/null
fi
if [ -n "${OUT:-}" ] && [ "${SAVE_GPU_CACHE:-0}" = 1 ] && [ -d .gpu_cache ]; then
  # the compile/Triton caches, for a later session's first call to carry back as .gpu_cache (a cold hybrid
  # compile took 122 s of device time on 2026-11-29); the device returns files of at most 16 MiB, hence parts
  du -sh .gpu_cache
  tar czf - .gpu_cache | split -b 15M -d - "$OUT/gpu_cache.tgz.part"
  ls -l "$OUT"/gpu_cache.tgz.part*
fi
exit $rc
