#!/usr/bin/env bash
# HTTP benchmarks of `mnistd serve` (part of make bench): predictions per
# second and latency with wrk, idle and while a job trains, and the
# daemon's memory. Loopback only, bounded in time. Prints "key value" lines.
# Usage: bench/http.sh BUILD_DIR DATA_DIR
set -euo pipefail
B=${1:-build}; D=${2:-data}
T=$(mktemp -d); PID=
# Reap the daemon inside the braces: bash would otherwise report its SIGKILL
# as a "Killed" line at the end of `make bench`.
trap '[ -n "$PID" ] && { kill -9 $PID; wait $PID || true; } 2>/dev/null; rm -rf "$T"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
U=http://127.0.0.1:$PORT
"$B"/mnistd serve --listen 127.0.0.1:$PORT --state-dir "$T/state" --data-dir "$D" --no-bootstrap \
  > /dev/null 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf $U/healthz >/dev/null && break; sleep 0.05; done
head -c 800 "$D/mnist/t10k-images-idx3-ubyte" | tail -c 784 > "$T/digit.raw"
curl -s -XPOST -H 'Content-Type: application/json' -d '{"epochs":1,"train_limit":20000,"activate":"always"}' $U/v1/jobs >/dev/null
for _ in $(seq 600); do curl -sf $U/readyz >/dev/null && break; sleep 0.1; done
rss() { awk -v k="$1:" '$1==k {print int($2/1024)}' /proc/$PID/status; }
# Let the allocator settle, then read the idle footprint with the model loaded.
sleep 1
echo "idle_rss_mb $(rss VmRSS)"
wrkrun() { # prefix
  MNISTD_DIGIT="$T/digit.raw" wrk -t2 -c16 -d8s --latency -s bench/predict.lua $U/v1/predict > "$T/wrk.txt"
  awk -v p="$1" '/Requests\/sec/ {print p"_requests_per_second", $2}
       $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print p"_p99_ms", v}
       /Non-2xx/ {print p"_errors", $NF}' "$T/wrk.txt"
}
wrkrun predict
curl -s -XPOST -H 'Content-Type: application/json' -d '{"epochs":30,"activate":"never"}' $U/v1/jobs >/dev/null
sleep 2
wrkrun predict_training
echo "training_rss_mb $(rss VmHWM)"
