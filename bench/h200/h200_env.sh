#!/usr/bin/env bash
# Source this on the GPU machine (lent H200, no network): install carried wheels and tokenize the carried
# corpus into data/sp1024 with the shared 1024-token tokenizer. Expects, carried in .carry/:
#   .carry/whl/mamba_ssm-*.whl   (pure-Python build: MAMBA_SKIP_CUDA_BUILD=TRUE pip wheel ...), brotli, zstandard
#   .carry/corpus/{train_00[0-3],val}.jsonl.xz and .carry/tok/corpus_1024_bpe.model
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
# The train shards carried: all four by default. A call that must carry causal-conv1d and the gpu cache too has
# room for one (TRAIN_SHARDS="000"): its data goes to its own folder (data/sp1024_000), never mistaken for the
# full set, and is fine for a profile or a throughput run, not for a scored pipeline.
TRAIN_SHARDS=${TRAIN_SHARDS:-000 001 002 003}
GOLF_DATA_NAME=sp1024; [ "$TRAIN_SHARDS" = "000 001 002 003" ] || GOLF_DATA_NAME="sp1024_${TRAIN_SHARDS// /_}"
_train_globs=""; for _s in $TRAIN_SHARDS; do _train_globs+="${_train_globs:+,}.carry/corpus/train_$_s.jsonl.xz"; done
GOLF_DATA_SETS=(
  "data.name=$GOLF_DATA_NAME"
  "data.train_globs=[$_train_globs]"
  "data.val_globs=[.carry/corpus/val.jsonl.xz]"
  "data.tokenizer_model=.carry/tok/corpus_1024_bpe.model"
)
export GOLF_DATA_SETS
GOLF_DATA_ARGS=()  # the same as cli.py arguments
for s in "${GOLF_DATA_SETS[@]}"; do GOLF_DATA_ARGS+=(--set "$s"); done
# GOLF_ENV_DATA_ONLY=1: the data settings above alone, nothing unpacked or installed (tests/test_h200_env.py)
if [ "${GOLF_ENV_DATA_ONLY:-0}" = 1 ]; then return 0; fi
# torch.compile and Triton caches in the ignored .gpu_cache/, which a warm machine keeps between calls: a second
# seed of the same config reuses the compiled kernels (same kernels, less device time spent compiling)
export TORCHINDUCTOR_CACHE_DIR=$PWD/.gpu_cache/inductor TRITON_CACHE_DIR=$PWD/.gpu_cache/triton
# caches saved by an earlier session (`SAVE_GPU_CACHE=1 bash bench/h200/h200_pipeline.sh`) travel compressed as
# .carry_cache/gpu_cache.tgz.part* (21 MiB on 2026-11-29; unpacked, 160 MiB would not fit a call's carry)
if [ ! -d .gpu_cache ] && compgen -G ".carry_cache/gpu_cache.tgz.part*" > /dev/null; then
  cat .carry_cache/gpu_cache.tgz.part* | tar xzf - && echo "gpu cache: unpacked $(du -sh .gpu_cache | cut -f1)"
fi
# .carry/whl: mamba-ssm (pure Python) plus brotli and zstandard, which the image lacks (package.compressor auto
# compares all three). A call that carries the whole corpus has no room left for them: an earlier call on the same
# warm machine installs them into /tmp/site, kept while the machine stays warm.
# A machine where bench/h200/gpu_install.sh ran (the README's install, into the image's Python) needs neither.
if python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('mamba_ssm') is None)"; then
  :
elif compgen -G ".carry/whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .carry/whl/*.whl || return 1
elif [ ! -d /tmp/site/mamba_ssm ]; then
  echo "error: no .carry/whl carried, nothing installed in /tmp/site and no mamba-ssm installed (a fresh machine):" \
       "carry .carry/whl, or run bench/h200/gpu_install.sh" >&2
  return 1
