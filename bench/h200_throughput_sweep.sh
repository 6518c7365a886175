#!/usr/bin/env bash
# Training-step throughput of several variants of one config in one device call (bench/train_throughput.py, one
# process each; every JSON lands in $OUT). Needs only the wheels (and .gpu_site for causal-conv1d), no corpus:
#   CONFIG=configs/hybrid_12.yaml STEPS=10 bash bench/h200_throughput_sweep.sh \
#       "" "model.in_proj_multiple=64" "model.ssm_compile=trace" "model.in_proj_multiple=64 model.ssm_compile=trace"
# PROFILE_STEPS=3 also profiles 3 more steps of each variant (device time by kernel family, top kernels: in the
# JSON; the printed line is cut to 400 characters).
# Each argument is one variant: space-separated params overrides ("" = the config as it is). A variant that fails
# or runs past PER_VARIANT_TIMEOUT seconds (default 300) is reported and the sweep goes on. The first variant on a
# fresh machine compiles and autotunes from cold caches: 150 s was not enough on 2026-11-29 (a cold 240 s
# pipeline spent 122 s in its compile warm-up).
set -uo pipefail
source bench/h200_env.sh >/dev/null || exit 1
CONFIG=${CONFIG:-configs/hybrid_12.yaml}; STEPS=${STEPS:-10}
[ $# -gt 0 ] || set -- ""
for variant in "$@"; do
  sets=(); label=$(basename "$CONFIG" .yaml)
  for s in $variant; do sets+=(--set "$s"); label+="__${s//[^A-Za-z0-9_.=-]/_}"; done
  timeout "${PER_VARIANT_TIMEOUT:-300}" python3 bench/train_throughput.py "$CONFIG" --steps "$STEPS" \
    --profile-steps "${PROFILE_STEPS:-0}" "${sets[@]}" --label "$label" 2>&1 | tail -n 1 | cut -c1-400
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || echo "variant '$variant': exit code $rc"
done
