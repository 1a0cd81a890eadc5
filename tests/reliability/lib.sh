# Shared helpers for tests/system/test_faults.sh, tests/system/test_load.sh and
# tests/system/test_valgrind.sh. Source it; it defines:
#   BIN DATA ROOT RL_TMP         paths (MNISTD_BIN / MNISTD_DATA override)
#   ok / bad / check / info      counters "pass" and "fail", one line per failure
#   free_port                    prints a free loopback TCP port
#   dstart STATE LOG PORT ARGS.. starts `mnistd serve` (sets DPID), waits for /healthz
#   dspawn STATE LOG PORT ARGS.. the same without waiting
#   dkill9 / dstop               SIGKILL / SIGTERM (bounded wait) the daemon in DPID
#   rl_track PID, rl_mount DIR   remembered for the EXIT trap (killed by PID / unmounted)
#   jget FILE EXPR               evaluates a python expression on the JSON in FILE (as d)
# Every wait is bounded; every process started is killed by PID on exit.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$(realpath "${MNISTD_BIN:-$ROOT/build/mnistd}")
DATA=$(realpath "${MNISTD_DATA:-$ROOT/data}")
RL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/mnistd-rel.XXXXXX")
RL_PIDS=()
RL_MOUNTS=()
DPID=
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "  ok   $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL $*"; }
info() { echo "  ...  $*"; }
check() { # name, then a command that must succeed (its output is hidden)
  local name=$1; shift
  if "$@" >"$RL_TMP/check.out" 2>&1; then ok "$name"; else bad "$name: $(tail -c 300 "$RL_TMP/check.out" | tr '\n' ' ')"; fi
}

rl_track() { RL_PIDS+=("$1"); }
rl_mount() { RL_MOUNTS+=("$1"); }

rl_cleanup() {
  local p m
  for p in "${RL_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; fi
  done
  for m in "${RL_MOUNTS[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; fi
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $RL_TMP"; else rm -rf "$RL_TMP"; fi
}
trap rl_cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# dstart STATE LOG PORT [extra serve flags...]: starts the daemon in the
# background (stdout+stderr appended to LOG), sets DPID, and waits up to
# DSTART_WAIT seconds (default 20) for /healthz. Returns 1 if it never answered.
dspawn() { # the same without waiting
  local state=$1 log=$2 port=$3; shift 3
  "${DWRAP[@]}" "$BIN" serve --listen "127.0.0.1:$port" --state-dir "$state" --data-dir "$DATA" \
    --no-bootstrap --train-threads 2 "$@" >>"$log" 2>&1 &
  DPID=$!
  rl_track "$DPID"
}
dstart() {
  local log=$2 port=$3
  dspawn "$@"
  local i n=$(( ${DSTART_WAIT:-20} * 20 ))
  for ((i = 0; i < n; i++)); do
    curl -sf --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
  done
  echo "daemon did not start:"; tail -5 "$log"; return 1
}
DWRAP=()

dkill9() {
  [ -n "$DPID" ] || return 0
  kill -9 "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; DPID=
}

# dstop [SECONDS]: SIGTERM, wait up to SECONDS (default 15), then SIGKILL.
# Sets DRC to the exit status (137 if it had to be killed). Not in a
# subshell: only this shell can reap its child.
DRC=
dstop() {
  DRC=0
  [ -n "$DPID" ] || return 0
  local i n=$(( ${1:-15} * 10 ))
  kill -TERM "$DPID" 2>/dev/null
  for ((i = 0; i < n; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$DPID" 2>/dev/null && kill -9 "$DPID" 2>/dev/null
  wait "$DPID" 2>/dev/null; DRC=$?
  DPID=
}

jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# job_wait B ID REGEX SECONDS: polls GET /v1/jobs/ID until its state matches.
job_wait() {
  local b=$1 id=$2 want=$3 secs=$4 s= i
  for ((i = 0; i < secs * 5; i++)); do
    s=$(curl -s --max-time 2 "$b/v1/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)
    [[ "$s" =~ ^($want)$ ]] && return 0
    sleep 0.2
  done
  echo "job $id is '$s' after ${secs}s, wanted $want"; return 1
}

# post_job B JSON [curl args]: prints the new job id (empty on failure).
post_job() {
  local b=$1 body=$2; shift 2
  curl -s --max-time 10 -XPOST -H 'Content-Type: application/json' "$@" -d "$body" "$b/v1/jobs" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null
}

# The first test digit (a 7) as 784 raw bytes.
digit_file() {
  local out=$1
  head -c 800 "$DATA/mnist/t10k-images-idx3-ubyte" | tail -c 784 >"$out"
}

db_ok() { # DB: PRAGMA integrity_check through a read-only connection
  [ "$(sqlite3 -readonly "$1" 'PRAGMA integrity_check' 2>&1)" = ok ]
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
