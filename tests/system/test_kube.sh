#!/usr/bin/env bash
# deploy/kubernetes/ under `podman kube play` (what `make test-kube` runs, as
# root): the trainer and two replicas from the same manifests, adapted only
# where podman needs it by tests/system/kube_to_podman.py (its header says what
# and why), with nginx from Debian where the replicas' Service would be.
#
# Checks: the manifests' structure (tests/system/check_kube_yaml.py); the image
# builds (like test-docker: the debian base is debootstrapped when absent);
# the trainer trains its bootstrap model and both replicas serve it; the
# hardened securityContext is in force (uid 10001, read-only root, no
# capabilities); three activations reach both replicas within 2 s while
# predictions through nginx all succeed; stopping the trainer leaves the
# replicas serving; a restarted trainer is followed again.
# Prints "kube: N passed, N failed"; exits 1 on any failure.
#
# Environment: IMAGE (default mnistd-kube-test; kept afterwards as the
# next build's cache), READY_TIMEOUT seconds for the bootstrap model (300).
set -uo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-mnistd-kube-test}
READY_TIMEOUT=${READY_TIMEOUT:-300}

pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
note() { echo "# $*"; }
t_start=$(date +%s)
finish() {
  echo "kube: $pass passed, $fail failed ($(( $(date +%s) - t_start ))s)"
  [ $fail -eq 0 ] && exit 0 || exit 1
}

tmp=$(mktemp -d /tmp/mnistd-kube.XXXXXX)
played=0
cleanup() {
  [ -f "$tmp/nginx.pid" ] && kill -TERM "$(cat "$tmp/nginx.pid")" 2>/dev/null
  for p in ${loadpids:-}; do kill "$p" 2>/dev/null; done
  if [ $played -eq 1 ]; then
    podman kube down "$tmp/play.yaml" >/dev/null 2>&1
    podman volume rm -f state-mnistd-trainer >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "test_kube: interrupted" >&2; exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "test_kube: run as root (rootful podman, debootstrap)" >&2; exit 2; }
missing=()
for p in podman runc catatonit debootstrap curl nginx python3-yaml; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  note "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { echo "test_kube: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi
# The same podman settings as test-docker (docs in /work/shared: runc, and
# rlimits no higher than the sandbox allows).
if [ -z "${CONTAINERS_CONF:-}" ]; then
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
    "$nofile" "$nofile" > "$tmp/containers.conf"
  export CONTAINERS_CONF=$tmp/containers.conf
fi

check "deploy/kubernetes passes the structure check" python3 tests/system/check_kube_yaml.py deploy/kubernetes

# --- image ---------------------------------------------------------------------------
scripts/make-base-image.sh >/dev/null || { bad "base image debian:bookworm-slim"; finish; }
build=(podman build --pull=never --format docker)
compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null &&
  build+=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
t0=$(date +%s)
if ! timeout 1800 "${build[@]}" -t "$IMAGE" . > "$tmp/build.log" 2>&1; then
  tail -n 30 "$tmp/build.log" | sed 's/^/#   /'; bad "podman build"; finish
fi
ok "podman build -t $IMAGE ($(( $(date +%s) - t0 ))s)"
podman image prune -f --filter "label=org.opencontainers.image.title=mnistd" >/dev/null 2>&1

# --- play -----------------------------------------------------------------------------
base=$(( 24000 + ($$ % 2000) * 4 ))
T=$base R0=$((base + 1)) R1=$((base + 2)) LB=$((base + 3))
TU=http://127.0.0.1:$T
python3 tests/system/kube_to_podman.py deploy/kubernetes "localhost/$IMAGE:latest" $T $R0 $R1 > "$tmp/play.yaml" ||
  { bad "kube_to_podman"; finish; }
podman volume rm -f state-mnistd-trainer >/dev/null 2>&1
if ! podman kube play "$tmp/play.yaml" > "$tmp/play.log" 2>&1; then
  sed 's/^/#   /' "$tmp/play.log"; bad "podman kube play"; finish
fi
played=1
ok "podman kube play: trainer and two replicas"
pods=$(podman pod ps --format '{{.Name}}' | grep -E '^mnistd-(trainer|replicas-[01])' | sort | tr '\n' ' ')
note "pods: $pods"
tpod=$(podman pod ps --format '{{.Name}}' | grep '^mnistd-trainer' | head -n1)
logs() { for p in $pods; do echo "# --- $p"; podman pod logs --tail 15 "$p" 2>&1 | sed 's/^/#   /'; done; }

wait_ready() { # url seconds
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1/readyz")" = 200 ] && return 0
    sleep 1
  done
  return 1
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)" 2>/dev/null; }
active_of() { curl -s --max-time 2 "$1/v1/models/active" | field "['id']"; }

