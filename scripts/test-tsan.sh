#!/usr/bin/env bash
# The daemon under ThreadSanitizer (issue 9 #25): a build with
# -fsanitize=thread (`make tsan` builds it and runs this) driven through the
# paths where threads meet: two jobs training at once (--max-running-jobs 2)
# with event streams open, predictions from several connections meanwhile,
# a cancel of a running job (the cancel flag), activation and deletion of
# models while predictions run, /metrics, a SIGTERM while a job trains (the
# shutdown flags), the restart that resumes it, and a final SIGTERM.
# Passes when no ThreadSanitizer report appears and every step answers.
# Prints "tsan: N passed, N failed".
#   MNISTD_BIN (default build/tsan/mnistd), MNISTD_DATA, KEEP=1.
set -u
cd "$(dirname "$0")/.." || exit 1
export MNISTD_BIN=${MNISTD_BIN:-build/tsan/mnistd}
# shellcheck source=../tests/reliability/lib.sh
. tests/reliability/lib.sh
[ -x "$BIN" ] || { echo "tsan: $BIN is missing (run make tsan)"; exit 1; }
T0=$(now)
# Reports go to the daemon's log; keep going after one so all are seen.
# oneDNN and libgomp are not instrumented: tests/reliability/tsan.supp.
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 history_size=4 suppressions=$PWD/tests/reliability/tsan.supp ${TSAN_OPTIONS:-}"
DSTART_WAIT=60
D=$RL_TMP/tsan S=$RL_TMP/tsan/state L=$RL_TMP/tsan/daemon.log
mkdir -p "$D"
P=$(free_port); B=http://127.0.0.1:$P
digit_file "$RL_TMP/digit.raw"
reports() { grep -c 'WARNING: ThreadSanitizer' "$L" 2>/dev/null || true; }
predict_loop() { # N: predictions, one connection each
  local i
  for ((i = 0; i < $1; i++)); do
    curl -s --max-time 30 -o /dev/null -XPOST -H 'Content-Type: application/octet-stream' \
      --data-binary @"$RL_TMP/digit.raw" "$B/v1/predict"
  done
}

echo "== tsan: $BIN"
dstart "$S" "$L" "$P" --max-running-jobs 2 --threads 4 || { bad "tsan: daemon starts"; exit 1; }
ok "tsan: daemon starts"
j1=$(post_job "$B" '{"epochs":2,"train_limit":3000,"test_limit":500,"activate":"always"}')
job_wait "$B" "$j1" succeeded 300 >/dev/null; check "tsan: first model" test $? = 0
# Two jobs at once with streams, predictions meanwhile.
j2=$(post_job "$B" '{"epochs":2,"train_limit":3000,"test_limit":500,"activate":"if_better"}')
j3=$(post_job "$B" '{"epochs":2,"train_limit":3000,"test_limit":500,"arch":"relu","activate":"if_better"}')
curl -sN --max-time 300 "$B/v1/jobs/$j2/events" >"$D/s2.txt" &
c2=$!; rl_track "$c2"
curl -sN --max-time 300 "$B/v1/jobs/$j3/events?format=ndjson" >"$D/s3.txt" &
c3=$!; rl_track "$c3"
predict_loop 20 & pl1=$!; rl_track "$pl1"
predict_loop 20 & pl2=$!; rl_track "$pl2"
for _ in 1 2 3 4 5; do curl -s -o /dev/null "$B/metrics"; curl -s -o /dev/null "$B/v1/jobs"; sleep 0.2; done
wait "$pl1" "$pl2"
job_wait "$B" "$j2" succeeded 300 >/dev/null; check "tsan: concurrent job $j2 succeeded" test $? = 0
job_wait "$B" "$j3" succeeded 300 >/dev/null; check "tsan: concurrent job $j3 succeeded" test $? = 0
wait "$c2" "$c3"
check "tsan: both streams ended with end" bash -c "grep -q '^event: end' '$D/s2.txt' && grep -q '\"event\":\"end\"' '$D/s3.txt'"
# Cancel a running job (the cancel flag crosses threads).
j4=$(post_job "$B" '{"epochs":50,"train_limit":3000,"test_limit":500,"activate":"never"}')
job_wait "$B" "$j4" running 120 >/dev/null; sleep 1
curl -s -o /dev/null -XPOST "$B/v1/jobs/$j4/cancel"
job_wait "$B" "$j4" cancelled 120 >/dev/null; check "tsan: running job cancelled" test $? = 0
# Activate / delete while predictions run.
predict_loop 20 & pl1=$!; rl_track "$pl1"
for m in 1 2 1; do curl -s -o /dev/null -XPOST "$B/v1/models/$m/activate"; done
curl -s -o /dev/null -XDELETE "$B/v1/models/3"
wait "$pl1"
check "tsan: predictions still answer" bash -c "curl -s -XPOST -H 'Content-Type: application/octet-stream' --data-binary @'$RL_TMP/digit.raw' '$B/v1/predict' | grep -q label"
# SIGTERM while training: the shutdown flags.
j5=$(post_job "$B" '{"epochs":3,"train_limit":3000,"test_limit":500,"activate":"never"}')
job_wait "$B" "$j5" running 120 >/dev/null; sleep 1
dstop 120; check "tsan: SIGTERM while training exits 0 (status $DRC)" test "$DRC" = 0
dstart "$S" "$L" "$P" --max-running-jobs 2 || { bad "tsan: restart"; }
job_wait "$B" "$j5" succeeded 300 >/dev/null; check "tsan: interrupted job resumed and succeeded" test $? = 0
dstop 120; check "tsan: final SIGTERM exits 0 (status $DRC)" test "$DRC" = 0
n=$(reports)
if [ "$n" = 0 ]; then ok "tsan: no ThreadSanitizer report"; else
  bad "tsan: $n ThreadSanitizer reports"
  grep -A25 'WARNING: ThreadSanitizer' "$L" | head -120
fi
echo "tsan: took $(elapsed "$T0" "$(now)")s"
echo "tsan: $pass passed, $fail failed"
[ "$fail" = 0 ]
