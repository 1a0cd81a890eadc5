#!/usr/bin/env bash
# A fleet on loopback, no containers (what `make test-replicas` and CI run):
# one primary (with an API token), two read-only replicas following it
# (--follow, --follow-token-file) and nginx from Debian in front of the
# replicas as the load balancer (the stand-in for a Kubernetes Service).
#
# Checks: replicas refuse changes (403 naming the primary) and are not ready
# before a model exists; a trained model reaches both; each of three
# activations on the primary reaches both replicas within 2 s (the figures
# are printed); predictions sent through nginx during the activations all
# succeed; the daemon-wide event stream's ids and Last-Event-ID; a replica
# refuses a model whose SHA-256 does not match; stopping the primary leaves
# the replicas serving (one log line, not one per retry; mnistd_primary_up 0);
# a restarted primary is followed again. Prints "replicas: N passed, N
# failed"; exits 1 on any failure.
#
# Environment: MNISTD_BIN (default build/mnistd), MNISTD_DATA (default data).
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${MNISTD_BIN:-build/mnistd}
DATA=${MNISTD_DATA:-data}
[ -x "$BIN" ] || { echo "test_replicas: $BIN not built (make)" >&2; exit 2; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "test_replicas: nginx missing (make deps)" >&2; exit 2; }

pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
note() { echo "# $*"; }
t0=$(date +%s)

tmp=$(mktemp -d /tmp/mnistd-replicas.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  [ -f "$tmp/nginx.pid" ] && kill -TERM "$(cat "$tmp/nginx.pid")" 2>/dev/null
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  sleep 0.2
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four free ports in a row from a per-run base.
base=$(( 20000 + ($$ % 4000) * 4 ))
P=$base R1=$((base + 1)) R2=$((base + 2)) LB=$((base + 3))
PU=http://127.0.0.1:$P
echo "s3cret-$$" > "$tmp/token"
auth=(-H "Authorization: Bearer s3cret-$$")
json=(-H 'Content-Type: application/json')

start_primary() {
  "$BIN" serve --listen 127.0.0.1:$P --state-dir "$tmp/primary" --data-dir "$DATA" \
    --no-bootstrap --api-token-file "$tmp/token" --train-threads 1 2>>"$tmp/primary.log" &
  PRIMARY=$!
  pids+=("$PRIMARY")
}
start_replica() { # port log
  "$BIN" serve --listen 127.0.0.1:$1 --follow "$PU" --follow-token-file "$tmp/token" \
    --data-dir "$DATA" 2>>"$2" &
  pids+=("$!")
}
wait_http() { # url: any answer within 10 s
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  return 1
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)" 2>/dev/null; }
active_of() { curl -s --max-time 2 "$1/v1/models/active" | field "['id']"; }
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 ~ "^"m {print $2; exit}'; }

# --- the Kubernetes manifests' structure (no cluster needed) ---------------------
check "deploy/kubernetes passes the structure check" \
  python3 tests/system/check_kube_yaml.py deploy/kubernetes
mut() { # name sed-expression file expected-message
  rm -rf "$tmp/k8s"; cp -r deploy/kubernetes "$tmp/k8s"; sed -i "$2" "$tmp/k8s/$3"
  MNISTD_ROOT=$PWD python3 tests/system/check_kube_yaml.py "$tmp/k8s" > "$tmp/k8s.out"
  check "the structure check catches $1" \
    sh -c "[ $? -ne 0 ] && grep -q '$4' '$tmp/k8s.out'"
}
mut "a readiness path the daemon lacks" 's|path: /readyz|path: /ready|' replicas.yaml "is not a GET route"
mut "a --follow URL that is not the trainer Service" 's|http://mnistd-trainer:8080|http://trainer:8080|' replicas.yaml "must name the trainer Service"
mut "a container port other than EXPOSE" 's|containerPort: 8080|containerPort: 9090|' trainer.yaml "Dockerfile EXPOSE"
mut "a writable root filesystem" '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' replicas.yaml "readOnlyRootFilesystem"
mut "a missing selector label" 's|matchLabels: {app.kubernetes.io/name: mnistd, app.kubernetes.io/component: trainer}|matchLabels: {app: other}|' trainer.yaml "matchLabels"

start_primary
start_replica $R1 "$tmp/r1.log"
start_replica $R2 "$tmp/r2.log"
check "primary and replicas listen" wait_http $PU/healthz
wait_http http://127.0.0.1:$R1/healthz; wait_http http://127.0.0.1:$R2/healthz

# --- a replica without a model; what it refuses --------------------------------------
code=$(curl -s -o "$tmp/b" -w '%{http_code}' http://127.0.0.1:$R1/readyz)
check "replica /readyz is 503 before the primary has a model" test "$code" = 503
check "  ... with a JSON error naming the primary" grep -q "replica of $PU" "$tmp/b"
code=$(curl -s -o "$tmp/b" -w '%{http_code}' -XPOST "${auth[@]}" "${json[@]}" -d '{"epochs":1}' \
  http://127.0.0.1:$R1/v1/jobs)
check "POST /v1/jobs on a replica is 403" test "$code" = 403
check "  ... and the error names the primary" \
  python3 -c "import json,sys; e=json.load(open('$tmp/b'))['error']; assert e['code']==403 and '$PU' in e['message']"
for r in "POST /v1/models/1/activate" "DELETE /v1/models/1" "POST /v1/jobs/1/cancel" "GET /v1/jobs" "GET /v1/models/1/file"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X "${r% *}" "${auth[@]}" "http://127.0.0.1:$R2${r#* }")
  check "$r on a replica is 403" test "$code" = 403
done

# --- nginx in front of the replicas ------------------------------------------------
tests/system/fleet_nginx.sh "$tmp" $LB $R1 $R2 2>>"$tmp/nginx-error.log"
check "nginx starts as the load balancer" wait_http http://127.0.0.1:$LB/healthz

# --- the first model ---------------------------------------------------------------
job() { # activate -> prints the job id
  curl -s -XPOST "${auth[@]}" "${json[@]}" \
    -d "{\"epochs\":1,\"train_limit\":3000,\"test_limit\":1000,\"activate\":\"$1\",\"seed\":$2}" \
    $PU/v1/jobs | field "['id']"
}
wait_job() { # id -> model id once succeeded
  for _ in $(seq 1 600); do
    local s; s=$(curl -s $PU/v1/jobs/$1 | field "['state']")
    case "$s" in
      succeeded) curl -s $PU/v1/jobs/$1 | field "['model_id']"; return 0 ;;
      failed|cancelled) return 1 ;;
    esac
    sleep 0.1
  done
  return 1
}
j1=$(job always 1); m1=$(wait_job "$j1")
check "a job on the primary gives model $m1" test -n "$m1"
for r in $R1 $R2; do
  for _ in $(seq 1 40); do [ "$(active_of http://127.0.0.1:$r)" = "$m1" ] && break; sleep 0.05; done