fi
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
# causal-conv1d (25.9 MB) does not fit in one call's 64 MiB beside the corpus: an earlier call on the same warm
# machine installs it into the ignored .gpu_site/ (kept between calls while the machine stays warm)
if [ -d .carry_conv ]; then python3 -m pip install -q --no-index --no-deps --no-compile --target .gpu_site .carry_conv/*.whl; fi
if [ -d .gpu_site ]; then export PYTHONPATH=$PWD/.gpu_site:$PYTHONPATH; fi
GOLF_HAS_CONV=$(python3 -c "import importlib.util as u; print(int(bool(u.find_spec('causal_conv1d'))))")
echo "causal_conv1d: $([ "$GOLF_HAS_CONV" = 1 ] && echo True || echo False)"
# Training scripts call this first: without causal-conv1d the SSM path falls back to PyTorch's conv1d, slower
# (RESULTS, seventh block: a pipeline that landed on a fresh machine stepped at 130 ms, the next seed at 119 ms
# with the kernel, and spent 537 s of device time on a run that could not count). ALLOW_CONV_FALLBACK=1 runs
# anyway.
require_causal_conv1d() {
  [ "$GOLF_HAS_CONV" = 1 ] || [ "${ALLOW_CONV_FALLBACK:-0}" = 1 ] && return 0
  echo "error: causal-conv1d is not installed on this machine (no .gpu_site: a fresh machine, the last one was" \
       "released). Run the install call first (carry .carry_conv), or set ALLOW_CONV_FALLBACK=1." >&2
  return 3
}
# run_in_lanes <lanes> <function> <item>...: item i goes to lane i % lanes, each lane runs its items in order,
# the lanes at once; the function is called as <function> <lane> <item>, the lane being the GPU index
# (levers.sh, h200_train_sweep.sh). Returns when every lane is done.
run_in_lanes() {
  local lanes=$1 fn=$2 lane i pids=()
  shift 2
  local items=("$@")
  for lane in $(seq 0 $((lanes - 1))); do
    ( for i in "${!items[@]}"; do [ $((i % lanes)) = "$lane" ] && "$fn" "$lane" "${items[$i]}"; done; true ) &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
}
# One sweep variant (bench/h200/h200_*_sweep.sh): space-separated params overrides, a word config=<file> switching the
# params file, a word tree=<dir> running the bench script of another source tree (e.g. `git archive <commit> golf
# bench | tar -x -C .carry_old`, carried: two commits' code side by side in one call; the throughput sweep only), a
# word env=<NAME>=<value> setting an environment variable for that variant's process alone (a library's setting that
# has no params key, e.g. cuBLAS's workspace).
# Sets VARIANT_CFG, VARIANT_SETS (--set pairs), VARIANT_TREE (. by default), VARIANT_ENV (NAME=value words for `env`)
# and VARIANT_LABEL (<config>__<override>..., __tree_<dir's name> for another tree, __env_<NAME=value>).
parse_variant() {  # parse_variant "<variant>" <default config>
  VARIANT_CFG=$2; VARIANT_SETS=(); VARIANT_TREE=.; VARIANT_ENV=(); local s label=""
  for s in $1; do
    if [[ $s == config=* ]]; then VARIANT_CFG=${s#config=}
    elif [[ $s == tree=* ]]; then VARIANT_TREE=${s#tree=}; label+="__tree_$(basename "$VARIANT_TREE")"
    elif [[ $s == env=* ]]; then
      if [[ ! ${s#env=} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        echo "variant word '$s': expected env=<NAME>=<value>" >&2; return 2
      fi
      VARIANT_ENV+=("${s#env=}"); label+="__env_${s#env=}"; label=${label//[^A-Za-z0-9_.=-]/_}
    else VARIANT_SETS+=(--set "$s"); label+="__${s//[^A-Za-z0-9_.=-]/_}"; fi
  done
  VARIANT_LABEL="$(basename "$VARIANT_CFG" .yaml)$label"
}
