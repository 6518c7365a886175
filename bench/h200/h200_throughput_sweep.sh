#!/usr/bin/env bash
# Training-step throughput of several variants of one config in one device call (bench/train_throughput.py, one
# process each; every JSON lands in $OUT). Needs only the wheels (and .gpu_site for causal-conv1d), no corpus:
#   CONFIG=configs/hybrid_12.yaml STEPS=10 bash bench/h200/h200_throughput_sweep.sh \
#       "" "model.in_proj_multiple=64" "model.ssm_compile=trace" "model.in_proj_multiple=64 model.ssm_compile=trace"
# PROFILE_STEPS=3 also profiles 3 more steps of each variant (device time by kernel family, top kernels, the ATen
# ops' own kernel time, the device's idle gaps: in the JSON; the printed line is cut to 400 characters); TRACE=1
# (with PROFILE_STEPS and OUT) also writes each variant's profiled steps as a gzipped Chrome trace, all of them
# returned in $OUT/traces.tar; PROFILE_SHAPES=1 adds
# train.profile_shapes=true to every variant (those ATen ops by input shapes, at some host cost in those steps).
# Each argument is one variant: space-separated params overrides ("" = the config as it is); a word
# config=<file> runs that variant on another params file, a word tree=<dir> on another source tree's code, a word
# env=<NAME>=<value> with that environment variable set (e.g. "env=CUBLASLT_WORKSPACE_SIZE=0"); a variant
# given again is labelled __run2, __run3 (its own JSON: on 2026-12-01 three alternating pairs in one call left only
# the last pair's). The JSONs come back as $OUT/throughput.tgz. A variant that
# succeeds prints one line (its JSON, cut to 400 characters); one that fails or runs past PER_VARIANT_TIMEOUT seconds
# (default 300) prints its exit code and the last FAIL_TAIL lines (default 25) of its output, stdout and stderr, so
# that its traceback comes back (on 2026-11-30 a failing variant's last line was empty and its error was lost), and
# the sweep goes on. The first variant on a fresh machine compiles and autotunes from cold caches: 150 s was not
# enough on 2026-11-29 (a cold 240 s pipeline spent 122 s in its compile warm-up).
set -uo pipefail
source bench/h200/h200_env.sh >/dev/null || exit 1
CONFIG=${CONFIG:-configs/hybrid_12.yaml}; STEPS=${STEPS:-10}
# which lent GPU: the same code stepped 19% faster on one machine than another (RESULTS, sixth block)
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.max.sm --format=csv,noheader 2>/dev/null
[ $# -gt 0 ] || set -- ""
if [ -n "${TRACE:-}" ]; then
  if [ -z "${OUT:-}" ] || [ "${PROFILE_STEPS:-0}" -lt 1 ]; then
    echo "TRACE=1 needs OUT and PROFILE_STEPS >= 1" >&2; exit 2
  fi
  mkdir -p "$OUT" || exit 1
fi
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT
declare -A runs_of  # a variant named again (alternating sides, e.g. "" "x" "" "x") gets __run2, __run3: its own JSON
for variant in "$@"; do
  parse_variant "$variant" "$CONFIG" || continue
  runs_of[$VARIANT_LABEL]=$(( ${runs_of[$VARIANT_LABEL]:-0} + 1 ))
  [ "${runs_of[$VARIANT_LABEL]}" -gt 1 ] && VARIANT_LABEL+="__run${runs_of[$VARIANT_LABEL]}"
  trace_args=()
  [ -n "${TRACE:-}" ] && trace_args=(--trace "$OUT/trace_${VARIANT_LABEL//[^A-Za-z0-9_.-]/-}.json.gz")
  if [ ! -f "$VARIANT_TREE/bench/train_throughput.py" ]; then
    echo "variant '$variant': tree=$VARIANT_TREE has no bench/train_throughput.py; skipped"; continue
  fi
  env "${VARIANT_ENV[@]}" timeout "${PER_VARIANT_TIMEOUT:-300}" python3 "$VARIANT_TREE/bench/train_throughput.py" "$VARIANT_CFG" --steps "$STEPS" \
    --profile-steps "${PROFILE_STEPS:-0}" "${VARIANT_SETS[@]}" \
    ${PROFILE_SHAPES:+--set train.profile_shapes=true} "${trace_args[@]}" --label "$VARIANT_LABEL" > "$log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    tail -n 1 "$log" | cut -c1-400
  else
    why="exit code $rc"
    [ "$rc" -eq 124 ] && why+=" (ran past PER_VARIANT_TIMEOUT=${PER_VARIANT_TIMEOUT:-300} s)"
    echo "variant '$variant': $why; the last ${FAIL_TAIL:-25} lines of its output:"
    tail -n "${FAIL_TAIL:-25}" "$log" | cut -c1-400 | sed 's/^/  | /'
  fi
done
if [ -n "${OUT:-}" ] && compgen -G "$OUT/throughput_*.json" > /dev/null; then
  # one line per variant, then the JSONs as one tarball (a device call returns at most 8 files)
  python3 - "$OUT"/throughput_*.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    profile = r.get("profile") or {}
    fams = ", ".join(f"{k} {v}" for k, v in list(profile.get("by_family_ms", {}).items())[:5])
    graphs = r.get("compiled_graphs")
    clock = r.get("gpu_clock") or {}
    # the profiled steps' device-busy share: a step well under 100% waits on the host (its launches), not the GPU
    busy = profile.get("device_busy_frac")
    print(f"{r['label']}: {r['ms_per_step']} ms/step, {r['tok_per_s']:,} tok/s, first step {r['first_step_s']} s"
          + (f", SM {clock['sm_clock_mhz']} MHz at {clock['power_w']} W" if "sm_clock_mhz" in clock else "")
          + (f", device busy {busy:.0%}" if busy is not None else "")
          + (f", {graphs['graphs']} graphs, {graphs['graph_breaks']} breaks" if graphs else "")
          + (f"; ms/step by family: {fams}" if fams else ""))
PY
  (cd "$OUT" && tar czf throughput.tgz throughput_*.json && rm -f throughput_*.json)
fi
if [ -n "${OUT:-}" ] && compgen -G "$OUT/trace_*.json.gz" > /dev/null; then
  (cd "$OUT" && tar cf traces.tar trace_*.json.gz && rm -f trace_*.json.gz)
fi
