#!/usr/bin/env bash
# Issue 22's kernel measurements in one device call on a two-GPU machine (bench/README, "Issue 22's kernels in
# the step"), after bench/h200/gpu_install.sh on the same machine; no corpus needed. Two lanes at once:
#   GPU 0: golf's kernel tests compiled, in two pytest runs: first FIRST_TESTS (the tests that failed or are new
#          since the last call: the bf16-autocast adapter test that failed on 2026-11-30, the launches' writes as
#          torch.compile reads them, golf_split's mixer tests, compiled under ssm_compile trace and opaque on the
#          GPU) under their own limit, so that their outcome is in the log even when the long run is cut off;
#          then the rest of the four test files. Each run gets SIGINT at its limit (timeout -s INT; SIGKILL 30 s
#          later if it still runs): pytest stops as on Ctrl-C and still prints the failures so far (-rf, each
#          traceback --tb=short); -v names each test as it ends. Then bench/conv_kernel_bench.py;
#   GPU 1: bench/ssd_kernel_bench.py (the walking and the split forward, the split backward, against mamba-ssm),
#          then hybrid_seed_fit's training step with the libraries' kernels, golf's conv and golf_split, each
#          with 3 profiled steps recording the ops' shapes (h200_throughput_sweep.sh, which prints a failing
#          variant's last lines; the profile's aten_ops say which ATen ops launch the step's eager elementwise
#          kernels: 12 of hybrid_seed_fit's 135 ms of device time a step, 2026-11-30).
# In $OUT: pytest.log (both runs), conv_kernel.json/.log, ssd_kernel.json/.log, step_sweep.log, throughput.tgz.
#   bash bench/h200/gpu_install.sh > $OUT/install.log 2>&1 && bash bench/h200/kernels_call.sh   # carry .gpuhouse
# About 8 minutes with the install on 2026-11-30's timings (a cold compile of the hybrid ~120 s, the SSD bench
# ~100 s); each step has its own limit (tests 150 + 200 s, conv bench 150 s; SSD bench 180 s, step sweep 330 s),
# so the call returns inside 600 s.
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
lane_tests() {
  : > "$OUT/pytest.log"
  run_tests "first tests" "${FIRST_TIMEOUT:-150}" "${FIRST_TESTS[@]}"
  run_tests "kernel tests" "${TEST_TIMEOUT:-200}" "${KERNEL_TESTS[@]}" "${FIRST_TESTS[@]/#/--deselect=}"
  CUDA_VISIBLE_DEVICES=0 timeout "${CONV_TIMEOUT:-150}" "$PY" bench/conv_kernel_bench.py --json "$OUT/conv_kernel.json" \
    > "$OUT/conv_kernel.log" 2>&1
  echo "conv bench: exit $?"
}
lane_step() {
  CUDA_VISIBLE_DEVICES=1 timeout "${SSD_TIMEOUT:-180}" "$PY" bench/ssd_kernel_bench.py --fwds walk,split --bwds split \
    --num-warps 4 --json "$OUT/ssd_kernel.json" > "$OUT/ssd_kernel.log" 2>&1
  echo "ssd bench: exit $?"
  CUDA_VISIBLE_DEVICES=1 CONFIG=configs/hybrid_seed_fit.yaml STEPS=20 PROFILE_STEPS=3 PROFILE_SHAPES=1 \
    PER_VARIANT_TIMEOUT=170 \
    timeout "${STEP_TIMEOUT:-330}" bash "$SWEEP" "" "model.ssm_conv=golf" "model.ssm_scan=golf_split" \
    > "$OUT/step_sweep.log" 2>&1
  echo "step sweep: exit $?"
  grep "^variant '" "$OUT/step_sweep.log" | cut -c1-300  # the failing variants (their last lines: step_sweep.log)
  tail -n 3 "$OUT/step_sweep.log" | cut -c1-300
}
lane_tests &
lane_step &
wait
