#!/usr/bin/env bash
# Installs the Debian packages mnistd needs, and nothing when all are present.
# Uses sudo only when not root. Extra package groups: pass "bench" for the
# PyTorch reference and wrk.
set -euo pipefail
pkgs=(build-essential pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev
      libcmocka-dev libdnnl-dev zlib1g-dev libsqlite3-dev libspng-dev libsystemd-dev
      dataset-fashion-mnist curl ca-certificates prometheus chromium fonts-dejavu-core
      libprotobuf-c-dev protobuf-c-compiler libonnx-dev python3-onnx libarchive-dev nettle-dev
      nginx python3-yaml jq)
# Node.js may come from elsewhere (nodesource, nvm): only ask Debian when absent.
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
for g in "$@"; do
  case "$g" in
    # libopenblas0-pthread: Debian's torch calls whatever libblas.so.3 is
    # installed; without OpenBLAS that is the reference BLAS, ~10x slower
    # (its seed-network epoch 38 s instead of ~4): the peer runs at its best.
    bench) pkgs+=(python3-torch wrk libopenblas0-pthread) ;;
    *) echo "deps.sh: unknown group '$g'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The web page's chart library, the browser-test driver and onnxruntime-node
# (ONNX export test) come from npm, pinned by package-lock.json; nothing
# happens when they are in place. --ignore-scripts: onnxruntime-node's
# install script only downloads optional GPU libraries from outside npm (and
# fails offline); its CPU library is inside the package. No other package
# here has an install script.
cd "$(dirname "$0")/.."
if [ -f package-lock.json ] && [ ! -f node_modules/.package-lock.json -o package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: npm ci"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
