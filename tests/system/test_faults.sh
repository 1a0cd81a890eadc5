#!/usr/bin/env bash
# Fault injection against the real daemon (loopback only, temporary state):
#   a. SIGKILL at random points of one training job, ten times in a row:
#      earlier models and finished jobs stay byte-identical, the database
#      passes integrity_check, the job resumes and ends with epochs 1..N,
#      and its result equals an uninterrupted run of the same job. If the job
#      finishes before the last kill, a new instance of it takes the rest.
#   b. A tiny filesystem (tmpfs; root needed, else a loop-mounted ext4):
#      disk full while training / while saving the model / while recording
#      a job: clear errors, old models keep working, the database stays
#      sound; after freeing space a new job succeeds.
#   c. Truncated, bit-flipped, empty and missing model files, and a corrupt
#      checkpoint: the daemon starts, logs each skip with its reason, lists
#      only the valid models, and /readyz reflects what is left.
#   d. The end of a job, crash by crash: the daemon kills itself (or sends
#      itself SIGTERM) at each named point (MNISTD_CRASH_AT / MNISTD_TERM_AT)
#      and the restart must finish the job as an uninterrupted run would;
#      a model's DELETE killed between its commit and its unlinks leaves no
#      files behind after the restart.
#   e. Recording a job's end fails (MNISTD_FAIL_AT=finish): the checkpoint
#      stays and the job never starts over; a cancel (202) then kill -9
#      before the trainer noticed it: the restart ends the job cancelled.
# Prints "faults: N passed, N failed"; exit status 1 on any failure.
# Options (environment): FAULT_KILLS (10), FAULT_JOB (the killed job's JSON),
# FAULT_PARTS ("a b c d e"), KEEP=1 keeps the temporary directory.
set -u
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=../tests/reliability/lib.sh
. tests/reliability/lib.sh

KILLS=${FAULT_KILLS:-10}
JOBCFG=${FAULT_JOB:-'{"epochs":10,"train_limit":30000,"test_limit":1000,"activate":"never"}'}
PARTS=${FAULT_PARTS:-"a b c d e"}
[ -x "$BIN" ] || { echo "faults: $BIN is missing (run make)"; exit 1; }
[ -f "$DATA/mnist/t10k-images-idx3-ubyte" ] || { echo "faults: no MNIST under $DATA (run make data)"; exit 1; }
digit_file "$RL_TMP/digit.raw"
T0=$(now)

predict_ok() { # B: POST the 7; 200 and label 7
  local code
  code=$(curl -s --max-time 10 -o "$RL_TMP/pred.json" -w '%{http_code}' -XPOST \
    -H 'Content-Type: application/octet-stream' --data-binary @"$RL_TMP/digit.raw" "$1/v1/predict")
  [ "$code" = 200 ] && grep -q '"label":7' "$RL_TMP/pred.json"
}
model_loads() { # FILE: the CLI loads it and classifies the first test digit
  "$BIN" predict --model "$1" --limit 1 "$DATA/mnist/t10k-images-idx3-ubyte" | grep -q ']: '
}
stray_tmp() { # STATE: leftover temporary files of interrupted atomic saves
  find "$1/models" "$1/checkpoints" -name '*.tmp.*' 2>/dev/null | wc -l
}

# =========================================================================
part_a() {
  echo "== a. SIGKILL during training, $KILLS times"
  local D=$RL_TMP/a S=$RL_TMP/a/state L=$RL_TMP/a/daemon.log P B K i j
  mkdir -p "$D"; P=$(free_port); B=http://127.0.0.1:$P
  dstart "$S" "$L" "$P" || { bad "a: daemon starts"; return; }
  # Records that must survive: two succeeded jobs (two models), one cancelled.
  local j1 j2 j3
  j1=$(post_job "$B" '{"epochs":1,"train_limit":3000,"test_limit":500,"activate":"always"}')
  job_wait "$B" "$j1" succeeded 120 >/dev/null
  j2=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"arch":"relu","activate":"never"}')
  job_wait "$B" "$j2" succeeded 120 >/dev/null
  j3=$(post_job "$B" '{"epochs":50,"train_limit":2000,"test_limit":500,"activate":"never"}')
  job_wait "$B" "$j3" running 60 >/dev/null
  curl -s -XPOST "$B/v1/jobs/$j3/cancel" >/dev/null
  job_wait "$B" "$j3" cancelled 60 >/dev/null
  check "a: set-up: 2 succeeded jobs, 1 cancelled, 2 models" python3 - "$B" "$j1" "$j2" "$j3" <<'PY'
