#!/usr/bin/env bash
# End-to-end test of the Dockerfile with podman (what `make test-docker` runs,
# as root). No Docker engine or registry is needed: the debian:bookworm-slim
# base is debootstrapped locally when absent (scripts/make-base-image.sh).
#
# Builds the image, runs it with a named volume on a loopback port, waits for
# the bootstrap model, predicts a real MNIST test digit, trains a 1-epoch job
# while following its event stream, restarts the container and checks that
# jobs, models and the active model survived; checks the health check, the
# non-root user, a graceful SIGTERM stop, a read-only hardened run and the
# image size. Prints "docker: N passed, N failed"; exits 1 on any failure.
#
# Environment: IMAGE (tag, default mnistd), KEEP_IMAGE=0 to remove the image
# and its build cache afterwards (default: kept, the image is the product and
# the cache makes the next build incremental), MAX_IMAGE_MB (default 230),
# READY_TIMEOUT seconds (default 180), CACHE_IMAGE (tag of the build stage,
# default mnistd-build-cache).
# Always removed: the test containers and volumes, and untagged images left by
# earlier builds of this Dockerfile. Kept: the debian:bookworm-slim base.
set -uo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-mnistd}
KEEP_IMAGE=${KEEP_IMAGE:-1}
# 230: the runtime libraries of oneDNN, protobuf-c (ONNX), libarchive + nettle (data set
# upload) took the image from 175 to 207 MB this release.
MAX_IMAGE_MB=${MAX_IMAGE_MB:-230}
CACHE_IMAGE=${CACHE_IMAGE:-mnistd-build-cache}
READY_TIMEOUT=${READY_TIMEOUT:-180}
NAME=mnistd-test-$$
VOL=mnistd-test-$$-state
NAME2=mnistd-test-$$-ro
VOL2=mnistd-test-$$-ro-state

pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
note() { echo "# $*"; }
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start ))s; }
finish() {
  echo "docker: $pass passed, $fail failed ($(elapsed))"
  [ $fail -eq 0 ] && exit 0 || exit 1
}

