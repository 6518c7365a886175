#!/usr/bin/env bash
# Issue 22's kernel measurements in one device call on a two-GPU machine (bench/README, "Issue 22's kernels in
# the step"), after bench/h200/gpu_install.sh on the same machine; no corpus needed. Two lanes at once:
#   GPU 0: golf's kernel tests compiled, in two pytest runs: first FIRST_TESTS (the tests that failed or are new
#          since the last call: the bf16-autocast adapter test that failed on 2026-11-30, the launches' writes as
#          torch.compile reads them, golf_split's mixer tests, compiled under ssm_compile trace and opaque on the
#          GPU) under their own limit, so that their outcome is in the log even when the long run is cut off;
#          then the rest of the four test files. Each run gets SIGINT at its limit (timeout -s INT; SIGKILL 30 s
#          later if it still runs): pytest stops as on Ctrl-C and still prints the failures so far (-rf, each
#          traceback --tb=short); -v names each test as it ends. Then attn_fit's training step, full and partial
#          RoPE (the RoPE tables now cached: inductor had recomputed them in every q/k kernel, 21.8 of attn_fit's
#          110.8 ms of device time a step, RESULTS sixth block);
#   GPU 1: hybrid_seed_fit's training step with the libraries' kernels, golf_split and the opaque SSM ops (one
#          compiled graph: the step's eager elementwise kernels, 12 of its 135 ms of device time, run between
#          trace's graph pieces).
# Every step variant runs STEPS=20 timed steps, then 3 profiled steps recording the ops' shapes
# (h200_throughput_sweep.sh, which prints a failing variant's last lines). The conv and SSD benches ran in the
# sixth block and are not repeated here (bench/conv_kernel_bench.py, bench/ssd_kernel_bench.py run alone).
# In $OUT: pytest.log (both runs), step_attn.log, step_hybrid.log, attn/throughput.tgz, hybrid/throughput.tgz.
#   bash bench/h200/gpu_install.sh > $OUT/install.log 2>&1 && bash bench/h200/kernels_call.sh   # carry .gpuhouse
# About 8 minutes with the install (a cold compile of the hybrid ~120 s, of attn_fit ~40 s); each step has its
# own limit (tests 140 + 130 s, attention's sweep 200 s; the hybrid's sweep 450 s), so the call returns inside
# 600 s.
set -uo pipefail
OUT=${OUT:-.}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
SWEEP=${SWEEP:-bench/h200/h200_throughput_sweep.sh}  # tests/test_h200_env.py stands a stub in
KERNEL_TESTS=(tests/test_ssd_kernel.py tests/test_ssm_golf_scan.py tests/test_conv_kernel.py tests/test_ssm_golf_conv.py)
FIRST_TESTS=(
  tests/test_ssm_golf_scan.py::test_golf_adapters_keep_the_ops_dtypes_under_bf16_autocast
  tests/test_ssd_kernel.py::test_no_launch_writes_an_input_as_torch_compile_reads_it
  tests/test_ssm_golf_scan.py::test_golf_split_mixer_compiled_matches_reference_on_gpu
  tests/test_ssm_golf_scan.py::test_golf_split_mixer_under_bf16_autocast
  tests/test_ssm_golf_scan.py::test_mixer_with_golfs_scan_matches_reference
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
  mkdir -p "$OUT/$name"
  CUDA_VISIBLE_DEVICES=$gpu OUT="$OUT/$name" CONFIG=$config STEPS=20 PROFILE_STEPS=3 PROFILE_SHAPES=1 \
    PER_VARIANT_TIMEOUT=170 timeout "$limit" bash "$SWEEP" "$@" > "$OUT/step_$name.log" 2>&1
  echo "$name step sweep: exit $?"
  grep "^variant '" "$OUT/step_$name.log" | cut -c1-300  # the failing variants (their last lines: the log)
  grep -E "^[a-z_]+[^ ]*: [0-9.]+ ms/step" "$OUT/step_$name.log" | cut -c1-300
}
lane_tests() {
  : > "$OUT/pytest.log"
  run_tests "first tests" "${FIRST_TIMEOUT:-140}" "${FIRST_TESTS[@]}"
  run_tests "kernel tests" "${TEST_TIMEOUT:-130}" "${KERNEL_TESTS[@]}" "${FIRST_TESTS[@]/#/--deselect=}"
  sweep 0 attn configs/attn_fit.yaml "${ATTN_TIMEOUT:-200}" "" "model.rope_dims=16"
}
lane_step() {
  sweep 1 hybrid configs/hybrid_seed_fit.yaml "${STEP_TIMEOUT:-450}" "" "model.ssm_scan=golf_split" \
    "model.ssm_compile=opaque"
}
lane_tests &
lane_step &
wait