import json, sys, urllib.request
b = sys.argv[1]
st = [json.load(urllib.request.urlopen(f"{b}/v1/jobs/{i}"))["state"] for i in sys.argv[2:]]
assert st == ["succeeded", "succeeded", "cancelled"], st
assert len(json.load(urllib.request.urlopen(f"{b}/v1/models"))["models"]) == 2
PY
  local kept=("$j1" "$j2" "$j3") killed=()
  for j in "${kept[@]}"; do curl -s "$B/v1/jobs/$j" >"$D/job$j.before"; done
  curl -s "$B/v1/models" >"$D/models.before"

  local epochs; epochs=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['epochs'])" "$JOBCFG")
  K=$(post_job "$B" "$JOBCFG")
  [ -n "$K" ] || { bad "a: the job to kill is accepted"; dstop; return; }
  killed+=("$K")
  info "job $K: $JOBCFG"
  local t_start before delay hi=0 landed=0 regress=0 mismatch=0 stateb=0 nolog=0 completed=0 cut=0 CPID=
  local -a marks=()
  # eval_check N: reads the checker's result for restart N (see restart_check.py)
  eval_check() {
    local f=$D/check.$1.json
    if [ -n "$CPID" ]; then
      local w; for ((w = 0; w < 300; w++)); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null; CPID=
    fi
    [ -f "$f" ] || { cut=$((cut + 1)); info "restart $1: no check result"; return; }
    local r; r=$(python3 - "$f" "$hi" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); hi = int(sys.argv[2])
real = [e for e in d["errors"] if not e.startswith("cut short")]
ep = d.get("epochs")
print(int(d["complete"]), len(real), -1 if ep is None else ep, d.get("state", "?"),
      d.get("ready_s"), int(ep is not None and ep < hi), "|".join(real) or "-")
PY
)
    set -- $r
    info "  restart $N_: ready in ${5}s, job $K [${4} ${3}], checks $([ "$1" = 1 ] && echo complete || echo 'cut short by the next kill')"
    [ "$1" = 1 ] && completed=$((completed + 1)) || cut=$((cut + 1))
    [ "$2" = 0 ] || { mismatch=$((mismatch + 1)); info "  restart $N_: ${*:7}"; }
    [ "$6" = 0 ] || { regress=$((regress + 1)); info "  restart $N_: job $K has $3 epochs, $hi were seen before"; }
    [ "$3" -gt "$hi" ] && hi=$3
    [[ "$4" =~ ^(queued|running|succeeded|\?)$ ]] || stateb=$((stateb + 1))
    if [ "$1" = 1 ] && [ "$4" = running ] &&
       ! tail -n +"$((${marks[$N_]} + 1))" "$L" | grep -q "job $K was interrupted after epoch [0-9]*; it will resume"; then
      nolog=$((nolog + 1)); info "  restart $N_: no 'interrupted ... will resume' log line"
    fi
  }
  start_check() { # N: checker for restart N, in the background
    "$ROOT/tests/reliability/restart_check.py" --base "$B" --job "$K" --killed-jobs "$(IFS=,; echo "${killed[*]}")" \
      --kept "$D" --db "$S/mnistd.db" --out "$D/check.$1.json" --pid "$DPID" --wait 30 &
    CPID=$!; rl_track "$CPID"
  }
  # The kill lands DELAY (random, 0.3-2.5 s) after the job is training again
  # (its "job K running" log line); for kills 3 and 7 after the process
  # started instead, to hit start-up: WAL recovery, model and data loading,
  # the checkpoint read.
  ms() { date +%s%3N; }
  trained_again() { # wait (bounded) for "job K running" after line $1 of the log
    local w; for ((w = 0; w < 1500; w++)); do
      tail -n +"$(($1 + 1))" "$L" | grep -q "job $K running: " && return 0
      kill -0 "$DPID" 2>/dev/null || return 1; sleep 0.02
    done; return 1
  }
  poll_job() { # "state epochs" of job K, or "? -1"
    local b; b=$(curl -s --max-time 0.3 "$B/v1/jobs/$K") || { echo "? -1"; return; }
    echo "$(echo "$b" | grep -o '"state":"[a-z]*"' | head -1 | cut -d'"' -f4) $(echo "$b" | grep -o '"val_loss"' | wc -l)"
  }
  t_start=$(ms)
  local N_=0 ref='' kind
  # Kills that find the job already finished hit an idle daemon: they do not
  # count, and a new instance of the job takes the next ones (at most 2xKILLS).
  local lastN=0
  for ((i = 1; landed < KILLS && i <= 2 * KILLS; i++)); do
    delay=$((300 + RANDOM % 2201))
    kind="training"
    if [ "$i" = 3 ] || [ "$i" = 7 ]; then kind="start-up"
    elif [ "$i" -gt 1 ] && [ -z "$ref" ]; then trained_again "${marks[$N_]}" && t_start=$(ms) || kind="start-up (no training seen)"
    fi
    ref=
    local left=$((t_start + delay - $(ms)))
    [ "$left" -gt 0 ] && sleep "$((left / 1000)).$(printf %03d $((left % 1000)))"
    before=$(poll_job)
    dkill9
    info "kill $i, $((delay / 1000)).$(printf %03d $((delay % 1000)))s after $kind: job $K was [$before]"
    if [[ "$before" == running* ]]; then landed=$((landed + 1))
    elif [[ "$before" == succeeded* ]]; then info "  (not counted: job $K had finished)"; fi
    [ "$N_" -gt 0 ] && eval_check "$N_"
    if [ "${before#* }" != -1 ]; then
      [ "${before#* }" -lt "$hi" ] && { regress=$((regress + 1)); info "  job $K shows ${before#* } epochs, $hi were seen before"; }
      [ "${before#* }" -gt "$hi" ] && hi=${before#* }
    fi
    N_=$i; marks[$i]=$(wc -l <"$L")
    t_start=$(ms)
    dspawn "$S" "$L" "$P"
    start_check "$i"; lastN=$i
    # The job finished before this kill: check this restart fully, keep the
    # job's records as ones that must not change, and kill a new instance.
    if [[ "$before" == succeeded* ]] && [ "$landed" -lt "$KILLS" ]; then
      eval_check "$i"; N_=0
      kept+=("$K"); curl -s "$B/v1/jobs/$K" >"$D/job$K.before"; curl -s "$B/v1/models" >"$D/models.before"
      K=$(post_job "$B" "$JOBCFG"); killed+=("$K"); hi=0
      info "job ${kept[-1]} finished; the next kills go to job $K"
      t_start=$(ms); ref=submitted
    fi
  done
  [ "$N_" -gt 0 ] && eval_check "$N_"
  info "$((i - 1)) kills, $landed while a job was running; checks complete after $completed restarts, cut short by the next kill after $cut"
  [ "$landed" = "$KILLS" ] && ok "a: $KILLS kills landed while the job was running" || bad "a: only $landed of $KILLS kills landed while a job was running"
  local last; last=$(python3 -c "import json; print(json.load(open('$D/check.$lastN.json'))['complete'])" 2>/dev/null)
  [ "$last" = True ] && ok "a: the checks after the last restart ran to the end" || bad "a: the checks after the last restart did not complete"
  [ "$mismatch" = 0 ] && ok "a: after every restart: earlier models and finished jobs identical, metrics rows 1..n, integrity_check ok" \
    || bad "a: $mismatch restarts changed earlier records, left gaps in the metrics, or failed integrity_check"
  [ "$regress" = 0 ] && ok "a: no finished epoch was ever lost (the epoch count never went down)" \
    || bad "a: $regress times a finished epoch was lost"
  [ "$stateb" = 0 ] && ok "a: a crash never marks the job failed" || bad "a: job in a bad state $stateb times"
  [ "$nolog" = 0 ] && ok "a: every checked restart logged 'job N was interrupted after epoch E; it will resume'" \
    || bad "a: $nolog restarts did not log the resume"
  if job_wait "$B" "$K" succeeded 600; then ok "a: the killed job(s) ${killed[*]} complete"; else bad "a: the killed job $K completes"; fi
  # The same job without interruptions: training is deterministic given the
  # seed and thread count, so every metric except timing must be equal.
  local R; R=$(post_job "$B" "$JOBCFG")
  job_wait "$B" "$R" succeeded 600 >/dev/null
  curl -s "$B/v1/jobs/$R" >"$D/r.json"
  local rid mid; rid=$(jget "$D/r.json" 'd["model_id"]')
  for K in "${killed[@]}"; do
    curl -s "$B/v1/jobs/$K" >"$D/k.json"
    check "a: job $K: metrics are epochs exactly 1..$epochs" python3 -c "
import json; d = json.load(open('$D/k.json')); assert [m['epoch'] for m in d['metrics']] == list(range(1, $epochs + 1)), d['metrics']"
    mid=$(jget "$D/k.json" 'd["model_id"]')
    check "a: job $K: its model file (model $mid) loads in 'mnistd predict'" model_loads "$S/models/$mid.model"
    check "a: job $K == uninterrupted run $R (loss, accuracy, val_loss, val_accuracy of every epoch)" python3 - "$D/k.json" "$D/r.json" <<'PY'
import json, sys
k, r = (json.load(open(f)) for f in sys.argv[1:])
keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
a = [[m[x] for x in keys] for m in k["metrics"]]; b = [[m[x] for x in keys] for m in r["metrics"]]
assert r["state"] == "succeeded" and a == b, (a, b)
PY
    check "a: job $K: model file byte-identical to the uninterrupted run's (models $mid, $rid)" cmp "$S/models/$mid.model" "$S/models/$rid.model"
  done
  db_ok "$S/mnistd.db" && ok "a: final integrity_check ok" || bad "a: final integrity_check"
  local st; st=$(stray_tmp "$S")
  info "leftover temporary files in models/ and checkpoints/: $st ($(du -sh "$S" | cut -f1) state)"
  [ "$st" = 0 ] && ok "a: no leftover *.tmp.* files from interrupted saves" \
    || bad "a: $st leftover *.tmp.* files from interrupted saves (never cleaned up)"
  dstop; check "a: SIGTERM exits 0" test "$DRC" = 0
}

