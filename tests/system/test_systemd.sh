#!/usr/bin/env bash
# Checks the systemd packaging (what `make test-systemd` runs, as root):
# installs with scripts/install.sh into a scratch DESTDIR, verifies the unit
# and its hardening offline with systemd-analyze, and, where podman is
# available, runs the installed unit under a real systemd in a container.
#
# Checks: installed layout; ExecStart/paths follow PREFIX; the env file is
# never overwritten; `systemd-analyze verify` is clean (under --root, so the
# ExecStart binary is checked too); `systemd-analyze security --offline`
# exposure <= 2.0 (MAX_EXPOSURE); every variable in mnistd.env.example is a
# `mnistd serve` flag (once `serve --help` exists); a short foreground run of
# the installed binary with the unit's environment answers /healthz and
# sends READY=1 (when python3 is there to listen on NOTIFY_SOCKET); with root
# and podman, the installed unit under a real systemd in a container
# (SYSTEMD_LIVE=auto|1|0): notify, sandbox, restarts, state, clean stop.
# Prints "systemd: N passed, N failed"; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
note() { echo "# $*"; }

tmp=$(mktemp -d /tmp/mnistd-systemd.XXXXXX)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! command -v systemd-analyze >/dev/null; then
  note "installing systemd (for systemd-analyze; it does not become PID 1)"
  [ "$(id -u)" -eq 0 ] || { echo "test-systemd: systemd-analyze missing and not root" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
note "$(systemd-analyze --version | head -n1)"
[ -x "$BUILD/mnistd" ] || make --no-print-directory "$BUILD/mnistd" >&2
[ -d data/mnist ] || scripts/fetch-data.sh data >&2

# --- install --------------------------------------------------------------
D=$tmp/root
check "install.sh PREFIX=/usr/local into a DESTDIR" \
  sh -c "scripts/install.sh /usr/local '$D' > '$tmp/install.log' 2>&1"
UNIT=$D/usr/local/lib/systemd/system/mnistd.service
check "binary installed and executable" test -x "$D/usr/local/bin/mnistd"
check "unit installed in /usr/local/lib/systemd/system" test -f "$UNIT"
check "unit ExecStart is /usr/local/bin/mnistd serve" \
  grep -qx 'ExecStart=/usr/local/bin/mnistd serve' "$UNIT"
data_ok() {
  local f n=0
  for f in "$D"/usr/local/share/mnistd/data/mnist/*; do
    [ -f "$f" ] && [ ! -L "$f" ] && [ -s "$f" ] || return 1
    n=$((n + 1))
  done
  [ "$n" -eq 4 ] || return 1
  # Fashion-MNIST links (data/fashion-mnist -> /usr/share/datasets) become files.
  if [ -d data/fashion-mnist ]; then
    for f in "$D"/usr/local/share/mnistd/data/fashion-mnist/*; do
      [ -f "$f" ] && [ ! -L "$f" ] || return 1
    done
  fi
}
check "MNIST data copied as 4 regular files (symlinks dereferenced)" data_ok
ENVF=$D/etc/mnistd/mnistd.env
check "env file installed mode 0600" test "$(stat -c %a "$ENVF" 2>/dev/null)" = 600
check "env file sets MNISTD_DATA_DIR=/usr/local/share/mnistd/data" \
  grep -qx 'MNISTD_DATA_DIR=/usr/local/share/mnistd/data' "$ENVF"
echo "MNISTD_LISTEN=127.0.0.1:9999  # local edit" >> "$ENVF"
scripts/install.sh /usr/local "$D" > "$tmp/install2.log" 2>&1
check "reinstall keeps an existing env file" grep -q 'local edit' "$ENVF"
sed -i '/local edit/d' "$ENVF"

# --- verify -----------------------------------------------------------------
# verify --root resolves the unit's dependencies (sysinit.target, ...) and the
# ExecStart binary inside the root: give it the host's stock units as well.
mkdir -p "$D/lib/systemd"
cp -a /lib/systemd/system "$D/lib/systemd/"
systemd-analyze verify --root="$D" mnistd.service > "$tmp/verify.log" 2>&1
rc=$?
check "systemd-analyze verify --root passes" test "$rc" -eq 0
check "systemd-analyze verify prints no warnings" test ! -s "$tmp/verify.log"
[ -s "$tmp/verify.log" ] && sed 's/^/#   /' "$tmp/verify.log"
check "verify notices a missing ExecStart binary (sanity)" sh -c "
  mv '$D/usr/local/bin/mnistd' '$tmp/mnistd.moved'
  ! systemd-analyze verify --root='$D' mnistd.service >/dev/null 2>&1; r=\$?
  mv '$tmp/mnistd.moved' '$D/usr/local/bin/mnistd'; exit \$r"

# --- security ---------------------------------------------------------------
systemd-analyze security --offline=yes --root="$D" --no-pager mnistd.service > "$tmp/security.log" 2>&1
exposure=$(sed -n 's/.*Overall exposure level for mnistd.service: \([0-9.]*\).*/\1/p' "$tmp/security.log")
note "$(grep 'Overall exposure' "$tmp/security.log")"
grep '^✗' "$tmp/security.log" | sed 's/^/#   /'
check "security exposure ${exposure:-?} <= $MAX_EXPOSURE" \
  awk -v e="${exposure:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e + 0 <= m + 0) }'
thr=$(awk -v m="$MAX_EXPOSURE" 'BEGIN { printf "%d", m * 10 + 0.5 }')
check "security --threshold=$thr exits 0" \
  sh -c "systemd-analyze security --offline=yes --root='$D' --threshold=$thr mnistd.service >/dev/null 2>&1"

# --- another PREFIX -----------------------------------------------------------
D2=$tmp/opt
scripts/install.sh /opt/mnistd "$D2" > "$tmp/install3.log" 2>&1
U2=$D2/etc/systemd/system/mnistd.service
check "PREFIX=/opt/mnistd: unit in /etc/systemd/system, paths rewritten" sh -c "
  grep -qx 'ExecStart=/opt/mnistd/bin/mnistd serve' '$U2' &&
  grep -qx 'Environment=MNISTD_DATA_DIR=/opt/mnistd/share/mnistd/data' '$U2' &&
  ! grep -v '^#' '$U2' | grep -q '/usr/local' &&
  grep -qx 'MNISTD_DATA_DIR=/opt/mnistd/share/mnistd/data' '$D2/etc/mnistd/mnistd.env'"
mkdir -p "$D2/lib/systemd" && cp -a /lib/systemd/system "$D2/lib/systemd/"
check "PREFIX=/opt/mnistd: verify passes" \
  sh -c "systemd-analyze verify --root='$D2' mnistd.service >/dev/null 2>&1"

# --- env example vs the daemon's flags ------------------------------------------
BIN=$D/usr/local/bin/mnistd
if "$BIN" serve --help > "$tmp/serve-help.txt" 2>&1; then
  missing=""
  for v in $(sed -n 's/^#\(MNISTD_[A-Z_]*\)=.*/\1/p' systemd/mnistd.env.example); do
    flag=--$(echo "${v#MNISTD_}" | tr 'A-Z_' 'a-z-')
    grep -q -- "$flag" "$tmp/serve-help.txt" || missing="$missing $flag"
  done
  check "every MNISTD_* in mnistd.env.example is a serve flag${missing:+ (not flags:$missing)}" test -z "$missing"
  undocumented=""
  for flag in $(grep -o -- '^ *--[a-z-]*' "$tmp/serve-help.txt" | tr -d ' ' | grep -v -x -- '--help'); do
    v=MNISTD_$(echo "${flag#--}" | tr 'a-z-' 'A-Z_')
    grep -q "^#$v=" systemd/mnistd.env.example || undocumented="$undocumented $v"
  done
  check "every serve flag is documented in mnistd.env.example${undocumented:+ (missing:$undocumented)}" test -z "$undocumented"
else
  note "skipped: 'mnistd serve --help' not available yet"
fi

# --- foreground run with the unit's environment ------------------------------------
# Not systemd itself, but the same binary, paths and variables the unit
# gives it, plus a NOTIFY_SOCKET to catch READY=1 (needs python3).
if grep -q 'sd_notify\|NOTIFY_SOCKET' "$BIN" 2>/dev/null && "$BIN" serve --help >/dev/null 2>&1 &&
   command -v python3 >/dev/null && command -v curl >/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$tmp/state"
  python3 - "$tmp/notify.sock" > "$tmp/notify.log" 2>&1 <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(60)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.replace("\n", " "), flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    pass
EOF
  listener=$!
  for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
  # The unit's Environment= lines, then the installed env file, as systemd does.
  ( set -a
    while IFS= read -r line; do eval "export ${line#Environment=}"; done \
      < <(grep '^Environment=MNISTD_' "$UNIT" | sed "s|%S/mnistd|$tmp/state|")
    . "$ENVF"
    MNISTD_LISTEN=127.0.0.1:$port NOTIFY_SOCKET=$tmp/notify.sock \
      exec "$BIN" serve --no-bootstrap ) > "$tmp/daemon.log" 2>&1 &
  daemon_pid=$!
  up=0
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && { up=1; break; }
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
  done
  check "installed daemon with the unit's environment answers /healthz" test $up -eq 1
  check "installed daemon sends READY=1 on NOTIFY_SOCKET" grep -q 'READY=1' "$tmp/notify.log"
  t0=$(date +%s%N)
  kill -TERM "$daemon_pid"; wait "$daemon_pid"; rc=$?; daemon_pid=""
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  check "SIGTERM: exit 0 in ${ms} ms (TimeoutStopSec=10)" test "$rc" -eq 0 -a "$ms" -lt 10000
  wait "$listener" 2>/dev/null
  check "daemon sends STOPPING=1 on SIGTERM" grep -q 'STOPPING=1' "$tmp/notify.log"
  [ $fail -gt 0 ] && tail -n 20 "$tmp/daemon.log" | sed 's/^/#   /'
else
  note "skipped the foreground run (needs 'serve', sd_notify, python3 and curl)"
fi

# --- live: the unit under a real systemd, in a podman container ------------------------
# systemd runs as PID 1 of a container holding the installed tree. This
# exercises what offline analysis cannot: Type=notify, DynamicUser and
# StateDirectory, the seccomp filter against the real daemon (oneDNN's JIT
# included), restart on failure, state across restarts.
# SYSTEMD_LIVE=auto (default: when podman is installed and we are root), 1, 0.
LIVE=${SYSTEMD_LIVE:-auto}
if [ "$LIVE" = auto ]; then
  LIVE=0
  command -v podman >/dev/null && [ "$(id -u)" -eq 0 ] && "$BIN" serve --help >/dev/null 2>&1 && LIVE=1
  [ $LIVE = 0 ] && note "skipped the live systemd run (needs root, podman and 'serve'; SYSTEMD_LIVE=1 forces it)"
fi
if [ "$LIVE" = 1 ]; then
  LIVE_IMAGE=${LIVE_IMAGE:-mnistd-systemd-test}
  C=mnistd-systemd-test-$$
  if [ -z "${CONTAINERS_CONF:-}" ]; then   # runc + our rlimits, as in tests/system/test_docker.sh
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
      "$nofile" "$nofile" > "$tmp/containers.conf"
    export CONTAINERS_CONF=$tmp/containers.conf
  fi
  live_cleanup() { podman rm -f -t 0 "$C" >/dev/null 2>&1; }
  trap 'live_cleanup; cleanup' EXIT
  L=$tmp/live
  mkdir -p "$L"
  scripts/install.sh /usr/local "$L/root" > "$tmp/install-live.log" 2>&1
  {
    echo 'FROM debian:bookworm-slim'
    echo 'LABEL org.opencontainers.image.title="mnistd-systemd-test"'
    echo 'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \'
    echo '      systemd systemd-sysv curl libmicrohttpd12 libcjson1 libuv1 libdnnl2 \'
    echo '      zlib1g libsqlite3-0 libspng0 libsystemd0 libprotobuf-c1 libarchive13 libnettle8 && apt-get clean && rm -rf /var/lib/apt/lists/*'
    echo 'COPY root/ /'
    echo 'RUN systemctl enable mnistd.service && systemctl mask systemd-logind.service getty.target'
    echo 'STOPSIGNAL SIGRTMIN+3'
    echo 'CMD ["/sbin/init"]'
  } > "$L/Containerfile"
  t0=$(date +%s)
  if scripts/make-base-image.sh > "$tmp/base.log" 2>&1 &&
     timeout 900 podman build --pull=never --format docker -t "$LIVE_IMAGE" "$L" > "$tmp/live-build.log" 2>&1; then
    podman image prune -f --filter label=org.opencontainers.image.title=mnistd-systemd-test >/dev/null 2>&1
    note "live image built in $(( $(date +%s) - t0 ))s"
    podman run -d --name "$C" --systemd=always "$LIVE_IMAGE" > /dev/null 2> "$tmp/live-run.err"
    x() { podman exec "$C" sh -c "$1"; }
    # until_ok SECONDS CMD: until CMD succeeds in the container
    until_ok() {
      local end=$(( $(date +%s) + $1 ))
      while [ "$(date +%s)" -lt "$end" ]; do x "$2" >/dev/null 2>&1 && return 0; sleep 1; done
      return 1
    }
    check "live: mnistd.service active (READY=1 received)" until_ok 60 'systemctl is-active -q mnistd'
    t1=$(date +%s)
    # While the bootstrap job trains, its threads run at nice 10: setpriority
    # passes the seccomp filter (field 19 of /proc/PID/task/TID/stat).
    check "live: training threads at nice 10 (setpriority allowed by the filter)" until_ok 30 \
      'pid=$(systemctl show -p MainPID --value mnistd); sed "s/.*) //" /proc/$pid/task/*/stat | awk "\$17 == 10 { f = 1 } END { exit !f }"'
    check "live: /readyz 200 once the bootstrap model is trained" \
      until_ok 180 'curl -fs http://127.0.0.1:8080/readyz'
    note "live: ready $(( $(date +%s) - t1 ))s after start"
    pid=$(x 'systemctl show -p MainPID --value mnistd')
    st=$(x "cat /proc/$pid/status" 2>/dev/null)
    sandbox_ok() {
      echo "$st" | grep -Eq '^Uid:[[:space:]]+[1-9]' &&
      echo "$st" | grep -Eq '^NoNewPrivs:[[:space:]]+1' &&
      echo "$st" | grep -Eq '^Seccomp:[[:space:]]+2' &&
      echo "$st" | grep -Eq '^CapEff:[[:space:]]+0+$'
    }
    check "live: daemon runs as a dynamic user, no capabilities, NoNewPrivs, seccomp" sandbox_ok
    check "live: state in /var/lib/private/mnistd, mode 0700" \
      test "$(x 'stat -c %a /var/lib/private/mnistd' 2>/dev/null)" = 700
    got=$(x 'tail -c +17 /usr/local/share/mnistd/data/mnist/t10k-images-idx3-ubyte | head -c 784 |
             curl -s -H "Content-Type: application/octet-stream" --data-binary @- http://127.0.0.1:8080/v1/predict' |
          grep -o '"label":[0-9]*' | head -n1 | cut -d: -f2)
    check "live: predict the first MNIST test digit -> 7 (got ${got:-nothing})" test "$got" = 7
    jobs1=$(x 'curl -s http://127.0.0.1:8080/v1/jobs' | grep -o '"id":[0-9]*' | tr '\n' ' ')
    ready1=$(x 'curl -s http://127.0.0.1:8080/readyz')
    check "live: systemctl restart" x 'systemctl restart mnistd'
    check "live: ready again after restart" until_ok 30 'curl -fs http://127.0.0.1:8080/readyz'
    jobs2=$(x 'curl -s http://127.0.0.1:8080/v1/jobs' | grep -o '"id":[0-9]*' | tr '\n' ' ')
    ready2=$(x 'curl -s http://127.0.0.1:8080/readyz')
    check "live: jobs and active model survive a restart (${jobs2}/ $ready2)" \
      test "$jobs2" = "$jobs1" -a "$ready2" = "$ready1"
    x 'systemctl kill -s SIGKILL mnistd' >/dev/null 2>&1
    sleep 1
    check "live: Restart=on-failure brings it back after SIGKILL" \
      until_ok 20 'test "$(systemctl show -p NRestarts --value mnistd)" -ge 1 && systemctl is-active -q mnistd'
    t1=$(date +%s%N)
    x 'systemctl stop mnistd' >/dev/null 2>&1
    ms=$(( ($(date +%s%N) - t1) / 1000000 ))
    res=$(x 'systemctl show -p Result --value mnistd; systemctl show -p ExecMainStatus --value mnistd' | tr '\n' ' ')
    check "live: systemctl stop: clean exit in ${ms} ms (Result, status: ${res})" \
      test "$res" = "success 0 " -a "$ms" -lt 10000
    denials=$(x 'journalctl -u mnistd --no-pager -o cat' |
              grep -Ei 'SIGSYS|bad system call|core-dump|permission denied|operation not permitted' | head -n 3)
    check "live: no sandbox denials in the journal${denials:+ ($denials)}" test -z "$denials"
    # Informational: IPAddressDeny= needs cgroup BPF, which sandboxes such as
    # gVisor lack (systemd then runs the service without the filter).
    x 'echo MNISTD_LISTEN=0.0.0.0:8080 >> /etc/mnistd/mnistd.env && systemctl start mnistd' >/dev/null 2>&1
    until_ok 20 'curl -fs http://127.0.0.1:8080/healthz'
    ip=$(podman inspect --format '{{.NetworkSettings.IPAddress}}' "$C" 2>/dev/null)
    if [ -n "$ip" ] && x "curl -fs -m 3 http://$ip:8080/healthz" >/dev/null 2>&1; then
      note "live: IPAddressDeny=any is not enforced on this kernel (no cgroup BPF); $ip:8080 answered"
    else
      note "live: IPAddressDeny=any enforced: $ip:8080 does not answer the service's own non-local address"
    fi
    [ $fail -gt 0 ] && x 'journalctl -u mnistd --no-pager | tail -n 20' 2>&1 | sed 's/^/#   /'
    live_cleanup
    [ "${KEEP_IMAGE:-1}" = 0 ] && podman rmi -f "$LIVE_IMAGE" >/dev/null 2>&1
  else
    tail -n 20 "$tmp/base.log" "$tmp/live-build.log" 2>/dev/null | sed 's/^/#   /'
    bad "live: building the systemd test image"
  fi
fi

echo "systemd: $pass passed, $fail failed"
[ $fail -eq 0 ]
