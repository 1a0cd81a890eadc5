#!/usr/bin/env bash
# Runs the reliability checks one after another and prints a summary:
#   scripts/test-faults.sh       SIGKILL x10, disk full, corrupted files
#   scripts/test-load.sh 60      load + 200 SSE clients + 2,000 idle sockets
#   scripts/valgrind.sh          memcheck over the daemon, CLI and unit tests
#   make tsan                    ThreadSanitizer build: server units + daemon scenario
# --short runs the load for 15 s instead of 60 (CI). Exit status 1 if any
# failed. Each script's full output goes to stdout as it runs.
#   scripts/reliability.sh [--short] [--only faults|load|valgrind|tsan]...
set -u
cd "$(dirname "$0")/.." || exit 1
DUR=60
ONLY=()
while [ $# -gt 0 ]; do
  case $1 in
    --short) DUR=15 ;;
    --only) ONLY+=("$2"); shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--short] [--only faults|load|valgrind|tsan]..."; exit 2 ;;
  esac
  shift
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=(faults load valgrind tsan)
[ -x build/mnistd ] || make -s build/mnistd || exit 1

declare -A CMD=([faults]="scripts/test-faults.sh" [load]="scripts/test-load.sh $DUR" [valgrind]="scripts/valgrind.sh" [tsan]="make --no-print-directory tsan")
summary=()
rc_all=0
t_all=$(date +%s)
for name in "${ONLY[@]}"; do
  [ -n "${CMD[$name]:-}" ] || { echo "unknown part $name"; exit 2; }
  echo "######## $name: ${CMD[$name]}"
  t0=$(date +%s)
  out=$(mktemp)
  # shellcheck disable=SC2086
  ${CMD[$name]} 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$out" | tail -1)
  rm -f "$out"
  [ -n "$line" ] || line="$name: no summary line"
  [ "$rc" = 0 ] || rc_all=1
  summary+=("$(printf '%-8s %-4s %5ss  %s' "$name" "$([ "$rc" = 0 ] && echo ok || echo FAIL)" "$(($(date +%s) - t0))" "$line")")
done
echo "######## reliability summary ($(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - t_all))s)"
printf '%s\n' "${summary[@]}"
[ "$rc_all" = 0 ] && echo "reliability: all passed" || echo "reliability: FAILED"
exit "$rc_all"