# =========================================================================
part_b() {
  echo "== b. tiny filesystem"
  local D=$RL_TMP/b S=$RL_TMP/b/state L=$RL_TMP/b/daemon.log P B kind
  mkdir -p "$S"
  # 12 MiB: room for the database, a few models (1.3 MB each), a checkpoint
  # (2.7 MB) and its temporary copy while it is replaced.
  if mount -t tmpfs -o size=12m,mode=0750 tmpfs "$S" 2>"$D.mnt"; then
    kind=tmpfs; rl_mount "$S"
  else
    info "tmpfs mount refused ($(cat "$D.mnt")); trying a loop-mounted ext4 image"
    truncate -s 16m "$D/disk.img" && mkfs.ext4 -q -F "$D/disk.img" &&
      mount -o loop "$D/disk.img" "$S" 2>>"$D.mnt" && kind=ext4-loop && rl_mount "$S"
    if [ "${kind:-}" != ext4-loop ]; then
      bad "b: cannot mount a small filesystem (need root or CAP_SYS_ADMIN): $(cat "$D.mnt")"; return
    fi
  fi
  info "state dir on $kind: $(df -h --output=size "$S" | tail -1 | tr -d ' ')"
  P=$(free_port); B=http://127.0.0.1:$P
  dstart "$S" "$L" "$P" || { bad "b: daemon starts"; umount "$S"; return; }
  local j1; j1=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"activate":"always"}')
  if job_wait "$B" "$j1" succeeded 120; then ok "b: first model trained while there is space"; else
    bad "b: first model trained"; tail -3 "$L"; dstop; umount "$S"; return; fi
  local avail fill
  fill_to() { # leave about $1 bytes free
    rm -f "$S/filler"
    avail=$(df -B1 --output=avail "$S" | tail -1)
    fill=$(( avail - $1 )); [ "$fill" -gt 0 ] || fill=0
    head -c "$fill" /dev/zero >"$S/filler" 2>/dev/null; sync
    info "filled $fill bytes; $(df -B1 --output=avail "$S" | tail -1) bytes free"
  }
  common_b() { # label
    check "b: $1: model 1 still listed" bash -c "curl -s '$B/v1/models' | grep -q '\"id\":1'"
    check "b: $1: models/1.model still loads" model_loads "$S/models/1.model"
    check "b: $1: POST /v1/predict 200, label 7" predict_ok "$B"
    check "b: $1: integrity_check ok" db_ok "$S/mnistd.db"
    check "b: $1: no temporary files left behind" test "$(stray_tmp "$S")" = 0
  }
  # b1: full while training (the checkpoint does not fit).
  fill_to 200000
  local j2 code
  j2=$(post_job "$B" '{"epochs":2,"train_limit":2000,"test_limit":500,"activate":"always"}')
  if [ -n "$j2" ]; then
    job_wait "$B" "$j2" failed 120 >/dev/null
    curl -s "$B/v1/jobs/$j2" >"$D/j2.json"
    info "job $j2: $(jget "$D/j2.json" 'd["state"], d["error"]')"
    check "b: ~200 KB free: the job fails with an error about the disk" python3 -c "
import json,re; d = json.load(open('$D/j2.json')); assert d['state'] == 'failed' and re.search('space|disk', d['error'] or '', re.I), d"
  else
    bad "b: ~200 KB free: POST /v1/jobs should still be accepted (small row)"
  fi
  common_b "training with ~200 KB free"
  # b2: full while saving the model: room for the checkpoint, not the model.
  local ck=$(( 2 * 1349836 ))
  fill_to $(( ck + 400000 ))
  local j3; j3=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"activate":"always"}')
  job_wait "$B" "$j3" 'failed|succeeded' 120 >/dev/null
  curl -s "$B/v1/jobs/$j3" >"$D/j3.json"
  info "job $j3: $(jget "$D/j3.json" 'd["state"], d["error"]')"
  check "b: room for the checkpoint but not the model: fails naming the disk, no model recorded" python3 -c "
