#!/usr/bin/env bash
# Command-line behaviour of build/mnistd: help, version, usage errors with
# exit code 2, a short real training with --json, and predict on IDX, raw
# and PGM inputs. Needs MNISTD_BIN and MNISTD_DATA.
set -u
BIN=${MNISTD_BIN:-build/mnistd}
DATA=${MNISTD_DATA:-data}
T=$(mktemp -d)
DPID=
trap '[ -n "$DPID" ] && kill "$DPID" 2>/dev/null; rm -rf "$T"' EXIT
pass=0; fail=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name"; fi
}
exit_code() { "$@" >"$T/out" 2>"$T/err"; echo $?; }

check "--help exits 0 and lists commands" bash -c "'$BIN' --help | grep -q 'train'"
check "--version prints the version" bash -c "'$BIN' --version | grep -Eq '^mnistd [0-9]+\.[0-9]+'"
check "--version names the oneDNN version and ISA" \
  bash -c "'$BIN' --version | grep -Eq '^kernels: oneDNN [0-9]+\.[0-9]+\.[0-9]+, isa [a-z0-9_]+, matmul '"
check "--version shows a capped ISA (ONEDNN_MAX_CPU_ISA=SSE41)" \
  bash -c "ONEDNN_MAX_CPU_ISA=SSE41 '$BIN' --version | grep -q ', isa sse41,'"
check "train --help" bash -c "'$BIN' train --help | grep -q -- '--optimizer'"
for bad in "train --epochs 0" "train --epochs abc" "train --lr -1" "train --lr nan" \
           "train --arch lenet" "train --optimizer adagrad" "train --bogus" "train --batch-size" \
           "train extra" "predict" "predict --model" "frobnicate" "train --threads 0"; do
  # shellcheck disable=SC2086
  rc=$(exit_code "$BIN" $bad)
  lines=$(wc -l < "$T/err")
  check "'$bad' exits 2 with one line" test "$rc" = 2 -a "$lines" = 1
done
rc=$(exit_code "$BIN" train --data-dir "$T/nowhere")
check "missing data exits 1 and says make data" bash -c "test $rc = 1 && grep -q 'make data' '$T/err'"

# A short real training, JSON lines with the documented keys.
"$BIN" train --data-dir "$DATA" --train-limit 3000 --test-limit 1000 --epochs 2 --json \
  --out "$T/m.model" > "$T/train.json" 2> "$T/train.err"
check "train --json succeeds" test $? = 0
check "train --json prints one line per epoch" test "$(wc -l < "$T/train.json")" = 2
check "train --json has every key" python3 -c "
import json,sys
for l in open('$T/train.json'):
    d = json.loads(l)
    assert set(d) == {'epoch','loss','accuracy','val_loss','val_accuracy','seconds','samples_per_second'}, d
    assert 0 <= d['val_accuracy'] <= 1 and d['seconds'] > 0
"
# Byte-compatible with what it printed before the epoch record was shared
# with the daemon (issue 10): key order and fixed decimals, exactly.
check "train --json lines are byte-exact (key order, decimals)" python3 -c "
import re
pat = re.compile(r'^\{\"epoch\":[0-9]+,\"loss\":-?[0-9]+\.[0-9]{6},\"accuracy\":[0-9]+\.[0-9]{6},'
                 r'\"val_loss\":-?[0-9]+\.[0-9]{6},\"val_accuracy\":[0-9]+\.[0-9]{6},'
                 r'\"seconds\":[0-9]+\.[0-9]{4},\"samples_per_second\":[0-9]+\.[0-9]\}$')
lines = open('$T/train.json').read().split('\n')
assert lines[-1] == '' and len(lines) == 3, lines
for i, l in enumerate(lines[:-1]):
    assert pat.match(l), l
    assert l.startswith('{\"epoch\":%d,' % (i + 1)), l
"
check "model file written" test -s "$T/m.model"
check "no temp files next to the model" test "$(ls "$T" | grep -c tmp)" = 0

# Predict: IDX with labels, raw bytes, a PGM picture, and a broken model.
"$BIN" predict --model "$T/m.model" --labels "$DATA/mnist/t10k-labels-idx1-ubyte" --limit 500 \
  "$DATA/mnist/t10k-images-idx3-ubyte" > "$T/pred.txt"