done
check "replica 1 serves model $m1" test "$(active_of http://127.0.0.1:$R1)" = "$m1"
check "replica 2 serves model $m1" test "$(active_of http://127.0.0.1:$R2)" = "$m1"
check "replica /readyz names model $m1" \
  test "$(curl -s http://127.0.0.1:$R1/readyz | field "['model']")" = "$m1"
curl -s "$PU/v1/samples/random?index=7" | python3 -c \
  'import json,sys; print(json.dumps({"image": json.load(sys.stdin)["pixels"]}))' > "$tmp/img.json"
pr=$(curl -s "${json[@]}" -d @"$tmp/img.json" http://127.0.0.1:$LB/v1/predict)
check "a prediction through nginx names model $m1" \
  test "$(echo "$pr" | field "['model']")" = "$m1"
pp=$(curl -s "${json[@]}" -d @"$tmp/img.json" $PU/v1/predict)
check "  ... with the primary's probabilities, digit for digit" \
  test "$(echo "$pr" | field "['predictions'][0]['probabilities']")" = \
       "$(echo "$pp" | field "['predictions'][0]['probabilities']")"
et_p=$(curl -s -D - -o /dev/null $PU/v1/models/active | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
et_r=$(curl -s -D - -o /dev/null http://127.0.0.1:$R1/v1/models/active | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
check "GET /v1/models/active has the same ETag on primary and replica ($et_p)" \
  test -n "$et_p" -a "$et_p" = "$et_r"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $et_p" http://127.0.0.1:$R2/v1/models/active)
check "  ... and If-None-Match gives 304" test "$code" = 304
sum=$(curl -s -D "$tmp/h" -o "$tmp/model.bin" $PU/v1/models/$m1/file; tr -d '\r' < "$tmp/h" | awk 'tolower($1)=="x-checksum-sha256:"{print $2}')
check "the model file carries its SHA-256 (X-Checksum-Sha256)" \
  test "$sum" = "$(sha256sum "$tmp/model.bin" | cut -d' ' -f1)"

# --- three more models, activated in turn under load ------------------------------
j2=$(job never 2); j3=$(job never 3)
m2=$(wait_job "$j2"); m3=$(wait_job "$j3")
check "two more models trained without activation ($m2, $m3)" test -n "$m2" -a -n "$m3"
for i in 1 2; do python3 tests/system/fleet_load.py $LB "$tmp/img.json" "$tmp/stop" "$tmp/load$i.json" & pids+=("$!"); lp[$i]=$!; done
sleep 0.5
worst=0
for m in $m2 $m3 $m1; do
  # Time from the activation's answer on the primary to both replicas
  # answering GET /v1/models/active with the new id (polled every 10 ms).
  t=$(python3 tests/system/fleet_activate.py "$PU" "$m" "s3cret-$$" $R1 $R2)
  all=${t%% *}
  note "model $m reached both replicas in ${all}s (each: ${t#* })"
  check "activation of model $m reaches both replicas within 2 s (${all}s)" \
    python3 -c "import sys; sys.exit(0 if $all < 2 else 1)"
  worst=$(python3 -c "print(max($worst, $all))")
  sleep 0.7
done
note "slowest of three activations to reach every replica: ${worst}s"
touch "$tmp/stop"; wait "${lp[1]}" "${lp[2]}"
for i in 1 2; do
  r=$(cat "$tmp/load$i.json")
  note "load $i through nginx: $r"
  check "load $i: no failed prediction during three activations" \
    python3 -c "import json; d=json.load(open('$tmp/load$i.json')); exit(0 if d['errors']==0 and d['ok']>50 else 1)"
done
check "  ... and the answers came from all three models" python3 -c "
import json; s=set()
for i in (1,2): s |= set(json.load(open('$tmp/load%d.json'%i))['models'])
exit(0 if {'$m1','$m2','$m3'} <= s else 1)"

# --- the event stream ------------------------------------------------------------
timeout 2 curl -sN $PU/v1/events > "$tmp/ev1"
check "GET /v1/events starts with hello naming the active model" \
  grep -q "^data: {\"model\":$m1}" "$tmp/ev1"
hid=$(awk '/^id:/{print $2; exit}' "$tmp/ev1")
( sleep 0.5; curl -s -XPOST "${auth[@]}" $PU/v1/models/$m2/activate >/dev/null ) &
timeout 2 curl -sN -H "Last-Event-ID: $hid" $PU/v1/events > "$tmp/ev2"
check "an activation shows as model.activated with a larger id" python3 - "$tmp/ev2" "$hid" "$m2" <<'PY'
import sys
lines = open(sys.argv[1]).read().split('\n\n'); hid = int(sys.argv[2])
evs = [dict(l.split(': ', 1) for l in b.split('\n') if ': ' in l) for b in lines if b.strip()]
act = [e for e in evs if e.get('event') == 'model.activated' and e.get('data') == '{"model":%s}' % sys.argv[3]]
sys.exit(0 if act and int(act[0]['id']) > hid else 1)
PY
timeout 1 curl -sN -H "Last-Event-ID: 5" $PU/v1/events > "$tmp/ev3"
check "a Last-Event-ID the primary no longer has gets a sync event" grep -q "^event: sync" "$tmp/ev3"
timeout 3 curl -sN $PU/v1/events > "$tmp/ev5" &
evp=$!; sleep 0.3
j4=$(job never 4); wait $evp
check "a job's state changes show on /v1/events (job $j4: queued, running)" \
  sh -c "grep -q '\"job\":$j4,\"state\":\"queued\"' '$tmp/ev5' && grep -q '\"job\":$j4,\"state\":\"running\"' '$tmp/ev5'"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Last-Event-ID: -1" $PU/v1/events)
check "a bad Last-Event-ID is 400" test "$code" = 400

# --- a bad checksum is refused ---------------------------------------------------
cat > "$tmp/fake.py" <<'PY'
import http.server, json, os, sys
blob = open(sys.argv[2], 'rb').read()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == '/v1/models/active':
            b = json.dumps({'id': 77, 'dataset': 'mnist'}).encode()
            self.send_response(200); self.send_header('ETag', '"model-77"')
        elif self.path == '/v1/models/77/file':
            b = blob; self.send_response(200); self.send_header('X-Checksum-Sha256', '0' * 64)
        else:
            b = b'{}'; self.send_response(404)
        self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
# The kernel picks the port (a fixed one collided, now and then, with the
# local port of one of the many connections the load above opened).
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
open(sys.argv[1] + '.tmp', 'w').write(str(srv.server_address[1]))
os.rename(sys.argv[1] + '.tmp', sys.argv[1])
srv.serve_forever()
PY
python3 "$tmp/fake.py" "$tmp/fake.port" "$tmp/model.bin" & pids+=("$!"); fake=$!
for _ in $(seq 1 100); do [ -s "$tmp/fake.port" ] && break; sleep 0.1; done
FP=$(cat "$tmp/fake.port")
RP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
wait_http http://127.0.0.1:$FP/
"$BIN" serve --listen 127.0.0.1:$RP --follow http://127.0.0.1:$FP 2>"$tmp/r3.log" &
pids+=("$!"); r3=$!
for _ in $(seq 1 50); do grep -q "SHA-256" "$tmp/r3.log" && break; sleep 0.1; done
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$RP/readyz)
check "a replica refuses a model whose SHA-256 does not match (still 503)" test "$code" = 503
check "  ... and says why in its log" grep -q "SHA-256" "$tmp/r3.log"
kill -TERM $r3 $fake 2>/dev/null; wait $r3 $fake 2>/dev/null

# --- the primary goes away ---------------------------------------------------------
n0=$(grep -c "is unreachable" "$tmp/r1.log")
kill -TERM $PRIMARY; wait $PRIMARY 2>/dev/null
sleep 3
for r in $R1 $R2; do
  check "replica :$r is still ready with the primary down" \
    test "$(curl -s http://127.0.0.1:$r/readyz | field "['model']")" = "$m2"
  check "  ... and reports mnistd_primary_up 0" test "$(metric http://127.0.0.1:$r mnistd_primary_up)" = 0
done
codes=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{http_code}\n' "${json[@]}" -d @"$tmp/img.json" http://127.0.0.1:$LB/v1/predict; done | sort | uniq -c | tr -s ' ')
check "20 predictions through nginx with the primary down all succeed ($codes)" test "$codes" = " 20 200"
n=$(( $(grep -c "is unreachable" "$tmp/r1.log") - n0 ))
check "the replica logged the outage once, not per retry ($n line over 3 s)" test "$n" = 1

# --- it comes back ---------------------------------------------------------------
start_primary
wait_http $PU/healthz
curl -s -XPOST "${auth[@]}" $PU/v1/models/$m3/activate >/dev/null
for _ in $(seq 1 100); do
  [ "$(active_of http://127.0.0.1:$R1)" = "$m3" ] && [ "$(active_of http://127.0.0.1:$R2)" = "$m3" ] && break
  sleep 0.1
done
check "after a restart of the primary both replicas follow it again (model $m3)" \
  test "$(active_of http://127.0.0.1:$R1)" = "$m3" -a "$(active_of http://127.0.0.1:$R2)" = "$m3"
check "  ... mnistd_primary_up is 1 again" test "$(metric http://127.0.0.1:$R1 mnistd_primary_up)" = 1
timeout 1 curl -sN $PU/v1/events > "$tmp/ev4"
hid2=$(awk '/^id:/{print $2; exit}' "$tmp/ev4")
check "event ids of the new run are above the old run's ($hid2 > $hid)" test "$hid2" -gt "$hid"

echo "replicas: $pass passed, $fail failed ($(( $(date +%s) - t0 ))s)"
[ $fail -eq 0 ]
