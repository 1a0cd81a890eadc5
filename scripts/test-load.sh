#!/usr/bin/env bash
# Load and connection-exhaustion test of the real daemon (loopback only):
#   1. For SECONDS (default 60; CI uses 15) at once: a training job running,
#      200 SSE clients reading its /events, and wrk -t2 -c32 --latency
#      POSTing a real digit to /v1/predict. Checks: no non-2xx responses and
#      no socket errors, RSS growth < 5% from second 10 to the last 10
#      seconds (VmRSS sampled every second), every SSE client got events and
#      its `end` (the job is cancelled after wrk if it has not finished).
#   2. 2,000 idle connections (nothing / a partial request line / headers
#      without the blank line) against a daemon with --conn-timeout 5:
#      fresh GET /healthz answers in < 1 s while they are open, and the
#      server closes all of them within timeout + 5 s; its descriptors go
#      back to where they were.
# Prints the numbers and "load: N passed, N failed"; exit 1 on failure.
#   scripts/test-load.sh [SECONDS]    (KEEP=1 keeps the temporary directory)
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=../tests/reliability/lib.sh
. tests/reliability/lib.sh

DUR=${1:-60}
[[ "$DUR" =~ ^[0-9]+$ ]] && [ "$DUR" -ge 5 ] && [ "$DUR" -le 3600 ] || { echo "usage: $0 [SECONDS 5..3600]"; exit 2; }
SSE=${LOAD_SSE_CLIENTS:-200}
IDLE=${LOAD_IDLE_CONNS:-2000}
CT=5 # --conn-timeout for part 2
for t in wrk curl python3; do command -v $t >/dev/null || { echo "load: $t is missing"; exit 1; }; done
[ -x "$BIN" ] || { echo "load: $BIN is missing (run make)"; exit 1; }
# Descriptors: 2,000 sockets here, and as many in the daemon (which raises
# its own soft limit to the hard one).
want=$((IDLE + SSE + 512))
[ "$(ulimit -n)" -lt "$want" ] && { ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }
info "ulimit -n $(ulimit -n) (hard $(ulimit -Hn))"
[ "$(ulimit -n)" -ge "$want" ] || { echo "load: need ulimit -n >= $want"; exit 1; }
T0=$(now)
D=$RL_TMP; S=$D/state; L=$D/daemon.log
digit_file "$D/digit.raw"
P=$(free_port); B=http://127.0.0.1:$P

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

echo "== 1. ${DUR}s: training + $SSE SSE clients + wrk on /v1/predict"
# All load comes from 127.0.0.1 (wrk, 200 streams, 2,000 idle sockets):
# the per-address limit (default 128) is lifted so the totals are tested.
dstart "$S" "$L" "$P" --per-ip-conn-limit 0 || { bad "daemon starts"; echo "load: $pass passed, $fail failed"; exit 1; }
j=$(post_job "$B" '{"epochs":1,"train_limit":5000,"test_limit":1000,"activate":"always"}')
job_wait "$B" "$j" succeeded 180 >/dev/null
check "a model is trained and active" bash -c "curl -sf '$B/readyz' | grep -q '\"model\":'"
# A job long enough to outlast the run; cancelled afterwards if need be.
K=$(post_job "$B" '{"epochs":1000,"train_limit":6000,"test_limit":500,"activate":"never"}')
job_wait "$B" "$K" running 60 >/dev/null
for ((i = 0; i < 600; i++)); do  # the data set is loaded once training shows progress
  curl -s "$B/v1/jobs/$K" | grep -q '"batch":[1-9]' && break; sleep 0.1
done
info "job $K is training; daemon RSS $(rss_kb "$DPID") kB, $(fds "$DPID") descriptors"

python3 tests/reliability/sse_clients.py --port "$P" --job "$K" --clients "$SSE" \
  --max-seconds $((DUR + 120)) --ready "$D/sse.ready" --out "$D/sse.json" &
SSEPID=$!; rl_track "$SSEPID"
for ((i = 0; i < 400; i++)); do [ -s "$D/sse.ready" ] && break; sleep 0.1; done
info "SSE clients connected: $(cat "$D/sse.ready" 2>/dev/null || echo none) (count, seconds)"
check "$SSE SSE clients connected before the load starts" test "$(cut -d' ' -f1 "$D/sse.ready" 2>/dev/null)" = "$SSE"