t0=$(date +%s)
wait_ready $TU "$READY_TIMEOUT"; rc=$?
check "the trainer has its bootstrap model ($(( $(date +%s) - t0 ))s)" test $rc -eq 0
[ $rc -eq 0 ] || { logs; finish; }
m1=$(active_of $TU)
for r in $R0 $R1; do wait_ready http://127.0.0.1:$r 30; done
check "replica 0 serves the trainer's model $m1" test "$(active_of http://127.0.0.1:$R0)" = "$m1"
check "replica 1 serves the trainer's model $m1" test "$(active_of http://127.0.0.1:$R1)" = "$m1"

# The hardening of the manifests, as podman applied it.
rc0=$(podman ps --format '{{.Names}}' | grep -E "^mnistd-replicas-0.*-mnistd$" | head -n1)
check "a replica runs as uid 10001" test "$(podman exec "$rc0" id -u 2>/dev/null)" = 10001
check "  ... on a read-only root filesystem" \
  sh -c "! podman exec '$rc0' sh -c 'touch /usr/x' 2>/dev/null && [ \"\$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' '$rc0')\" = true ]"
check "  ... with no capabilities" \
  sh -c "podman exec '$rc0' grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/1/status"

# --- activations under load through nginx -----------------------------------------
tests/system/fleet_nginx.sh "$tmp" $LB $R0 $R1 2>>"$tmp/nginx-error.log"
check "nginx in front of the replicas" sh -c "curl -sf http://127.0.0.1:$LB/readyz >/dev/null"
job() {
  curl -s -XPOST -H 'Content-Type: application/json' \
    -d "{\"epochs\":1,\"train_limit\":3000,\"test_limit\":1000,\"activate\":\"never\",\"seed\":$1}" \
    $TU/v1/jobs | field "['id']"
}
wait_job() {
  for _ in $(seq 1 900); do
    local s; s=$(curl -s $TU/v1/jobs/$1 | field "['state']")
    case "$s" in
      succeeded) curl -s $TU/v1/jobs/$1 | field "['model_id']"; return 0 ;;
      failed|cancelled) return 1 ;;
    esac
    sleep 0.2
  done
  return 1
}
j2=$(job 2); j3=$(job 3); m2=$(wait_job "$j2"); m3=$(wait_job "$j3")
check "two models trained on the trainer ($m2, $m3)" test -n "$m2" -a -n "$m3"
curl -s "$TU/v1/samples/random?index=7" | python3 -c \
  'import json,sys; print(json.dumps({"image": json.load(sys.stdin)["pixels"]}))' > "$tmp/img.json"
loadpids=""
for i in 1 2; do python3 tests/system/fleet_load.py $LB "$tmp/img.json" "$tmp/stop" "$tmp/load$i.json" & loadpids="$loadpids $!"; done
sleep 0.5
for m in $m2 $m3 $m1; do
  t=$(python3 tests/system/fleet_activate.py "$TU" "$m" "" $R0 $R1)
  note "model $m reached both replicas in ${t%% *}s (each: ${t#* })"
  check "activation of model $m reaches both replicas within 2 s" python3 -c "import sys; sys.exit(0 if ${t%% *} < 2 else 1)"
  sleep 0.7
done
touch "$tmp/stop"; wait $loadpids; loadpids=""
for i in 1 2; do
  note "load $i through nginx: $(cat "$tmp/load$i.json")"
  check "load $i: no failed prediction during three activations" \
    python3 -c "import json; d=json.load(open('$tmp/load$i.json')); exit(0 if d['errors']==0 and d['ok']>50 else 1)"
done

# --- the trainer goes away and comes back -----------------------------------------
podman pod stop -t 30 "$tpod" >/dev/null 2>&1
sleep 2
for r in $R0 $R1; do
  check "replica :$r still ready with the trainer stopped" \
    test "$(curl -s http://127.0.0.1:$r/readyz | field "['model']")" = "$m1"
done
codes=$(for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' -d @"$tmp/img.json" http://127.0.0.1:$LB/v1/predict; done | sort | uniq -c | tr -s ' ')
check "20 predictions through nginx with the trainer stopped all succeed ($codes)" test "$codes" = " 20 200"
podman pod start "$tpod" >/dev/null 2>&1
wait_ready $TU 60
check "the restarted trainer kept its models (volume)" test "$(active_of $TU)" = "$m1"
t=$(python3 tests/system/fleet_activate.py "$TU" "$m2" "" $R0 $R1)
check "after the restart both replicas follow it again (${t%% *}s)" python3 -c "import sys; sys.exit(0 if ${t%% *} < 5 else 1)"
[ $fail -gt 0 ] && logs
finish
