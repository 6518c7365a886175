#!/usr/bin/env bash
# Issue 22's kernel measurements in one device call on a two-GPU machine (bench/README, "Issue 22's kernels in
# the step"), after bench/h200/gpu_install.sh on the same machine; no corpus needed. Two lanes at once:
#   GPU 0: golf's kernel tests compiled (-v names each test as it ends, so a run cut off by its limit still says
#          which failed), then bench/conv_kernel_bench.py;
#   GPU 1: bench/ssd_kernel_bench.py (the walking and the split forward, the split backward, against mamba-ssm),
#          then hybrid_seed_fit's training step with the libraries' kernels, golf's conv and golf_split, each
#          with 3 profiled steps recording the ops' shapes (h200_throughput_sweep.sh; the profile's aten_ops say which
#          ATen ops launch the step's eager elementwise kernels: 12 of hybrid_seed_fit's 135 ms of device time a step,
#          2026-11-30).
# In $OUT: pytest.log, conv_kernel.json/.log, ssd_kernel.json/.log, step_sweep.log, throughput.tgz.
#   bash bench/h200/gpu_install.sh > $OUT/install.log 2>&1 && bash bench/h200/kernels_call.sh   # carry .gpuhouse
# About 8 minutes with the install on 2026-11-30's timings (a cold compile of the hybrid ~120 s, the SSD bench
# ~100 s); each step has its own limit, so the call returns inside 600 s.
set -uo pipefail
OUT=${OUT:-.}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
SWEEP=${SWEEP:-bench/h200/h200_throughput_sweep.sh}  # tests/test_h200_env.py stands a stub in
lane_tests() {
  CUDA_VISIBLE_DEVICES=0 timeout "${TEST_TIMEOUT:-280}" "$PY" -m pytest -rf -v tests/test_ssd_kernel.py \
    tests/test_ssm_golf_scan.py tests/test_conv_kernel.py tests/test_ssm_golf_conv.py > "$OUT/pytest.log" 2>&1
  echo "kernel tests: exit $? ($(grep -c ' PASSED' "$OUT/pytest.log") passed, $(grep -c ' FAILED' "$OUT/pytest.log") failed, $(grep -c ' SKIPPED' "$OUT/pytest.log") skipped)"
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
  tail -n 3 "$OUT/step_sweep.log" | cut -c1-300
}
lane_tests &
lane_step &
wait