# VmRSS every second from the start of wrk, bounded.
( for ((s = 0; s <= DUR + 5; s++)); do echo "$s $(rss_kb "$DPID")"; sleep 1; done ) >"$D/rss.txt" &
RSSPID=$!; rl_track "$RSSPID"
MNISTD_DIGIT=$D/digit.raw timeout $((DUR + 60)) wrk -t2 -c32 -d"${DUR}s" --latency -s bench/predict.lua \
  "$B/v1/predict" >"$D/wrk.txt" 2>&1
wrc=$?
kill "$RSSPID" 2>/dev/null; wait "$RSSPID" 2>/dev/null
sed 's/^/  wrk: /' "$D/wrk.txt"
check "wrk ran (exit 0)" test "$wrc" = 0
python3 - "$D/wrk.txt" >"$D/wrk.env" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def num(p, d="0"):
    m = re.search(p, t); return m.group(1) if m else d
print("REQS=%s" % num(r"(\d+) requests in"))
print("RPS=%s" % num(r"Requests/sec:\s+([\d.]+)"))
print("NON2XX=%s" % num(r"Non-2xx or 3xx responses: (\d+)"))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print("SOCKERR=%d" % (sum(map(int, m.groups())) if m else 0))
for q in ("50", "90", "99"):
    print("P%s=%s" % (q, num(r"\s%s%%\s+([\d.]+\w+)" % q, "?")))
PY
. "$D/wrk.env"
info "wrk: $REQS requests, $RPS req/s, latency p50 $P50 p90 $P90 p99 $P99, non-2xx $NON2XX, socket errors $SOCKERR"
check "wrk: requests were made" test "$REQS" -gt 0
check "wrk: zero non-2xx responses" test "$NON2XX" = 0
check "wrk: zero socket errors (connect/read/write/timeout)" test "$SOCKERR" = 0

