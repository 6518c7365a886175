#!/usr/bin/env bash
# FlashAttention-4 (`flash-attn-4` on PyPI, `from flash_attn.cute import flash_attn_func`) onto a lent GPU machine
# whose calls each carry at most 64 MiB: its wheels come to 111 MB, one of them (nvidia-cutlass-dsl-libs-cu13, the
# CuTe DSL's compiler) 92 MB. So they travel in three calls on one warm machine, each carrying one folder of the
# ignored .carry_fa4/ (made by `bash bench/h200/fa4_stage.sh pack <folder of wheels>` here):
#   p1/ and p2/: the two halves of the cu13 wheel (split -b 46000000, PART_BYTES);
#   p3/: every other wheel FA4 needs beside the image's torch, and the cu13 wheel's sha256.
# Each call runs `bash bench/h200/fa4_stage.sh` (after bench/h200/gpu_install.sh on the same machine): it copies the
# part folders it finds into STAGE (default /tmp/fa4_stage, which a warm machine keeps between calls); once all three
# are there it joins the cu13 wheel, checks its sha256 and installs the lot with pip --no-deps --no-index (the
# dependency lists name nvidia-cutlass-dsl-libs-cu12 too, which a cu13 torch does not need), then imports FA4.
# Prints one line per step; exit 0 when FA4 imports, 3 while parts are still missing.
set -euo pipefail
STAGE=${STAGE:-/tmp/fa4_stage}
CARRY=${CARRY:-.carry_fa4}
CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
PART_BYTES=${PART_BYTES:-46000000}  # two parts of the 92-MB wheel, each under a call's carry beside the tree
PY=${PYTHON:-python3}  # tests/test_fa4_stage.py stands a stub in

if [ "${1:-}" = pack ]; then  # pack <folder with the wheels from `pip download` (bench/README)>
  src=${2:?usage: fa4_stage.sh pack <folder of wheels>}
  [ -f "$src/$CU13" ] || { echo "error: $src has no $CU13" >&2; exit 2; }
  [ -e "$CARRY" ] && { echo "error: $CARRY exists; remove it first" >&2; exit 2; }
  mkdir -p "$CARRY/p1" "$CARRY/p2" "$CARRY/p3"
  split -b "$PART_BYTES" -d "$src/$CU13" "$CARRY/cu13.whl.part"
  if [ ! -e "$CARRY/cu13.whl.part01" ] || [ -e "$CARRY/cu13.whl.part02" ]; then
    echo "error: the cu13 wheel must split into exactly two parts of PART_BYTES=$PART_BYTES" >&2
    rm -rf "$CARRY"
    exit 2
  fi
  mv "$CARRY/cu13.whl.part00" "$CARRY/p1/"
  mv "$CARRY/cu13.whl.part01" "$CARRY/p2/"
  find "$src" -maxdepth 1 -name '*.whl' ! -name "$CU13" ! -name '*libs_cu12*' -exec cp {} "$CARRY/p3/" \;
  (cd "$src" && sha256sum "$CU13") > "$CARRY/p3/cu13.sha256"
  du -sh "$CARRY"/p*
  exit 0
fi

mkdir -p "$STAGE"
for part in p1 p2 p3; do
  if [ -d "$CARRY/$part" ]; then
    cp "$CARRY/$part"/* "$STAGE/"
    echo "fa4 stage: copied $part ($(du -sh "$CARRY/$part" | cut -f1))"
  fi
done
missing=()
for f in cu13.whl.part00 cu13.whl.part01 cu13.sha256; do
  [ -f "$STAGE/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fa4 stage: waiting for ${missing[*]} (carry the other .carry_fa4 parts in the next calls)"
  exit 3
fi
cd "$STAGE"
[ -f "$CU13" ] || cat cu13.whl.part00 cu13.whl.part01 > "$CU13"
sha256sum -c cu13.sha256
start=$(date +%s)
wheels=()
for w in ./*.whl; do  # einops and protobuf only where the image lacks them: never replace what it has
  case "$w" in
    ./einops-*) "$PY" -c "import einops" 2>/dev/null && continue ;;
    ./protobuf-*) "$PY" -c "import google.protobuf" 2>/dev/null && continue ;;
  esac
  wheels+=("$w")
done
"$PY" -m pip install -q --no-index --no-deps "${wheels[@]}"
echo "fa4 install: $(( $(date +%s) - start )) s"
"$PY" -m pip list 2>/dev/null | grep -iE "^(flash.attn.4|nvidia.cutlass.dsl.*|quack.kernels|cuda.bindings|torch) " || true
"$PY" -c "from flash_attn.cute import flash_attn_func; print('fa4 import: ok')"