import json,re; d = json.load(open('$D/j3.json')); assert d['state'] == 'failed' and re.search('space|disk', d['error'] or '', re.I) and d['model_id'] is None, d"
  check "b: the failed save left no model record or file behind" bash -c "
    test \"\$(curl -s '$B/v1/models' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"models\"]))')\" = 1 &&
    test \"\$(ls '$S/models' | grep -c '\\.model\$')\" = 1 && test ! -e '$S/models/2.json'"
  local ckl; ckl=$(ls "$S/checkpoints" | wc -l)
  [ "$ckl" = 0 ] && ok "b: failed jobs leave no checkpoint behind" \
    || bad "b: failed jobs leave $ckl checkpoint file(s) behind ($(du -ch "$S"/checkpoints/* | tail -1 | cut -f1)); they are never removed"
  common_b "model save with the disk full"
  # b3: completely full: recording a job fails with 507, nothing else breaks.
  fill_to 0
  head -c 1048576 /dev/zero >>"$S/filler" 2>/dev/null
  code=$(curl -s --max-time 10 -o "$D/post.json" -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    -d '{"epochs":1,"train_limit":2000,"test_limit":500}' "$B/v1/jobs")
  info "POST /v1/jobs on a full disk: $code $(head -c 200 "$D/post.json")"
  if [ "$code" = 507 ]; then
    check "b: 0 bytes free: POST /v1/jobs 507 'the disk is full'" grep -q 'disk is full' "$D/post.json"
  else
    local j4; j4=$(jget "$D/post.json" 'd["id"]' 2>/dev/null)
    job_wait "$B" "$j4" failed 60 >/dev/null
    check "b: 0 bytes free: the job is refused (507) or fails naming the disk" bash -c \
      "test '$code' = 202 && curl -s '$B/v1/jobs/$j4' | grep -Eqi 'space|disk'"
  fi
  check "b: 0 bytes free: /healthz and /readyz 200" bash -c "curl -sf '$B/healthz' && curl -sf '$B/readyz'"
  common_b "disk completely full"
  # Restart on the full disk: the failures must have been recorded (no resume).
  dstop; check "b: SIGTERM on a full disk exits 0" test "$DRC" = 0
  if dstart "$S" "$L" "$P"; then
    ok "b: the daemon restarts on a full disk"
    check "b: failed jobs stay failed after the restart" python3 - "$B" "$j2" "$j3" <<'EOF'
import json, sys, urllib.request
for i in sys.argv[2:]:
    d = json.load(urllib.request.urlopen(f"{sys.argv[1]}/v1/jobs/{i}"))
    assert d["state"] == "failed", d
EOF
  else
    bad "b: the daemon restarts on a full disk"; tail -3 "$L"
  fi
  # Free the space: training works again.
  rm -f "$S/filler"
  local j5; j5=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"activate":"never"}')
  job_wait "$B" "$j5" succeeded 120 >/dev/null
  curl -s "$B/v1/jobs/$j5" >"$D/j5.json"
  check "b: after freeing space a new job succeeds" python3 -c "
import json; d = json.load(open('$D/j5.json')); assert d['state'] == 'succeeded' and d['model_id'], d"
  local m5; m5=$(jget "$D/j5.json" 'd["model_id"]')
  check "b: and its model (model $m5) loads" model_loads "$S/models/$m5.model"
  check "b: integrity_check ok at the end" db_ok "$S/mnistd.db"
  dstop; check "b: SIGTERM exits 0" test "$DRC" = 0
  grep -E 'failed|could not|skipped' "$L" | sed 's/^/  log: /' | head -8
  umount "$S" && ok "b: unmounted" || bad "b: umount $S"
}

# =========================================================================
part_c() {
  echo "== c. corrupted model files and checkpoints"
  local D=$RL_TMP/c S=$RL_TMP/c/state L=$RL_TMP/c/daemon.log P B i
  mkdir -p "$D"; P=$(free_port); B=http://127.0.0.1:$P
  dstart "$S" "$L" "$P" || { bad "c: daemon starts"; return; }
  for i in 1 2 3 4; do
    local j; j=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"activate":"always"}')
    job_wait "$B" "$j" succeeded 120 >/dev/null
  done
  curl -s -XPOST "$B/v1/models/2/activate" >/dev/null
  check "c: set-up: models 4,3,2,1 with 2 active" bash -c "curl -s '$B/v1/models' | python3 -c '