# RSS: second 10 against the last 10 seconds (a third of the run if shorter).
python3 - "$D/rss.txt" "$DUR" >"$D/rss.env" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
s = {int(a): int(b) for a, b in (r for r in rows if len(r) == 2)}
dur = int(sys.argv[2]); w = min(10, max(1, dur // 3))
base = s.get(w) or s[min(s, key=lambda k: abs(k - w))]
tail = [v for k, v in s.items() if dur - w <= k <= dur]
end = max(tail)
print("RSS_BASE=%d RSS_END=%d RSS_MAX=%d RSS_GROWTH=%.2f RSS_W=%d RSS_N=%d" % (
    base, end, max(s.values()), 100.0 * (end - base) / base, w, len(s)))
PY
. "$D/rss.env"
info "RSS: ${RSS_BASE} kB at second $RSS_W, ${RSS_END} kB max over the last $RSS_W s, peak ${RSS_MAX} kB ($RSS_N samples): growth ${RSS_GROWTH}%"
check "RSS growth < 5% (second $RSS_W -> last $RSS_W s): ${RSS_GROWTH}%" python3 -c "assert $RSS_GROWTH < 5"

curl -s "$B/v1/jobs/$K" >"$D/k.json"
EPOCHS_DONE=$(jget "$D/k.json" 'len(d["metrics"])')
info "job $K: $EPOCHS_DONE epochs done during the run, state $(jget "$D/k.json" 'd["state"]')"
check "training made progress under load (>= 1 epoch)" test "$EPOCHS_DONE" -ge 1
if [ "$(jget "$D/k.json" 'd["state"]')" = running ]; then
  curl -s -XPOST "$B/v1/jobs/$K/cancel" >/dev/null
  job_wait "$B" "$K" cancelled 60 >/dev/null
fi
for ((i = 0; i < 600; i++)); do kill -0 "$SSEPID" 2>/dev/null || break; sleep 0.1; done
kill -9 "$SSEPID" 2>/dev/null; wait "$SSEPID" 2>/dev/null
if [ -s "$D/sse.json" ]; then
  info "SSE: $(cat "$D/sse.json")"
  check "SSE: all $SSE answered 200" test "$(jget "$D/sse.json" 'd["status_200"]')" = "$SSE"
  check "SSE: all $SSE received epoch and progress events" python3 -c "
import json; d = json.load(open('$D/sse.json')); n = d['clients']
assert d['with_epoch_events'] == n and d['per_type_min'].get('progress', 0) > 0, d"
  check "SSE: event ids strictly increasing for all" test "$(jget "$D/sse.json" 'd["ids_increasing"]')" = "$SSE"
  check "SSE: all $SSE saw 'end' and the stream closed after it" python3 -c "
import json; d = json.load(open('$D/sse.json')); assert d['saw_end'] == d['closed_after_end'] == d['clients'] and d['n_errors'] == 0, d"
else
  bad "SSE: no result from the clients"
fi
check "the daemon still answers /healthz" curl -sf --max-time 2 "$B/healthz"
dstop 20
check "SIGTERM after the load: exit 0" test "$DRC" = 0

echo "== 2. $IDLE idle connections, --conn-timeout $CT"
dstart "$S" "$L" "$P" --per-ip-conn-limit 0 --conn-timeout "$CT" || { bad "daemon restarts"; echo "load: $pass passed, $fail failed"; exit 1; }
sleep 0.5
FD0=$(fds "$DPID"); RSS0=$(rss_kb "$DPID")
timeout 120 python3 tests/reliability/slowloris.py --port "$P" --conns "$IDLE" --timeout "$CT" --grace 5 \
  --probes 5 --trickle 20 --ready "$D/slow.ready" --out "$D/slow.json" &
SLPID=$!; rl_track "$SLPID"
# Descriptors in the daemon while they are open.
for ((i = 0; i < 300; i++)); do [ -s "$D/slow.ready" ] && break; sleep 0.1; done
sleep 0.3; FD1=$(fds "$DPID"); RSS1=$(rss_kb "$DPID")
wait "$SLPID"; src=$?
sleep 1; FD2=$(fds "$DPID")
if [ "$src" = 0 ] && [ -s "$D/slow.json" ]; then
  info "idle: $(cat "$D/slow.json")"
  info "daemon descriptors: $FD0 before, $FD1 with the connections open, $FD2 after; RSS $RSS0 -> $RSS1 kB"
  check "idle: all $IDLE connections opened" test "$(jget "$D/slow.json" 'd["opened"] - d["trickle_requested"]')" = "$IDLE"
  check "idle: fresh GET /healthz 200 in < 1 s while they are open ($(jget "$D/slow.json" '[p["seconds"] for p in d["probes"]]'))" \
    python3 -c "import json; p = json.load(open('$D/slow.json'))['probes']; assert p and all(x['code'] == 200 and x['seconds'] < 1 for x in p), p"
  check "idle: the probes ran while the idle connections were still open" python3 -c "
import json; d = json.load(open('$D/slow.json')); assert d['probes_done_after_s'] < $CT - 0.5, d['probes_done_after_s']"
  n=$(jget "$D/slow.json" 'd["closed_within_deadline"]')
  info "idle: $n of $IDLE closed by the server within ${CT}+5 s (median after $(jget "$D/slow.json" 'd["close_after_s_median"]') s, max $(jget "$D/slow.json" 'd["close_after_s_max"]') s; $(jget "$D/slow.json" 'd["closed_before_timeout"]') before the timeout)"
  check "idle: all $IDLE closed by the server within timeout+5 s" test "$n" = "$IDLE"
  check "idle: none closed early (before the timeout)" test "$(jget "$D/slow.json" 'd["closed_before_timeout"]')" = 0
  check "idle: the daemon held them ($FD1 descriptors while open)" test "$FD1" -ge "$IDLE"
  check "idle: daemon descriptors back to <= before + 4 ($FD0 -> $FD2)" test "$FD2" -le $((FD0 + 4))
  tr=$(jget "$D/slow.json" 'd["trickle_still_open"]')
  info "note: $tr of 20 connections sending one byte every $(python3 -c "print($CT*0.6)") s were still open after $(jget "$D/slow.json" 'd["watch_seconds"]') s (the timeout is per idle period, not per request)"
else
  bad "idle: slowloris.py failed (exit $src)"
fi
check "the daemon still answers /healthz" curl -sf --max-time 2 "$B/healthz"
dstop 20
check "SIGTERM: exit 0" test "$DRC" = 0

echo "load: took $(elapsed "$T0" "$(now)")s"
echo "load: $pass passed, $fail failed"
[ "$fail" = 0 ]