check "predict IDX + labels reports accuracy > 0.8" python3 -c "
import re; a = float(re.search(r'accuracy: ([0-9.]+)', open('$T/pred.txt').read()).group(1)); assert a > 0.8, a"
check "predict prints one line per image" test "$(grep -c '\]: ' "$T/pred.txt")" = 500
head -c $((16 + 784 * 3)) "$DATA/mnist/t10k-images-idx3-ubyte" | tail -c $((784 * 3)) > "$T/three.raw"
"$BIN" predict --model "$T/m.model" --json "$T/three.raw" > "$T/raw.json"
check "predict raw: 3 JSON lines, labels 7 2 1" python3 -c "
import json; ls = [json.loads(l)['label'] for l in open('$T/raw.json')]; assert ls == [7, 2, 1], ls"
python3 -c "
d = open('$T/three.raw','rb').read()[:784]
rows = [bytes(255 - d[(y//10)*28 + x//10] for x in range(280)) for y in range(280)]
open('$T/seven.pgm','wb').write(b'P5\n280 280\n255\n' + b''.join(rows))"
check "predict a 280x280 black-on-white PGM as 7" bash -c "'$BIN' predict --model '$T/m.model' --json '$T/seven.pgm' | grep -q '\"label\":7'"
head -c 1000 "$T/m.model" > "$T/cut.model"
rc=$(exit_code "$BIN" predict --model "$T/cut.model" "$T/three.raw")
check "truncated model: exit 1 with a message naming the file" bash -c "test $rc = 1 && grep -q 'cut.model: truncated' '$T/err'"
rc=$(exit_code "$BIN" predict --model "$T/m.model" /etc/hostname)
check "unreadable image file: exit 1 with a message" bash -c "test $rc = 1 && grep -q hostname '$T/err'"

# H4: train --state-dir DIR --dataset NAME trains on a set uploaded to that
# daemon (3 classes here), read-only: beside the running daemon, and after
# it stopped with a leftover upload file that only the daemon may remove.
HERE=$(cd "$(dirname "$0")" && pwd)
python3 "$HERE/../datasets/make_uploads.py" three-tar "$T/three.tar" "$DATA/mnist" 300
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --listen 127.0.0.1:$PORT --state-dir "$T/state" --data-dir "$DATA" --no-bootstrap \
  > "$T/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/x-tar' --data-binary "@$T/three.tar" \
  "http://127.0.0.1:$PORT/v1/datasets?name=three" > "$T/up.code"
check "upload of a 3-class set for the CLI: 201" test "$(cat "$T/up.code")" = 201
# The CLI must not change the daemon's state: it opens the database read-only,
# so mnistd.db and mnistd.db-wal are the same bytes after each run (the old
# read-write open folded the running daemon's log into the file at close).
dbsum() { for f in mnistd.db mnistd.db-wal mnistd.db-shm; do
  if [ -e "$T/state/$f" ]; then [ $f = mnistd.db-shm ] && echo "$f" || sha256sum < "$T/state/$f"
  else echo "no $f"; fi; done; }
before=$(dbsum)
check "the daemon's write-ahead log holds the upload's record" test -s "$T/state/mnistd.db-wal"
"$BIN" train --state-dir "$T/state" --dataset three --epochs 2 --json > "$T/three.json" 2> "$T/three.err"
check "train --state-dir --dataset (an uploaded set, daemon running): 2 epochs, accuracy > 0.9" python3 -c "
import json; ls = [json.loads(l) for l in open('$T/three.json')]
assert len(ls) == 2 and ls[-1]['val_accuracy'] > 0.9, ls"
check "... mnistd.db and mnistd.db-wal byte for byte as before (daemon running)" test "$(dbsum)" = "$before"
# The output width is checked against the set's classes: 3 (or MNIST's 10,
# adapted) is taken, another width is refused naming the set's count.
printf '{"layers":[{"type":"dense","units":3}]}' > "$T/l3.json"
printf '{"layers":[{"type":"dense","units":5}]}' > "$T/l5.json"
"$BIN" train --state-dir "$T/state" --dataset three --layers "$T/l3.json" --epochs 1 --json > "$T/l3.out" 2>&1
check "--layers ending in 3 units on the 3-class set: trains" grep -q val_accuracy "$T/l3.out"
rc=$(exit_code "$BIN" train --state-dir "$T/state" --dataset three --layers "$T/l5.json" --epochs 1)
check "--layers ending in 5 units on the 3-class set: exit 1 naming its 3 classes" \
  bash -c "test $rc = 1 && grep -q '5 units, but the data set has 3 classes' '$T/err'"
job() { curl -s -o "$T/job.out" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"dataset\":\"three\",\"epochs\":1,\"layers\":[{\"type\":\"dense\",\"units\":$1}]}" \
  "http://127.0.0.1:$PORT/v1/jobs"; }
check "POST /v1/jobs, layers ending in 3 units on the 3-class set: 202" test "$(job 3)" = 202
code=$(job 5)
check "... in 5 units: 400 naming the set's 3 classes" \
  bash -c "test $code = 400 && grep -q '5 units, but the data set has 3 classes' '$T/job.out'"
kill "$DPID"; wait "$DPID" 2>/dev/null; DPID=
touch "$T/state/datasets/.upload-left"
before=$(dbsum)
check "a clean stop folds the log back: no -wal, no -shm" \
  bash -c "[ ! -e '$T/state/mnistd.db-wal' ] && [ ! -e '$T/state/mnistd.db-shm' ]"
"$BIN" train --state-dir "$T/state" --dataset three --epochs 1 --out "$T/three.model" > "$T/three.txt" 2>&1
check "... daemon stopped: mnistd.db byte for byte as before, no -wal or -shm created" \
  test "$(dbsum)" = "$before"
check "... daemon stopped: the header says so, the model has 3 outputs" bash -c "
  grep -q 'on three: .* (uploaded set)' '$T/three.txt' &&
  '$BIN' predict --model '$T/three.model' --json '$T/three.raw' | head -1 | python3 -c '
import json,sys; assert len(json.load(sys.stdin)[\"probabilities\"]) == 3'"
check "... read-only: the daemon's leftover upload file is still there" test -e "$T/state/datasets/.upload-left"
rc=$(exit_code "$BIN" train --state-dir "$T/state" --dataset nothere)
check "an unknown set: exit 1, naming it and the sets that are there" \
  bash -c "test $rc = 1 && grep -q 'data set nothere not found in .*uploaded there: three' '$T/err'"
rc=$(exit_code "$BIN" train --dataset three)
check "an uploaded set without --state-dir: exit 2 saying to give it" \
  bash -c "test $rc = 2 && grep -q 'give its --state-dir' '$T/err'"
rc=$(exit_code "$BIN" train --state-dir "$T/nowhere" --dataset three)
check "--state-dir without a daemon's state: exit 1, saying which --state-dir to give, nothing created" \
  bash -c "test $rc = 1 && grep -q 'no daemon state here (no mnistd.db): give the --state-dir of the daemon' '$T/err' &&
           ! test -e '$T/nowhere'"
mkdir "$T/empty"
rc=$(exit_code "$BIN" train --state-dir "$T/empty" --dataset three)
check "... an existing directory without mnistd.db: the same, and it stays empty" \
  bash -c "test $rc = 1 && grep -q 'no daemon state here' '$T/err' && [ -z \"\$(ls -A '$T/empty')\" ]"
# A daemon killed (SIGKILL) after an upload: the set's record is only in the
# log it left. The CLI reads it through the log and its -shm, and leaves both
# files as they were; a log whose -shm is gone is refused (reading it would
# create one) with what to do.
"$BIN" serve --listen 127.0.0.1:$PORT --state-dir "$T/state" --data-dir "$DATA" --no-bootstrap \
  >> "$T/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/x-tar' --data-binary "@$T/three.tar" \
  "http://127.0.0.1:$PORT/v1/datasets?name=killed" > "$T/up.code"
{ kill -9 "$DPID"; wait "$DPID"; } 2>/dev/null; DPID=
before=$(dbsum)
check "upload, then SIGKILL: 201, the log and its -shm left behind" \
  bash -c "[ $(cat "$T/up.code") = 201 ] && [ -s '$T/state/mnistd.db-wal' ] && [ -e '$T/state/mnistd.db-shm' ]"
rc=$(exit_code "$BIN" train --state-dir "$T/state" --dataset killed --epochs 1 --json)
check "... train on the set recorded only in the log: trains" bash -c "test $rc = 0 && grep -q val_accuracy '$T/out'"
check "... mnistd.db and mnistd.db-wal byte for byte as before (daemon killed)" test "$(dbsum)" = "$before"
cp -a "$T/state" "$T/noshm" && rm -f "$T/noshm/mnistd.db-shm"
rc=$(exit_code "$BIN" train --state-dir "$T/noshm" --dataset killed --epochs 1)
check "... a log without its -shm: exit 1 saying to start or stop the daemon, no -shm created" \
  bash -c "test $rc = 1 && grep -q 'has a write-ahead log but no .*start the daemon on' '$T/err' &&
           [ ! -e '$T/noshm/mnistd.db-shm' ]"

# Issue 9 #23: a build without the page's chart library (no node_modules/)
# stops and says what to run, instead of embedding a page without charts.
if [ -f Makefile ] && [ -f scripts/embed.c ]; then
  mkdir -p "$T/src" && cp -R Makefile core server web scripts "$T/src/"
  # (a clean environment: under `make unit` MAKEFLAGS would pass BUILD, SAN...)
  (cd "$T/src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make BUILD=build build/gen/srv_assets_data.c) > "$T/mk.out" 2>&1
  check "make without node_modules/ fails, naming the file and 'make deps'" bash -c "
    ! test -e '$T/src/build/gen/srv_assets_data.c' && grep -q 'uPlot.iife.min.js is missing' '$T/mk.out' &&
    grep -q \"make deps\" '$T/mk.out'"
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
