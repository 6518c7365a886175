#!/usr/bin/env bash
# Builds the ignored .gpuhouse/ that bench/h200/gpu_install.sh installs from on a lent GPU machine (no network
# there): the wheels of golf's dependencies that the GPU image lacks, for its Python 3.12 on x86_64, plus the
# causal-conv1d wheel and mamba-ssm's source archive from ../shared/wheels. Run here, with the registry reachable:
#   bash bench/h200/make_gpuhouse.sh            # then carry .gpuhouse (bench/carry_size.py checks the fit)
# How: resolve golf's non-torch requirements with this machine's pip, keep the pure-Python wheels and source
# archives, fetch the cp312 builds of the binary ones, then drop every package the image already has
# (IMAGE_PKGS, default bench/h200/image_packages.txt: one name a line, '#' lines ignored), so that the folder
# fits one call beside the tree (51 MiB on 2026-12-01: 71 wheels and archives).
set -euo pipefail
SHARED=${SHARED:-../shared/wheels}
DEST=${DEST:-.gpuhouse}
IMAGE_PKGS=${IMAGE_PKGS:-bench/h200/image_packages.txt}
[ -f "$IMAGE_PKGS" ] || { echo "error: no package list '$IMAGE_PKGS' (one name a line)" >&2; exit 2; }
[ -e "$DEST" ] && { echo "error: '$DEST' exists; move it away first" >&2; exit 2; }
REQS=("dvc>=3.50" "zstandard>=0.22" "brotli>=1.1" "typer>=0.12" "rich>=13" "sentencepiece>=0.2"
  "safetensors>=0.4" "einops>=0.7" "huggingface_hub>=0.23")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q -d "$work/here" --prefer-binary "${REQS[@]}"
mkdir -p "$work/out"
cp "$work"/here/*-none-any.whl "$work/out/"
cp "$work"/here/*.tar.gz "$work/out/" 2>/dev/null || true
for f in "$work"/here/*.whl; do
  case "$f" in *-none-any.whl) continue ;; esac
  b=$(basename "$f"); echo "$(echo "$b" | cut -d- -f1)==$(echo "$b" | cut -d- -f2)"
done > "$work/binary.txt"
plat=()
for p in manylinux2014 manylinux_2_17 manylinux_2_26 manylinux_2_27 manylinux_2_28 manylinux_2_34; do
  plat+=(--platform "${p}_x86_64")
done
python3 -m pip download -q -d "$work/out" --no-deps --only-binary=:all: --python-version 3.12 "${plat[@]}" \
  -r "$work/binary.txt"
for f in "$work"/out/*; do
  name=$(basename "$f" | sed 's/-[0-9].*//' | tr 'A-Z_' 'a-z-')
  if grep -qix "$name" "$IMAGE_PKGS"; then rm "$f"; fi
done
cp "$SHARED"/causal_conv1d-1.7.0-cp312-cp312-linux_x86_64.whl "$SHARED"/mamba_ssm-2.3.2.post1.tar.gz "$work/out/"
mv "$work/out" "$DEST"
echo "$DEST: $(ls "$DEST" | wc -l) files, $(du -sh "$DEST" | cut -f1)"
