#!/usr/bin/env bash
# Issue 22's step measurements in one device call on a two-GPU machine (GPUS=1 below for one GPU; bench/README,
# "Issue 22's kernels in the step"), after bench/h200/gpu_install.sh on the same machine; no corpus needed. Two
# lanes at once:
#   GPU 0: FIRST_TESTS compiled on the GPU (the padded mixer compiled with fullgraph=True, which
#          Tensor.storage_offset() broke until afc54e5: golf_split's mixer under trace and opaque, the opaque
#          mixer, the opaque model under CUDA graphs), then, with TEST_TIMEOUT > 0, the rest of golf's four kernel
#          test files. Each run gets SIGINT at its limit (timeout -s INT; SIGKILL 30 s later if it still runs):
#          pytest stops as on Ctrl-C and still prints the failures so far (-rf, each traceback --tb=short); -v
#          names each test as it ends. Then the step of attn_fit, attn_tuned_fit and hybrid_mlp_tuned_fit (issue
#          23's next comparison, and their compiles warm the caches for it);
#   GPU 1: hybrid_seed_fit's step now that its forward is one graph, with the opaque SSM ops (one graph, the
#          kernels as custom ops) and with CUDA graphs (train.compile_mode reduce-overhead): the step was bound by
#          the host (device busy 62-76% of a profiled step, RESULTS seventh block).
# Every step variant runs STEPS=20 timed steps, then 3 profiled steps recording the ops' shapes
# (h200_throughput_sweep.sh, which prints a failing variant's last lines).
# GPU0_CONFIG/GPU0_VARIANTS and GPU1_CONFIG/GPU1_VARIANTS replace a lane's sweep (variants space-separated, "base"
# for the config as it is, commas between one variant's overrides, "none" for no sweep), e.g. to fit the call
# beside three compare calls in one session's device time:
#   GPU1_VARIANTS="base model.ssm_compile=opaque,train.compile_mode=reduce-overhead"
# GPUS=1 (nvidia-h200, one GPU) runs the two lanes one after the other, both on GPU 0, so that no step is timed
# beside another process; the outputs keep their lane's names.
# In $OUT: pytest.log, step_gpu0.log, step_gpu1.log, gpu0/throughput.tgz, gpu1/throughput.tgz.
#   bash bench/h200/gpu_install.sh > $OUT/install.log 2>&1 && bash bench/h200/kernels_call.sh   # carry .gpuhouse
# About 8 minutes with the install (a cold compile of the hybrid ~140 s, of attn_fit ~60 s); each step has its
# own limit (tests 140 s, GPU 0's sweep 330 s; GPU 1's sweep 450 s), so the call returns inside 600 s.
set -uo pipefail
OUT=${OUT:-.}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
SWEEP=${SWEEP:-bench/h200/h200_throughput_sweep.sh}  # tests/test_h200_env.py stands a stub in
KERNEL_TESTS=(tests/test_ssd_kernel.py tests/test_ssm_golf_scan.py tests/test_conv_kernel.py tests/test_ssm_golf_conv.py)
FIRST_TESTS=(
  tests/test_ssm_opaque.py::test_opaque_model_under_cuda_graphs_matches_eager_on_gpu
  tests/test_ssm_golf_scan.py::test_golf_split_mixer_compiled_matches_reference_on_gpu
  tests/test_ssm_opaque.py::test_opaque_mixer_matches_reference_on_gpu
)
run_tests() {  # run_tests <label> <limit s> <pytest arguments>...: appends to pytest.log, prints one count line
  local label=$1 limit=$2 log rc
  shift 2
  log=$(mktemp)
  CUDA_VISIBLE_DEVICES=0 timeout -s INT -k 30 "$limit" "$PY" -m pytest -rf -v --tb=short "$@" 2>&1 \
    | tee -a "$OUT/pytest.log" > "$log"
  rc=${PIPESTATUS[0]}
  echo "$label: exit $rc ($(grep -c ' PASSED' "$log") passed, $(grep -c ' FAILED' "$log") failed, $(grep -c ' SKIPPED' "$log") skipped)"
  rm -f "$log"
}
sweep() {  # sweep <gpu> <name> <config> <limit s> <variants>...: step_<name>.log, <name>/throughput.tgz
  local gpu=$1 name=$2 config=$3 limit=$4
  shift 4
  [ $# -gt 0 ] || { echo "$name step sweep: none"; return; }
  mkdir -p "$OUT/$name"
  CUDA_VISIBLE_DEVICES=$gpu OUT="$OUT/$name" CONFIG=$config STEPS=20 PROFILE_STEPS=3 PROFILE_SHAPES=1 \
    PER_VARIANT_TIMEOUT=200 timeout "$limit" bash "$SWEEP" "$@" > "$OUT/step_$name.log" 2>&1
  echo "$name step sweep: exit $?"
  grep "^variant '" "$OUT/step_$name.log" | cut -c1-300  # the failing variants (their last lines: the log)
  grep -E "^[a-z_]+[^ ]*: [0-9.]+ ms/step" "$OUT/step_$name.log" | cut -c1-300
}
lane_variants() {  # lane_variants "<GPUn_VARIANTS>": VARIANTS, one sweep argument each ("base" -> "", commas ->
  local v          # spaces; "none" -> no sweep in that lane)
  VARIANTS=()
  [ "$1" = none ] && return
  for v in $1; do
    [ "$v" = base ] && v=""
    VARIANTS+=("${v//,/ }")
  done
}
lane_tests() {
  : > "$OUT/pytest.log"
  run_tests "first tests" "${FIRST_TIMEOUT:-140}" "${FIRST_TESTS[@]}"
  if [ "${TEST_TIMEOUT:-0}" -gt 0 ]; then
    run_tests "kernel tests" "$TEST_TIMEOUT" "${KERNEL_TESTS[@]}" "${FIRST_TESTS[@]/#/--deselect=}"
  fi
  lane_variants "${GPU0_VARIANTS:-base config=configs/attn_tuned_fit.yaml config=configs/hybrid_mlp_tuned_fit.yaml}"
  sweep 0 gpu0 "${GPU0_CONFIG:-configs/attn_fit.yaml}" "${GPU0_SWEEP_TIMEOUT:-330}" "${VARIANTS[@]}"
}
lane_step() {
  lane_variants "${GPU1_VARIANTS:-base model.ssm_compile=opaque train.compile_mode=reduce-overhead}"
  sweep "$STEP_GPU" gpu1 "${GPU1_CONFIG:-configs/hybrid_seed_fit.yaml}" "${GPU1_SWEEP_TIMEOUT:-450}" "${VARIANTS[@]}"
}
case "${GPUS:-2}" in
  1) STEP_GPU=0; lane_tests; lane_step ;;
  2) STEP_GPU=1; lane_tests & lane_step & wait ;;
  *) echo "error: GPUS must be 1 (the lanes in turn on GPU 0) or 2 (one lane a GPU), not '${GPUS}'" >&2; exit 2 ;;
esac
