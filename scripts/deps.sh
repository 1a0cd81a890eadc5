#!/usr/bin/env bash
# Installs the Debian packages mnistd needs, and nothing when all are present.
# Uses sudo only when not root. Extra package groups: pass "bench" for the
# PyTorch reference and wrk.
set -euo pipefail
pkgs=(build-essential pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev
      libcmocka-dev libopenblas-dev zlib1g-dev libsqlite3-dev libspng-dev libsystemd-dev
      dataset-fashion-mnist curl ca-certificates)
# Node.js may come from elsewhere (nodesource, nvm): only ask Debian when absent.
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
for g in "$@"; do
  case "$g" in
    bench) pkgs+=(python3-torch wrk) ;;
    *) echo "deps.sh: unknown group '$g'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
