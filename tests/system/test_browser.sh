#!/usr/bin/env bash
# Browser end-to-end test of the web page (web/) served by the real daemon:
# starts `mnistd serve` on a free loopback port with a temporary state dir,
# trains a first model through the API, then runs tests/browser/e2e.mjs in
# headless Chromium (playwright-core). Needs /usr/bin/chromium (make deps) and
# node_modules (npm ci; run here if missing). Prints "browser: N passed, N
# failed" last; exit status 1 on any failure.
#
# Environment: MNISTD_BIN (build/mnistd), MNISTD_DATA (data), CHROMIUM
# (/usr/bin/chromium), MNISTD_WEB_DIR (serve web/ from disk instead of the
# built-in copy), BROWSER_OUT (tests/out), MNISTD_SCREENSHOT_DOC (set it
# to docs/screenshot.png to refresh the README's picture; unset, the tree
# stays clean).
set -u
cd "$(dirname "$0")/../.."
BIN=${MNISTD_BIN:-build/mnistd}
DATA=${MNISTD_DATA:-data}
OUT=${BROWSER_OUT:-tests/out}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
T=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { # message: a setup failure counts as one failed check
  echo "FAIL $*"
  [ -s "$T/main.log" ] && { echo "--- daemon log (last 20 lines)"; tail -n 20 "$T/main.log"; }
  echo "browser: 0 passed, 1 failed"
  exit 1
}

command -v node >/dev/null || fail "node is not installed (make deps)"
[ -x "$CHROMIUM" ] || fail "$CHROMIUM is missing: run 'make deps' (apt-get install chromium)"
[ -x "$BIN" ] || fail "$BIN is missing: run 'make'"
if [ ! -d node_modules/playwright-core ] || [ ! -f node_modules/uplot/dist/uPlot.iife.min.js ]; then
  echo "node_modules missing: npm ci"
  timeout 300 npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed"
fi

# A free loopback port (the kernel picks one; the daemon binds it right after).
port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

WEB=()
[ -n "${MNISTD_WEB_DIR:-}" ] && WEB=(--web-dir "$MNISTD_WEB_DIR")
# start_daemon NAME [flags...]: state in $T/NAME, log in $T/NAME.log; sets
# LAST_BASE and LAST_PID and records the pid in PIDS for the cleanup trap.
start_daemon() {
  local name=$1; shift
  local port pid
  for _ in 1 2 3; do
    port=$(port)
    # Flags win over MNISTD_* variables, but a token from the caller's
    # environment must not leak into these daemons.
    env -u MNISTD_API_TOKEN -u MNISTD_API_TOKEN_FILE "$BIN" serve --listen "127.0.0.1:$port" --state-dir "$T/$name" --data-dir "$DATA" \
      --no-bootstrap "${WEB[@]}" "$@" >"$T/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      LAST_BASE="http://127.0.0.1:$port"; LAST_PID=$pid
      return 0
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  return 1
}

start_daemon main || fail "the daemon did not start"
BASE=$LAST_BASE; PID=$LAST_PID
# A second daemon that has no model and wants an API token.
TOKEN="e2e-$RANDOM$RANDOM"
printf '%s\n' "$TOKEN" > "$T/token"
start_daemon auth --api-token-file "$T/token" || fail "the daemon with --api-token did not start"
export E2E_AUTH_BASE="$LAST_BASE/" E2E_AUTH_TOKEN="$TOKEN"
echo "daemon: $BASE (pid $PID)"

# A first model, trained the quick way through the API.
job=$(curl -sf -X POST "$BASE/v1/jobs" -H 'Content-Type: application/json' \
  -d '{"epochs":3,"train_limit":20000,"activate":"always"}') || fail "POST /v1/jobs failed"
id=$(printf '%s' "$job" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).id))')
state=""
for _ in $(seq 240); do
  state=$(curl -sf "$BASE/v1/jobs/$id" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).state)}catch{console.log("?")}})')
  case "$state" in succeeded|failed|cancelled) break ;; esac
  sleep 0.5
done
[ "$state" = succeeded ] || fail "the first model's job $id ended as '$state'"
for _ in $(seq 50); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/readyz" >/dev/null || fail "/readyz is not 200 after training"
echo "model: job $id succeeded"

# A read-only replica of the main daemon (issue 15): the page must adapt to it.
start_daemon replica --follow "$BASE" || fail "the replica (--follow) did not start"
export E2E_REPLICA_BASE="$LAST_BASE/"
for _ in $(seq 100); do curl -sf "${LAST_BASE}/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "${LAST_BASE}/readyz" >/dev/null || fail "the replica has no model 10 s after start"

# A small PNG-folder zip made from real MNIST digits, for the Data panel's
# upload check (issue 13).
python3 tests/datasets/make_uploads.py three-zip "$T/three.zip" "$DATA/mnist" 150 || fail "cannot make the upload zip"
export E2E_DATASET_ZIP="$T/three.zip"

timeout 260 node tests/browser/e2e.mjs "$BASE/" "$OUT"
rc=$?
if [ $rc -ne 0 ]; then
  # Keep the daemons' logs next to the failure screenshots; the summary line stays last.
  mkdir -p "$OUT" && cp "$T/main.log" "$OUT/daemon-main.log" && cp "$T/auth.log" "$OUT/daemon-auth.log" && cp "$T/replica.log" "$OUT/daemon-replica.log"
  if [ $rc -ne 1 ]; then
    echo "daemon logs: $OUT/daemon-main.log, $OUT/daemon-auth.log"
    echo "FAIL e2e.mjs exited with status $rc (124: timed out)"
    echo "browser: 0 passed, 1 failed"
  fi
fi
[ $rc -eq 0 ]