tmp=$(mktemp -d /tmp/mnistd-docker.XXXXXX)
cleanup() {
  if command -v podman >/dev/null; then
    for c in "$NAME" "$NAME2"; do
      podman container exists "$c" 2>/dev/null && podman rm -f -t 0 "$c" >/dev/null 2>&1
    done
    for v in "$VOL" "$VOL2"; do
      podman volume exists "$v" 2>/dev/null && podman volume rm -f "$v" >/dev/null 2>&1
    done
    if [ "$KEEP_IMAGE" = 0 ]; then
      for i in "$IMAGE" "$CACHE_IMAGE"; do
        podman image exists "$i" 2>/dev/null && podman rmi -f "$i" >/dev/null 2>&1
      done
    fi
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "test-docker: interrupted" >&2; exit 130' INT TERM

# --- prerequisites ----------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || { echo "test-docker: run as root (rootful podman, debootstrap)" >&2; exit 2; }
missing=()
for p in podman runc debootstrap curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  note "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { echo "test-docker: apt-get install ${missing[*]} failed" >&2; exit 1; }
fi
# crun rejects this machine's hybrid cgroups and podman's default rlimits
# exceed what the sandbox allows: runc, and limits no higher than ours.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  cat > "$tmp/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$tmp/containers.conf
fi
note "$(podman --version), $(runc --version | head -n1)"

# --- base image and build -----------------------------------------------------------
scripts/make-base-image.sh || { bad "base image debian:bookworm-slim"; finish; }
build=(podman build --pull=never --format docker)
# Extra CAs of this machine (a TLS-inspecting proxy in front of the npm
# registry) reach `npm` inside the build stage; see the Dockerfile.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  build+=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi
note "building: ${build[*]} -t $IMAGE ."
t0=$(date +%s)
# The build stage is tagged too: it is the layer cache of the next build, and
# older copies of both stages become untagged and can be pruned below.
timeout 1800 "${build[@]}" --target build -t "$CACHE_IMAGE" . > "$tmp/build.log" 2>&1 &&
  timeout 1800 "${build[@]}" -t "$IMAGE" . >> "$tmp/build.log" 2>&1
rc=$?
note "build took $(( $(date +%s) - t0 ))s"
if [ $rc -ne 0 ]; then
  tail -n 40 "$tmp/build.log" | sed 's/^/#   /'
  bad "podman build (exit $rc)"
  finish
fi
ok "podman build"
# Earlier builds of this Dockerfile, now untagged (each ~1 GB with the build
# stage); the label keeps this to our images.
for title in mnistd mnistd-build; do
  podman image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null 2>&1
done

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
size_mb=$(( size / 1000000 ))
check "image size ${size_mb} MB <= ${MAX_IMAGE_MB} MB" test "$size_mb" -le "$MAX_IMAGE_MB"
check "image keeps its HEALTHCHECK (docker format)" \
  sh -c "podman image inspect --format '{{.Config.Healthcheck.Test}}' '$IMAGE' | grep -q healthcheck"
check "image runs as user mnistd" \
  test "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = mnistd:mnistd

# --- run ------------------------------------------------------------------------------
podman volume create "$VOL" >/dev/null
if ! podman run -d --name "$NAME" -p 127.0.0.1::8080 -v "$VOL:/var/lib/mnistd" "$IMAGE" > /dev/null 2> "$tmp/run.err"; then
  sed 's/^/#   /' "$tmp/run.err"; bad "podman run"; finish
fi
hostport() { podman port "$NAME" 8080/tcp | head -n1 | sed 's/.*://'; }
PORT=$(hostport)
URL=http://127.0.0.1:$PORT
note "container $NAME on $URL"
# wait_http PATH SECONDS: until PATH answers 200.
wait_http() {
  local end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL$1")" = 200 ] && return 0
    [ "$(podman inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ] || return 1
    sleep 1
  done
  return 1
}
logs_on_fail() { [ $fail -gt 0 ] && podman logs --tail 25 "$NAME" 2>&1 | sed 's/^/#   /'; }

t0=$(date +%s)
check "/healthz 200" wait_http /healthz 60
wait_http /readyz "$READY_TIMEOUT"; rc=$?
check "/readyz 200 once the bootstrap model is trained ($(( $(date +%s) - t0 ))s)" test $rc -eq 0
[ $fail -gt 0 ] && { logs_on_fail; finish; }

# The first MNIST test image (label 7), from the host's data or the image's.
img=data/mnist/t10k-images-idx3-ubyte
if [ -f "$img" ]; then
  tail -c +17 "$img" | head -c 784 > "$tmp/digit.bin"
elif [ -f "$img.gz" ]; then
  zcat "$img.gz" | tail -c +17 | head -c 784 > "$tmp/digit.bin"
else
  podman exec "$NAME" sh -c 'zcat /usr/share/mnistd/data/mnist/t10k-images-idx3-ubyte.gz 2>/dev/null ||
    cat /usr/share/mnistd/data/mnist/t10k-images-idx3-ubyte' | tail -c +17 | head -c 784 > "$tmp/digit.bin"
fi
predict_label() {  # prints the top label of a POST /v1/predict with the digit
  curl -s --max-time 10 -H 'Content-Type: application/octet-stream' \
    --data-binary @"$tmp/digit.bin" "$URL/v1/predict" > "$tmp/predict.json"
  grep -o '"label":[0-9]*' "$tmp/predict.json" | head -n1 | cut -d: -f2
}
check "784-byte digit extracted" test "$(stat -c %s "$tmp/digit.bin")" -eq 784
got=$(predict_label)
check "POST /v1/predict (raw bytes) says 7 (got ${got:-nothing})" test "$got" = 7
{ printf '{"image":['; od -An -v -tu1 "$tmp/digit.bin" | tr -s ' \n' ',' | sed 's/^,//; s/,$//'; printf ']}'; } > "$tmp/digit.json"
got=$(curl -s --max-time 10 -H 'Content-Type: application/json' --data-binary @"$tmp/digit.json" "$URL/v1/predict" |
      grep -o '"label":[0-9]*' | head -n1 | cut -d: -f2)
check "POST /v1/predict (JSON) says 7 (got ${got:-nothing})" test "$got" = 7

# A 1-epoch job, followed through its event stream.
code=$(curl -s -o "$tmp/job.json" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
       -d '{"epochs":1,"train_limit":5000}' "$URL/v1/jobs")
JOB=$(grep -o '"id":[0-9]*' "$tmp/job.json" | head -n1 | cut -d: -f2)
check "POST /v1/jobs -> 202 with an id (got $code, id ${JOB:-none})" test "$code" = 202 -a -n "$JOB"
t0=$(date +%s)
curl -sN --max-time 240 "$URL/v1/jobs/$JOB/events" > "$tmp/events.txt" 2>/dev/null
check "event stream of job $JOB ends with 'event: end' ($(( $(date +%s) - t0 ))s, $(grep -c '^event:' "$tmp/events.txt") events)" \
  grep -qx 'event: end' "$tmp/events.txt"
check "job $JOB succeeded" grep -q '"state":"succeeded"' "$tmp/events.txt"
check "event stream carried epoch metrics" grep -qx 'event: epoch' "$tmp/events.txt"

ids() { curl -s --max-time 10 "$URL$1" | grep -o '"id":[0-9]*' | cut -d: -f2 | sort -n | tr '\n' ' '; }
jobs_before=$(ids /v1/jobs)
models_before=$(ids /v1/models)
active_before=$(curl -s --max-time 5 "$URL/readyz" | grep -o '"model":[0-9]*')
note "jobs: $jobs_before| models: $models_before| active $active_before"
check "GET /v1/jobs lists the bootstrap and the new job" test "$(echo $jobs_before | wc -w)" -ge 2
check "GET /v1/models lists at least 2 models" test "$(echo $models_before | wc -w)" -ge 2

# --- health check, user ---------------------------------------------------------------------
check "podman healthcheck run" sh -c "podman healthcheck run '$NAME' >/dev/null 2>&1"
health=$(podman inspect --format '{{.State.Health.Status}}' "$NAME" 2>/dev/null ||
         podman inspect --format '{{.State.Healthcheck.Status}}' "$NAME" 2>/dev/null)
check "health status healthy (got ${health:-?})" test "$health" = healthy
uid=$(podman exec "$NAME" id -u 2>/dev/null)
check "podman exec id -u is not 0 (got ${uid:-?})" test -n "$uid" -a "$uid" != 0
pid1uid=$(podman exec "$NAME" sh -c "awk '/^Uid:/ { print \$2 }' /proc/1/status" 2>/dev/null)
check "the daemon (PID 1) runs as uid 10001 (got ${pid1uid:-?})" test "$pid1uid" = 10001
check "no compiler in the runtime image" sh -c "! podman exec '$NAME' sh -c 'command -v cc gcc' >/dev/null 2>&1"
check "state volume holds the database and models, owned by mnistd" \
  sh -c "podman exec '$NAME' sh -c 'test -n \"\$(find /var/lib/mnistd -mindepth 1 -maxdepth 2 -user mnistd)\" && test -z \"\$(find /var/lib/mnistd ! -user mnistd)\"'"

# --- restart ------------------------------------------------------------------------------------
t0=$(date +%s%N)
podman stop -t 10 "$NAME" >/dev/null 2>&1
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
check "SIGTERM stop: exit code 0 in ${ms} ms (< 10 s, no SIGKILL)" test "$code" = 0 -a "$ms" -lt 10000
podman start "$NAME" >/dev/null 2>&1
PORT=$(hostport); URL=http://127.0.0.1:$PORT
check "/readyz 200 again after restart" wait_http /readyz 60
active_after=$(curl -s --max-time 5 "$URL/readyz" | grep -o '"model":[0-9]*')
jobs_after=$(ids /v1/jobs)
models_after=$(ids /v1/models)
check "jobs survived the restart (same ids: $jobs_after)" test "$jobs_after" = "$jobs_before"
check "models survived the restart (same ids: $models_after)" test "$models_after" = "$models_before"
check "active model unchanged ($active_after), no new bootstrap" test "$active_after" = "$active_before"
got=$(predict_label)
check "predict after restart says 7 (got ${got:-nothing})" test "$got" = 7
logs_on_fail
podman logs "$NAME" > "$tmp/container.log" 2>&1
podman rm -f -t 10 "$NAME" >/dev/null 2>&1

# --- hardened run: read-only root, no capabilities -------------------------------------------
podman volume create "$VOL2" >/dev/null
if podman run -d --name "$NAME2" --read-only --cap-drop=ALL --security-opt=no-new-privileges \
     -v "$VOL2:/var/lib/mnistd" -e MNISTD_NO_BOOTSTRAP=1 "$IMAGE" >/dev/null 2>&1; then
  ro=0
  for _ in $(seq 30); do
    podman exec "$NAME2" mnistd healthcheck >/dev/null 2>&1 && { ro=1; break; }
    sleep 1
  done
  check "read-only root, --cap-drop=ALL, no-new-privileges: healthy" test $ro -eq 1
else
  bad "podman run --read-only --cap-drop=ALL"
fi

note "total $(elapsed)"
finish