import json,sys; m = json.load(sys.stdin)[\"models\"]; assert [x[\"id\"] for x in m] == [4,3,2,1] and [x[\"id\"] for x in m if x[\"active\"]] == [2]'"
  dstop; check "c: SIGTERM exits 0" test "$DRC" = 0
  # 1: truncated to half; 2 (the active one): bytes flipped in the weights.
  local sz; sz=$(stat -c %s "$S/models/1.model")
  truncate -s $((sz / 2)) "$S/models/1.model"
  python3 - "$S/models/2.model" <<'EOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
for off in (len(b) // 2, len(b) // 2 + 1, len(b) // 3): b[off] ^= 0xFF
open(p, "wb").write(bytes(b))
EOF
  local mark; mark=$(wc -l <"$L")
  dstart "$S" "$L" "$P" || { bad "c: the daemon starts with corrupted models"; return; }
  ok "c: the daemon starts with a truncated and a bit-flipped model"
  tail -n +"$((mark + 1))" "$L" | grep -E 'skipped|unavailable' | sed 's/^/  log: /'
  check "c: log: model 1 skipped, saying truncated" bash -c "tail -n +$((mark + 1)) '$L' | grep -E 'model 1 skipped: .*(truncat|short|size|end of file)'"
  check "c: log: model 2 skipped, saying CRC/corrupt" bash -c "tail -n +$((mark + 1)) '$L' | grep -Ei 'model 2 skipped: .*(crc|corrupt|checksum)'"
  check "c: log: the active model 2 is unavailable, model 4 activated" bash -c "tail -n +$((mark + 1)) '$L' | grep -q 'active model 2 is unavailable; activating model 4'"
  check "c: GET /v1/models lists only 4 and 3, 4 active" bash -c "curl -s '$B/v1/models' | python3 -c '
import json,sys; m = json.load(sys.stdin)[\"models\"]; assert [x[\"id\"] for x in m] == [4,3] and m[0][\"active\"], m'"
  check "c: GET /v1/models/1 404" test "$(curl -s -o /dev/null -w '%{http_code}' "$B/v1/models/1")" = 404
  check "c: /readyz 200 with model 4" bash -c "curl -sf '$B/readyz' | grep -q '\"model\":4'"
  check "c: predictions work (model 4)" predict_ok "$B"
  check "c: ?model=2 (corrupt) answers 404, not a crash" test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST \
    -H 'Content-Type: application/octet-stream' --data-binary @"$RL_TMP/digit.raw" "$B/v1/predict?model=2")" = 404
  # A corrupt checkpoint: kill a job after its first epoch, damage the
  # checkpoint, restart: the job starts over and still finishes.
  local k; k=$(post_job "$B" '{"epochs":3,"train_limit":40000,"test_limit":500,"activate":"never"}')
  for i in $(seq 300); do
    [ "$(curl -s "$B/v1/jobs/$k" | jget /dev/stdin 'len(d["metrics"])' 2>/dev/null)" -ge 1 ] 2>/dev/null && break
    sleep 0.1
  done
  dkill9
  if [ -f "$S/checkpoints/$k.ckpt" ]; then
    python3 - "$S/checkpoints/$k.ckpt" <<'EOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x55
open(p, "wb").write(bytes(b))
EOF
    mark=$(wc -l <"$L")
    dstart "$S" "$L" "$P" || { bad "c: restart with a corrupt checkpoint"; return; }
    job_wait "$B" "$k" succeeded 120 >/dev/null
    check "c: corrupt checkpoint: logged 'checkpoint unusable ... starting over'" bash -c "tail -n +$((mark + 1)) '$L' | grep -q 'job $k: checkpoint unusable'"
    check "c: corrupt checkpoint: the job still ends with epochs 1..3" bash -c "curl -s '$B/v1/jobs/$k' | python3 -c '
import json,sys; d = json.load(sys.stdin); assert d[\"state\"] == \"succeeded\" and [m[\"epoch\"] for m in d[\"metrics\"]] == [1,2,3], d'"
    check "c: corrupt checkpoint: the event log replays epochs 1,2,3 once (no stale epoch 1)" bash -c "
      curl -sN '$B/v1/jobs/$k/events?format=ndjson' | python3 -c '
import json,sys; ev = [json.loads(l) for l in sys.stdin if l.strip()]
assert [e[\"data\"][\"epoch\"] for e in ev if e[\"event\"] == \"epoch\"] == [1,2,3], ev'"
  else
    bad "c: no checkpoint for job $k after its first epoch"
    dstart "$S" "$L" "$P" || return
  fi
  dstop; check "c: SIGTERM exits 0" test "$DRC" = 0
  # Now break every model: empty, missing, garbage with the right magic.
  : >"$S/models/3.model"
  rm -f "$S/models/4.model"
  for f in "$S"/models/*.model; do
    case $(basename "$f") in 1.model|2.model|3.model) ;; *) printf 'MNISTDNN\001\000\000\000garbage' >"$f" ;; esac
  done
  mark=$(wc -l <"$L")
  dstart "$S" "$L" "$P" || { bad "c: the daemon starts with no valid model"; return; }
  ok "c: the daemon starts with no valid model left"
  tail -n +"$((mark + 1))" "$L" | grep -E 'skipped|unavailable' | sed 's/^/  log: /'
  check "c: every model logged as skipped (1..5)" bash -c "for i in 1 2 3 4 5; do tail -n +$((mark + 1)) '$L' | grep -q \"model \$i skipped: .\" || exit 1; done"
  check "c: GET /v1/models is empty" bash -c "curl -s '$B/v1/models' | python3 -c 'import json,sys; assert json.load(sys.stdin)[\"models\"] == []'"
  local rc; rc=$(curl -s -o "$D/ready.json" -w '%{http_code}' "$B/readyz")
  info "/readyz: $rc $(cat "$D/ready.json")"
  check "c: /readyz 503 with a reason" bash -c "test $rc = 503 && grep -qi 'model' '$D/ready.json'"
  check "c: POST /v1/predict 503, not a crash" test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST \
    -H 'Content-Type: application/octet-stream' --data-binary @"$RL_TMP/digit.raw" "$B/v1/predict")" = 503
  local j; j=$(post_job "$B" '{"epochs":1,"train_limit":2000,"test_limit":500,"activate":"if_better"}')
  job_wait "$B" "$j" succeeded 120 >/dev/null
  check "c: a new job gets a fresh id (6), becomes active, /readyz 200" bash -c "curl -sf '$B/readyz' | grep -q '\"model\":6'"
  dstop; check "c: SIGTERM exits 0" test "$DRC" = 0
}

# =========================================================================
# d. The end of a job, crash by crash (issue 9 #2, #26). The daemon kills
# itself (MNISTD_CRASH_AT, a test-only hook, inert unless set) or sends
# itself SIGTERM (MNISTD_TERM_AT) at one named point; a restart without the
# hook must leave the job exactly as an uninterrupted run: succeeded with
# epochs 1..N, the same test accuracy (never NaN), its model active
# (activate "always"), one "end" event that is last and tells the truth, no
# checkpoint or temporary file left, a sound database.
D_JOB='{"epochs":2,"train_limit":3000,"test_limit":500,"activate":"always"}'
D_SETUP='{"epochs":1,"train_limit":1000,"test_limit":500,"activate":"always"}'

# d_events B JOB: checks the job's event log (stream read to the end).
d_events() {
  curl -sN --max-time 20 "$1/v1/jobs/$2/events" >"$RL_TMP/d_ev.txt"
  python3 - "$RL_TMP/d_ev.txt" "$3" "${4:-}" <<'EOF'
import json, sys
evs, cur = [], {}
for line in open(sys.argv[1]).read().split("\n"):
    if line.startswith("id: "): cur["id"] = int(line[4:])
    elif line.startswith("event: "): cur["event"] = line[7:]
    elif line.startswith("data: "): cur["data"] = json.loads(line[6:])
    elif line == "" and cur: evs.append(cur); cur = {}
ids = [e["id"] for e in evs]
assert ids == sorted(set(ids)), ids
ends = [e for e in evs if e["event"] == "end"]
assert len(ends) == 1 and evs[-1]["event"] == "end", [e["event"] for e in evs]
end = ends[0]["data"]
assert end["state"] == sys.argv[2], end
if sys.argv[3]:
    assert end.get("model_id") == int(sys.argv[3]) and end.get("activated") is True, end
st = [e["data"]["state"] for e in evs if e["event"] == "state"]
assert st[-1] == sys.argv[2] and st.count(sys.argv[2]) == 1, st
if sys.argv[2] == "succeeded":
    ep = [e["data"]["epoch"] for e in evs if e["event"] == "epoch"]
    assert ep == [1, 2], ep
EOF
}

# d_setup DIR PORT: a state with one finished job whose model is active.
d_setup() {
  dstart "$1" "$1.log" "$2" || return 1
  local j; j=$(post_job "http://127.0.0.1:$2" "$D_SETUP")
  job_wait "http://127.0.0.1:$2" "$j" succeeded 120 >/dev/null || return 1
  dstop
}

# d_wait_exit SECONDS: waits for the daemon to end by itself; DRC = status.
d_wait_exit() {
  local i
  # The daemon kills itself: bash reaps it during a sleep and would print a
  # "Killed" line; the group's stderr takes it.
  { for ((i = 0; i < $1 * 10; i++)); do kill -0 "$DPID" || break; sleep 0.1; done; } 2>/dev/null
  if kill -0 "$DPID" 2>/dev/null; then dkill9; DRC=timeout; return 1; fi
  { wait "$DPID"; DRC=$?; } 2>/dev/null; DPID=
}

# ckpt_wait STATE JOB: waits (30 s at most) for the job's first checkpoint.
ckpt_wait() {
  for _ in $(seq 300); do [ -f "$1/checkpoints/$2.ckpt" ] && return 0; sleep 0.1; done; return 1
}
# job_state B JOB: prints the job's state.
job_state() { curl -s "$1/v1/jobs/$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }

part_d() {
  echo "== d. crash (and SIGTERM) at each point of a job's end, then restart"
  local D=$RL_TMP/d P B ref point S L k m
  mkdir -p "$D"; P=$(free_port); B=http://127.0.0.1:$P
  # The reference: the same job, uninterrupted.
  d_setup "$D/ref" "$P" || { bad "d: reference set-up"; return; }
  dstart "$D/ref" "$D/ref.log" "$P" || { bad "d: reference start"; return; }
  k=$(post_job "$B" "$D_JOB"); job_wait "$B" "$k" succeeded 120 >/dev/null
  ref=$(curl -s "$B/v1/models/$(curl -s "$B/v1/jobs/$k" | jget /dev/stdin 'd["model_id"]')" | jget /dev/stdin 'd["test_accuracy"]')
  dstop
  info "reference test accuracy: $ref"
  for point in epoch_recorded checkpoint_saved last_checkpoint model_saved model_committed \
               TERM:last_checkpoint TERM:checkpoint_saved; do
    S=$D/${point/:/_}; L=$S.log
    d_setup "$S" "$P" || { bad "d: $point: set-up"; continue; }
    local var=MNISTD_CRASH_AT name=$point want=137
    if [[ $point == TERM:* ]]; then var=MNISTD_TERM_AT; name=${point#TERM:}; want=0; fi
    DWRAP=(env "$var=$name")
    dstart "$S" "$L" "$P" || { bad "d: $point: start"; DWRAP=(); continue; }
    DWRAP=()
    k=$(post_job "$B" "$D_JOB")
    d_wait_exit 120
    check "d: $point: the daemon stopped there (status $DRC, want $want)" test "$DRC" = "$want"
    dstart "$S" "$L" "$P" || { bad "d: $point: restart"; continue; }
    job_wait "$B" "$k" succeeded 120 >/dev/null
    m=$(curl -s "$B/v1/jobs/$k" | jget /dev/stdin 'd["model_id"]')
    check "d: $point: job succeeded, epochs 1,2, model $m active" bash -c "curl -s '$B/v1/jobs/$k' | python3 -c '
import json,sys; d = json.load(sys.stdin); assert d[\"state\"] == \"succeeded\" and [x[\"epoch\"] for x in d[\"metrics\"]] == [1,2], d' &&
      curl -s '$B/readyz' | grep -q '\"model\":$m'"
    check "d: $point: test accuracy equals the uninterrupted run ($ref)" bash -c "
      test \"\$(curl -s '$B/v1/models/$m' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"test_accuracy\"])')\" = '$ref'"
    check "d: $point: two models (none doubled or lost)" bash -c "curl -s '$B/v1/models' | python3 -c '
import json,sys; assert len(json.load(sys.stdin)[\"models\"]) == 2'"
    check "d: $point: one end event, last, activated, epochs 1,2" d_events "$B" "$k" succeeded "$m"
    check "d: $point: no checkpoint or temporary file left" bash -c "
      test -z \"\$(find '$S/checkpoints' -type f; find '$S' -name '*.tmp.*')\""
    dstop
    check "d: $point: database sound" db_ok "$S/mnistd.db"
  done

  # A cancel recorded, then the crash before the checkpoint goes: the job
  # stays cancelled (never resumes) and the orphan checkpoint is removed.
  S=$D/cancel; L=$S.log
  d_setup "$S" "$P" || { bad "d: cancel: set-up"; return; }
  DWRAP=(env MNISTD_CRASH_AT=cancel_recorded)
  dstart "$S" "$L" "$P"; DWRAP=()
  k=$(post_job "$B" '{"epochs":50,"train_limit":3000,"test_limit":500,"activate":"always"}')
  ckpt_wait "$S" "$k"
  curl -s -XPOST "$B/v1/jobs/$k/cancel" >/dev/null
  d_wait_exit 60
  check "d: cancel_recorded: crashed there (status $DRC)" test "$DRC" = 137
  check "d: cancel_recorded: the checkpoint was still there at the crash" test -f "$S/checkpoints/$k.ckpt"
  dstart "$S" "$L" "$P" || { bad "d: cancel: restart"; return; }
  sleep 1
  check "d: cancel_recorded: still cancelled after restart, not resumed" bash -c "
    test \"\$(curl -s '$B/v1/jobs/$k' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = cancelled"
  check "d: cancel_recorded: orphan checkpoint removed at start" test ! -e "$S/checkpoints/$k.ckpt"
  check "d: cancel_recorded: one end event (cancelled), last" d_events "$B" "$k" cancelled
  dstop

  # A failure recorded, then the crash before the checkpoint goes: the job
  # stays failed. The checkpoint cannot be written (its name is taken by a
  # directory), which fails the job after epoch 1.
  S=$D/fail; L=$S.log
  d_setup "$S" "$P" || { bad "d: fail: set-up"; return; }
  mkdir -p "$S/checkpoints/2.ckpt/x"
  DWRAP=(env MNISTD_CRASH_AT=fail_recorded)
  dstart "$S" "$L" "$P"; DWRAP=()
  k=$(post_job "$B" "$D_JOB")
  d_wait_exit 120
  check "d: fail_recorded: job 2 crashed there (status $DRC)" test "$k:$DRC" = 2:137
  rm -rf "$S/checkpoints/2.ckpt"
  dstart "$S" "$L" "$P" || { bad "d: fail: restart"; return; }
  sleep 1
  check "d: fail_recorded: still failed after restart, with the reason" bash -c "curl -s '$B/v1/jobs/$k' | python3 -c '
import json,sys; d = json.load(sys.stdin); assert d[\"state\"] == \"failed\" and \"checkpoint\" in d[\"error\"], d'"
  check "d: fail_recorded: one end event (failed), last" d_events "$B" "$k" failed
  dstop

  # A cancel accepted (202), then a shutdown before the trainer noticed it
  # (MNISTD_TERM_AT=cancel_requested): the job ends cancelled, it must not
  # come back as "interrupted" and resume at the next start.
  S=$D/cancelterm; L=$S.log
  d_setup "$S" "$P" || { bad "d: cancel+SIGTERM: set-up"; return; }
  DWRAP=(env MNISTD_TERM_AT=cancel_requested)
  dstart "$S" "$L" "$P"; DWRAP=()
  k=$(post_job "$B" '{"epochs":50,"train_limit":3000,"test_limit":500,"activate":"always"}')
  job_wait "$B" "$k" running 60 >/dev/null; sleep 0.5
  check "d: cancel then SIGTERM: cancel accepted" test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$B/v1/jobs/$k/cancel")" = 202
  d_wait_exit 60
  check "d: cancel then SIGTERM: exit 0 (status $DRC)" test "$DRC" = 0
  dstart "$S" "$L" "$P" || { bad "d: cancel+SIGTERM: restart"; return; }
  sleep 1
  check "d: cancel then SIGTERM: cancelled after the restart, not resumed" bash -c "
    test \"\$(curl -s '$B/v1/jobs/$k' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])')\" = cancelled &&
    ! grep -q 'job $k was interrupted' '$L'"
  check "d: cancel then SIGTERM: one end event (cancelled)" d_events "$B" "$k" cancelled
  dstop

  # Recording the activation fails (MNISTD_FAIL_AT=activate: as on a full
  # disk): the end event must not claim an activation; the job fails with
  # the reason, nothing half-recorded, the old model stays active.
  S=$D/actfail; L=$S.log
  d_setup "$S" "$P" || { bad "d: activation failure: set-up"; return; }
  DWRAP=(env MNISTD_FAIL_AT=activate)
  dstart "$S" "$L" "$P"; DWRAP=()
  k=$(post_job "$B" "$D_JOB")
  job_wait "$B" "$k" "failed|succeeded" 120 >/dev/null
  check "d: activation failure: job failed, saying the disk is full" bash -c "curl -s '$B/v1/jobs/$k' | python3 -c '
import json,sys; d = json.load(sys.stdin); assert d[\"state\"] == \"failed\" and \"disk is full\" in d[\"error\"] and d[\"model_id\"] is None, d'"
  check "d: activation failure: end event says failed, no activation claimed" bash -c "
    curl -sN '$B/v1/jobs/$k/events?format=ndjson' | tail -1 | python3 -c '
import json,sys; e = json.loads(sys.stdin.read()); assert e[\"event\"] == \"end\" and e[\"data\"][\"state\"] == \"failed\" and not e[\"data\"].get(\"activated\"), e'"
  check "d: activation failure: model 1 still active, no model 2 (record or file)" bash -c "
    curl -s '$B/readyz' | grep -q '\"model\":1' && test \"\$(curl -s -o /dev/null -w '%{http_code}' '$B/v1/models/2')\" = 404 &&
    test ! -e '$S/models/2.model' -a ! -e '$S/models/2.json'"
  dstop

  # The directory fsync after a model's rename fails (EIO): the save is
  # reported as failed, not recorded (issue 9 #27).
  if cc -shared -fPIC -o "$D/fsync_fail.so" tests/reliability/fsync_fail.c -ldl 2>"$D/cc.log"; then
    S=$D/dirsync; L=$S.log
    d_setup "$S" "$P" || { bad "d: dir fsync: set-up"; return; }
    DWRAP=(env LD_PRELOAD="$D/fsync_fail.so" FSYNC_FAIL_DIR=/models)
    dstart "$S" "$L" "$P"; DWRAP=()
    k=$(post_job "$B" "$D_JOB")
    job_wait "$B" "$k" "failed|succeeded" 120 >/dev/null
    check "d: directory fsync failure: job failed naming it, model not recorded" bash -c "curl -s '$B/v1/jobs/$k' | python3 -c '
import json,sys; d = json.load(sys.stdin); assert d[\"state\"] == \"failed\" and \"fsync of the directory\" in d[\"error\"], d' &&
      test \"\$(curl -s -o /dev/null -w '%{http_code}' '$B/v1/models/2')\" = 404"
    dstop
    # A state directory created new: its entry is fsynced into the parent
    # and a failure stops the start with a message.
    mkdir -p "$D/parent"
    FSYNC_FAIL_DIR=/parent LD_PRELOAD="$D/fsync_fail.so" timeout 20 "$BIN" serve --listen "127.0.0.1:$P" \
      --state-dir "$D/parent/state" --data-dir "$DATA" --no-bootstrap >"$D/parent.log" 2>&1
    check "d: new state directory: failed fsync of its parent stops the start (status $?)" \
      grep -q 'Input/output error' "$D/parent.log"
  else
    bad "d: cannot build the fsync shim: $(cat "$D/cc.log")"
  fi

  # A model's DELETE killed between its commit and its unlinks
  # (MNISTD_CRASH_AT=model_deleted): the restart removes the files of the
  # model nobody records any more, and keeps the others.
  S=$D/delete; L=$S.log
  d_setup "$S" "$P" || { bad "d: delete: set-up"; return; }
  dstart "$S" "$L" "$P" || { bad "d: delete: start"; return; }
  k=$(post_job "$B" '{"epochs":1,"train_limit":1000,"test_limit":500,"activate":"never"}')
  job_wait "$B" "$k" succeeded 120 >/dev/null
  m=$(curl -s "$B/v1/jobs/$k" | jget /dev/stdin 'd["model_id"]')
  dstop
  DWRAP=(env MNISTD_CRASH_AT=model_deleted)
  dstart "$S" "$L" "$P" || { bad "d: delete: restart"; DWRAP=(); return; }
  DWRAP=()
  { curl -s -XDELETE "$B/v1/models/$m" >/dev/null; } 2>/dev/null # it dies during this
  d_wait_exit 30
  check "d: model_deleted: crashed after the commit (status $DRC), model $m's files still there" \
    bash -c "test '$DRC' = 137 && test -f '$S/models/$m.model' -a -f '$S/models/$m.json'"
  dstart "$S" "$L" "$P" || { bad "d: delete: second restart"; return; }
  check "d: model_deleted: model $m gone (404), its files removed at the start, logged" bash -c "
    test \"\$(curl -s -o /dev/null -w '%{http_code}' '$B/v1/models/$m')\" = 404 &&
    test ! -e '$S/models/$m.model' -a ! -e '$S/models/$m.json' &&
    grep -q 'removed $S/models/$m.model: no model $m is recorded' '$L'"
  check "d: model_deleted: model 1 kept (file, listed, active, predicts)" bash -c "
    test -f '$S/models/1.model' && curl -s '$B/readyz' | grep -q '\"model\":1'" 
  check "d: model_deleted: predictions still work" predict_ok "$B"
  dstop
  check "d: model_deleted: database sound" db_ok "$S/mnistd.db"
}

# =========================================================================
# e. The end of a job when recording it fails (MNISTD_FAIL_AT=finish, as on
# a full disk): the checkpoint must stay and the job must not start over;
# and a cancel (202) followed by kill -9 before the trainer noticed it: the
# request is on record, so the restart ends the job cancelled.
part_e() {
  echo "== e. a failed record of a job's end keeps its checkpoint; a cancel survives kill -9"
  local D=$RL_TMP/e P B S L k
  mkdir -p "$D"; P=$(free_port); B=http://127.0.0.1:$P
  S=$D/finishfail; L=$S.log
  DWRAP=(env MNISTD_FAIL_AT=finish)
  dstart "$S" "$L" "$P" || { bad "e: start"; DWRAP=(); return; }
  k=$(post_job "$B" '{"epochs":50,"train_limit":3000,"test_limit":500,"activate":"never"}')
  ckpt_wait "$S" "$k"
  check "e: cancel accepted (202; the request itself is on record)" \
    test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$B/v1/jobs/$k/cancel")" = 202
  for _ in $(seq 100); do grep -q "could not record state cancelled" "$L" && break; sleep 0.1; done
  check "e: finish record fails: logged, the job is not shown as ended" bash -c "
    grep -q 'job $k: could not record state cancelled' '$L' && test '$(job_state "$B" "$k")' = running"
  check "e: finish record fails: the checkpoint stays" test -f "$S/checkpoints/$k.ckpt"
  # Its runner is gone: a second cancel must try to end it (and say that it
  # could not), not answer 202 and leave it running.
  for _ in $(seq 100); do grep -q "job $k: its end is not on record" "$L" && break; sleep 0.1; done
  sleep 0.5 # the runner has returned (its last log line), the loop sees it
  check "e: cancel of the stranded job tries to end it: 507 (the disk is still full)" \
    test "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$B/v1/jobs/$k/cancel")" = 507
  check "e: ... the job still shows running, its checkpoint stays" bash -c "
    test '$(job_state "$B" "$k")' = running && test -f '$S/checkpoints/$k.ckpt'"
  dstop
  # Still failing at the restart: the job cannot be ended there either; it
  # resumes from its checkpoint (never from scratch), stops at its first
  # batch, and the checkpoint still stays.
  local before; before=$(grep -c "job $k: could not record state cancelled" "$L")
  dstart "$S" "$L" "$P" || { bad "e: restart"; DWRAP=(); return; }
  DWRAP=()
  for _ in $(seq 300); do
    [ "$(grep -c "job $k: could not record state cancelled" "$L")" -ge $((before + 2)) ] && break; sleep 0.1
  done
  check "e: restart, end still unrecordable: resumed from the checkpoint, not from scratch" \
    bash -c "grep -Eq 'job $k: resuming after epoch [1-9]' '$L'"
  check "e: restart, end still unrecordable: the checkpoint stays" test -f "$S/checkpoints/$k.ckpt"
  dstop
  local resumed; resumed=$(grep -c "job $k: resuming" "$L")
  dstart "$S" "$L" "$P" || { bad "e: restart"; return; }
  check "e: a restart that can record it ends the job cancelled, without resuming it" bash -c "
    test '$(job_state "$B" "$k")' = cancelled && test \"\$(grep -c 'job $k: resuming' '$L')\" = $resumed"
  check "e: one end event (cancelled), last" d_events "$B" "$k" cancelled
  check "e: checkpoint removed once the end is on record" test ! -e "$S/checkpoints/$k.ckpt"
  dstop
  check "e: database sound" db_ok "$S/mnistd.db"

  # kill -9 right after the 202 of a cancel (MNISTD_CRASH_AT=cancel_requested),
  # before the trainer noticed it.
  S=$D/cancelkill; L=$S.log
  DWRAP=(env MNISTD_CRASH_AT=cancel_requested)
  dstart "$S" "$L" "$P" || { bad "e: cancel+kill: start"; DWRAP=(); return; }
  DWRAP=()
  k=$(post_job "$B" '{"epochs":50,"train_limit":3000,"test_limit":500,"activate":"never"}')
  ckpt_wait "$S" "$k"
  { curl -s -XPOST "$B/v1/jobs/$k/cancel" >/dev/null; } 2>/dev/null # it dies during this
  d_wait_exit 60
  check "e: cancel then kill -9: crashed there (status $DRC)" test "$DRC" = 137
  dstart "$S" "$L" "$P" || { bad "e: cancel+kill: restart"; return; }
  sleep 1
  check "e: cancel then kill -9: cancelled after the restart, not resumed" bash -c "
    test '$(job_state "$B" "$k")' = cancelled && grep -q 'job $k: cancelled before the restart' '$L' && ! grep -q 'job $k: resuming' '$L'"
  check "e: cancel then kill -9: one end event (cancelled), last" d_events "$B" "$k" cancelled
  check "e: cancel then kill -9: checkpoint removed" test ! -e "$S/checkpoints/$k.ckpt"
  dstop
  check "e: cancel then kill -9: database sound" db_ok "$S/mnistd.db"
}

for p in $PARTS; do "part_$p"; done
echo "faults: took $(elapsed "$T0" "$(now)")s"
echo "faults: $pass passed, $fail failed"
[ "$fail" = 0 ]
