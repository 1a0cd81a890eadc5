#!/usr/bin/env bash
# Valgrind memcheck over a plain (non-ASan) build:
#   1. the daemon, through a wrapper that execs valgrind, driven through a
#      short scenario covering every route: start, a tiny job and its SSE /
#      ndjson streams, predictions as raw/JSON/PNG/PGM/TF-Serving, bad input
#      of every kind, model activate/download/evaluate/delete, cancel, a
#      queued job, SIGTERM while training, restart + resume from the
#      checkpoint, SIGTERM again;
#   2. the CLI: `mnistd train` (tiny) and `mnistd predict` (IDX, PNG, JSON);
#   3. every unit test binary build/tests/test_* (VG_SKIP=name,name leaves
#      tests out, through the LD_PRELOAD shim tests/reliability/cmocka_skip.c);
#   4. tests/test_server.sh itself with MNISTD_BIN pointing at a wrapper that
#      execs valgrind (~12 minutes here; VG_SERVER_SH=0 skips it). Its
#      SIGKILLed daemon leaves a log without a summary; that one is expected.
# The daemon and CLI read a 3,000/500-image copy of MNIST (real IDX files).
# OPENBLAS_CORETYPE=Sandybridge (AVX without FMA) for every process: memcheck
# (3.19) emulates FMA instructions with a slow C helper, which made OpenBLAS's
# default Haswell kernels ~3000x slower than native (an epoch of 500 images
# took 28 s; 2 s with this setting). The C code itself is built without FMA.
# Every process writes DIR/vg.<pid>.log; a log fails on "definitely lost"
# > 0 bytes or any Invalid read/write/free, or when a mnistd process has no
# ERROR SUMMARY (it did not exit normally). OpenBLAS's "still reachable"
# blocks are not errors. Without the FMA workaround tests/test_server.sh was
# far too slow for its own timeouts under valgrind; with it, it passes.
# Prints "valgrind: N passed, N failed".
#   scripts/valgrind.sh          (KEEP=1 keeps the logs)
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=../tests/reliability/lib.sh
. tests/reliability/lib.sh

command -v valgrind >/dev/null || { echo "valgrind: not installed (apt-get install valgrind)"; exit 1; }
T0=$(now)
UNITS=$(ls tests/test_*.c | sed 's|^tests/\(.*\)\.c$|build/tests/\1|')
# shellcheck disable=SC2086
if ! make -s build/mnistd $UNITS >"$RL_TMP/make.log" 2>&1; then
  tail -20 "$RL_TMP/make.log"; echo "valgrind: build failed"; exit 1
fi
if nm -D "$BIN" 2>/dev/null | grep -q __asan_init; then echo "valgrind: $BIN is an ASan build; use build/mnistd"; exit 1; fi
VG=$RL_TMP/vg; mkdir -p "$VG"
VGOPTS=(--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
        --show-leak-kinds=definite --track-origins=no --num-callers=30)
# Forced (this sandbox exports OPENBLAS_CORETYPE=Haswell); VG_OPENBLAS_CORETYPE overrides.
export OPENBLAS_CORETYPE=${VG_OPENBLAS_CORETYPE:-Sandybridge}
# The matrix products are oneDNN's now: the same reason caps its JIT at AVX
# (no FMA; memcheck has no AVX-512 either). VG_ONEDNN_MAX_CPU_ISA overrides.
export ONEDNN_MAX_CPU_ISA=${VG_ONEDNN_MAX_CPU_ISA:-AVX}
cat >"$RL_TMP/mnistd-vg" <<EOF
#!/bin/sh
exec valgrind ${VGOPTS[*]} --log-file=$VG/vg.%p.log "$BIN" "\$@"
EOF
chmod +x "$RL_TMP/mnistd-vg"
VBIN=$RL_TMP/mnistd-vg
TOKEN=vg-token
auth=(-H "Authorization: Bearer $TOKEN")
D=$RL_TMP; S=$D/state; L=$D/daemon.log
P=$(free_port); B=http://127.0.0.1:$P
# A small copy of MNIST (the first 3,000 training and 500 test images, real
# IDX files): under memcheck, loading 60,000 images and evaluating 10,000
# takes minutes; the code paths are the same.
FULL_DATA=$DATA; DATA=$RL_TMP/data
mkdir -p "$DATA/mnist"
python3 - "$FULL_DATA/mnist" "$DATA/mnist" 3000 500 <<'PY'
import struct, sys
src, dst, ntr, nte = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for name, n in (("train", ntr), ("t10k", nte)):
    img = open("%s/%s-images-idx3-ubyte" % (src, name), "rb").read()
    lab = open("%s/%s-labels-idx1-ubyte" % (src, name), "rb").read()
    open("%s/%s-images-idx3-ubyte" % (dst, name), "wb").write(struct.pack(">IIII", 2051, n, 28, 28) + img[16:16 + 784 * n])
    open("%s/%s-labels-idx1-ubyte" % (dst, name), "wb").write(struct.pack(">II", 2049, n) + lab[8:8 + n])
PY
req() { curl -s --max-time 120 -o "$D/body" -w '%{http_code}' "$@"; }
expect() { # status, name, curl args...
  local want=$1 name=$2 got; shift 2
  got=$(req "$@")
  [ "$got" = "$want" ] && ok "$name: $got" || bad "$name: got $got, wanted $want: $(head -c 200 "$D/body")"
}

echo "== 1. the daemon under memcheck"
REAL_BIN=$BIN; BIN=$VBIN # dstart runs $BIN: the wrapper
DSTART_WAIT=120 dstart "$S" "$L" "$P" --api-token "$TOKEN" || { bad "daemon starts under valgrind"; exit 1; }
info "started under valgrind (pid $DPID)"
python3 - "$DATA/mnist" "$D" <<'PY'
import json, struct, sys, zlib
d, t = sys.argv[1], sys.argv[2]
img = open(d + "/t10k-images-idx3-ubyte", "rb").read()[16:16 + 784 * 10]
open(t + "/one.raw", "wb").write(img[:784])
open(t + "/ten.raw", "wb").write(img)
open(t + "/one.json", "w").write(json.dumps({"image": list(img[:784])}))
open(t + "/two.json", "w").write(json.dumps({"images": [list(img[:784]), list(img[784:1568])]}))
px = img[:784]
open(t + "/tfs.json", "w").write(json.dumps({"instances": [[v / 255 for v in px], [[v / 255 for v in px[r*28:(r+1)*28]] for r in range(28)]]}))
def big(k, s=4):
    p = img[784 * k: 784 * (k + 1)]
    return [[255 - p[(y // s) * 28 + x // s] for x in range(28 * s)] for y in range(28 * s)]
def png(rows, path, rgba=False):
    w, h = len(rows[0]), len(rows)
    if rgba:
        raw = b"".join(b"\0" + b"".join(bytes([0, 0, 0, 255 - v]) for v in r) for r in rows)
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    else:
        raw = b"".join(b"\0" + bytes(r) for r in rows)
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png(big(0), t + "/seven.png"); png(big(1), t + "/rgba.png", rgba=True)
rows = big(2, 3)
open(t + "/one.pgm", "wb").write(b"P5\n%d %d\n255\n" % (len(rows[0]), len(rows)) + b"".join(bytes(r) for r in rows))
open(t + "/one2.pgm", "w").write("P2\n%d %d\n255\n" % (len(rows[0]), len(rows)) + "\n".join(" ".join(map(str, r)) for r in rows))
b = bytearray(open(t + "/seven.png", "rb").read()); b[60] ^= 0xff
open(t + "/broken.png", "wb").write(bytes(b[:len(b) - 20]))
open(t + "/deep.json", "w").write("[" * 20000 + "]" * 20000)
PY
head -c $((9 * 1024 * 1024)) /dev/zero >"$D/huge.bin"

expect 200 "GET /healthz" "$B/healthz"
expect 503 "GET /readyz without a model" "$B/readyz"
expect 200 "GET /v1/datasets" "$B/v1/datasets"
check "  mnist 3000/500 (the small copy)" grep -q '"train":3000,"test":500' "$D/body"
expect 200 "GET / (page)" "$B/"
etag=$(curl -s -D - -o /dev/null "$B/" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag" {print $2}')
expect 304 "GET / with If-None-Match" -H "If-None-Match: $etag" "$B/"
expect 401 "POST /v1/jobs without the token" -XPOST -H 'Content-Type: application/json' -d '{}' "$B/v1/jobs"
expect 202 "POST /v1/jobs (1 epoch, 500 images)" -XPOST "${auth[@]}" -H 'Content-Type: application/json' \
  -d '{"epochs":1,"train_limit":500,"test_limit":200,"activate":"always"}' "$B/v1/jobs"
timeout 900 curl -sN "$B/v1/jobs/1/events" >"$D/sse.txt"
check "SSE stream of job 1 ends with end/succeeded" bash -c "tail -3 '$D/sse.txt' | grep -q '\"state\":\"succeeded\"'"
curl -sN -H 'Last-Event-ID: 2' "$B/v1/jobs/1/events" >"$D/sse2.txt"
check "SSE replay after Last-Event-ID" grep -q '^event: end' "$D/sse2.txt"
curl -sN "$B/v1/jobs/1/events?format=ndjson" >"$D/nd.txt"
check "ndjson replay" grep -q '"event":"end"' "$D/nd.txt"
expect 200 "GET /readyz with model 1" "$B/readyz"
expect 200 "GET /v1/jobs/1" "$B/v1/jobs/1"
expect 200 "GET /v1/jobs?state=succeeded&limit=5" "$B/v1/jobs?state=succeeded&limit=5"
O=(-XPOST -H 'Content-Type: application/octet-stream')
expect 200 "predict raw 1" "${O[@]}" --data-binary @"$D/one.raw" "$B/v1/predict"
check "  label 7" grep -q '"label":7' "$D/body"
expect 200 "predict raw batch of 10" "${O[@]}" --data-binary @"$D/ten.raw" "$B/v1/predict"
expect 200 "predict JSON image, explain" -XPOST -H 'Content-Type: application/json' --data-binary @"$D/one.json" "$B/v1/predict?explain=1"
expect 200 "predict JSON images" -XPOST -H 'Content-Type: application/json' --data-binary @"$D/two.json" "$B/v1/predict"
expect 200 "predict PNG" -XPOST -H 'Content-Type: image/png' --data-binary @"$D/seven.png" "$B/v1/predict"
expect 200 "predict RGBA PNG, no content type" -XPOST --data-binary @"$D/rgba.png" "$B/v1/predict"
expect 200 "predict PGM P5" -XPOST -H 'Content-Type: image/x-portable-graymap' --data-binary @"$D/one.pgm" "$B/v1/predict"
expect 200 "predict PGM P2" -XPOST -H 'Content-Type: image/x-portable-graymap' --data-binary @"$D/one2.pgm" "$B/v1/predict"
expect 200 "TF-Serving predict" -XPOST -H 'Content-Type: application/json' --data-binary @"$D/tfs.json" "$B/v1/models/mnist:predict"
J=(-XPOST "${auth[@]}" -H 'Content-Type: application/json')
expect 400 "malformed JSON" "${J[@]}" -d '{"epochs":' "$B/v1/jobs"
expect 400 "deep nesting" "${J[@]}" --data-binary @"$D/deep.json" "$B/v1/jobs"
expect 400 "NaN" "${J[@]}" -d '{"epochs":NaN}' "$B/v1/jobs"
expect 400 "unknown field" "${J[@]}" -d '{"epoch":3}' "$B/v1/jobs"
expect 400 "wrong type" "${J[@]}" -d '{"epochs":"3"}' "$B/v1/jobs"
expect 400 "bad optimizer" "${J[@]}" -d '{"optimizer":{"name":"adagrad"}}' "$B/v1/jobs"
expect 400 "Infinity in an image" -XPOST -H 'Content-Type: application/json' -d '{"image":[Infinity]}' "$B/v1/predict"
expect 400 "image of 3 pixels" -XPOST -H 'Content-Type: application/json' -d '{"image":[1,2,3]}' "$B/v1/predict"
expect 400 "TF-Serving bad instances" -XPOST -H 'Content-Type: application/json' -d '{"instances":[[1,2]]}' "$B/v1/models/mnist:predict"
expect 415 "wrong content type for jobs" -XPOST "${auth[@]}" -H 'Content-Type: text/csv' -d 'a,b' "$B/v1/jobs"
expect 415 "wrong content type for predict" -XPOST -H 'Content-Type: image/jpeg' --data-binary @"$D/seven.png" "$B/v1/predict"
expect 400 "broken PNG" -XPOST -H 'Content-Type: image/png' --data-binary @"$D/broken.png" "$B/v1/predict"
expect 400 "raw bytes not a multiple of 784" "${O[@]}" --data-binary 'hello' "$B/v1/predict"
expect 413 "body over --max-body" "${O[@]}" --data-binary @"$D/huge.bin" "$B/v1/predict"
expect 405 "wrong method" -XPUT "$B/v1/jobs"
expect 404 "unknown path" "$B/v1/nothing"
expect 404 "unknown job" "$B/v1/jobs/999"
expect 404 "encoded traversal" --path-as-is "$B/%2e%2e/%2e%2e/etc/passwd"
expect 400 "bad state filter" "$B/v1/jobs?state=sleeping"
expect 404 "predict with an unknown model" "${O[@]}" --data-binary @"$D/one.raw" "$B/v1/predict?model=99"
python3 - "$P" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 784\r\n\r\n" + b"\0" * 100)
s.close()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/jobs/1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); s.recv(10); s.close()
PY
expect 202 "second job (relu, never)" "${J[@]}" -d '{"epochs":1,"train_limit":300,"test_limit":100,"arch":"relu","activate":"never"}' "$B/v1/jobs"
job_wait "$B" 2 succeeded 900 >/dev/null; check "job 2 succeeded" test $? = 0
expect 200 "GET /v1/models" "$B/v1/models"
expect 200 "GET /v1/models/2" "$B/v1/models/2"
expect 200 "GET /v1/models/2/file" "$B/v1/models/2/file"
expect 200 "activate 2" -XPOST "${auth[@]}" "$B/v1/models/2/activate"
expect 200 "predict ?model=1" "${O[@]}" --data-binary @"$D/one.raw" "$B/v1/predict?model=1"
expect 200 "GET /v1/models/2/evaluation" "$B/v1/models/2/evaluation"
expect 200 "GET /v1/samples/random" "$B/v1/samples/random"
expect 409 "delete the active model" -XDELETE "${auth[@]}" "$B/v1/models/2"
expect 204 "delete model 1" -XDELETE "${auth[@]}" "$B/v1/models/1"
expect 404 "model 1 is gone" "$B/v1/models/1"
expect 202 "job 3 (50 epochs), to cancel" "${J[@]}" -d '{"epochs":50,"train_limit":500,"test_limit":100}' "$B/v1/jobs"
expect 202 "job 4 queued behind it" "${J[@]}" -d '{"epochs":8,"train_limit":1000,"test_limit":100,"activate":"never"}' "$B/v1/jobs"
job_wait "$B" 3 running 300 >/dev/null
expect 202 "cancel job 3" -XPOST "${auth[@]}" "$B/v1/jobs/3/cancel"
job_wait "$B" 3 cancelled 300 >/dev/null; check "job 3 cancelled" test $? = 0
expect 409 "cancel it again" -XPOST "${auth[@]}" "$B/v1/jobs/3/cancel"
timeout 60 curl -sN "$B/v1/jobs/3/events" >"$D/c.txt"
check "cancelled job's stream ends" grep -q '"state":"cancelled"' "$D/c.txt"
# Job 4 trains; wait for its first checkpoint, then SIGTERM: it resumes later.
for ((i = 0; i < 3000; i++)); do
  [ -f "$S/checkpoints/4.ckpt" ] && break; sleep 0.2
done
check "job 4 wrote a checkpoint" test -f "$S/checkpoints/4.ckpt"
expect 200 "GET /metrics" "$B/metrics"
timeout 5 curl -sN "$B/v1/jobs/4/events" >/dev/null 2>&1 & SSEP=$!; rl_track "$SSEP"
sleep 1
dstop 300
wait "$SSEP" 2>/dev/null
check "SIGTERM while training and streaming: exit 0 (valgrind: no errors)" test "$DRC" = 0
check "job 4 was interrupted by the shutdown (not finished before it)" grep -q 'job 4 interrupted by shutdown after epoch' "$L"
DSTART_WAIT=120 dstart "$S" "$L" "$P" --api-token "$TOKEN" || { bad "restart under valgrind"; }
check "restart logged the resume of job 4" grep -q 'job 4 was interrupted after epoch' "$L"
job_wait "$B" 4 succeeded 900 >/dev/null; check "job 4 resumed and succeeded" test $? = 0
dstop 300
check "SIGTERM when idle: exit 0 (valgrind: no errors)" test "$DRC" = 0

echo "== 2. the CLI under memcheck"
"$VBIN" train --data-dir "$DATA" --train-limit 500 --test-limit 200 --epochs 1 --json --out "$D/cli.model" \
  >"$D/cli-train.txt" 2>&1
check "mnistd train (500 images, 1 epoch): exit 0" test $? = 0
"$VBIN" predict --model "$D/cli.model" --limit 5 "$DATA/mnist/t10k-images-idx3-ubyte" >"$D/cli-p1.txt" 2>&1
check "mnistd predict on IDX: exit 0" test $? = 0
"$VBIN" predict --model "$D/cli.model" --json "$D/seven.png" >"$D/cli-p2.txt" 2>&1
check "mnistd predict --json on PNG: exit 0" test $? = 0
"$VBIN" predict --model "$D/broken.png" "$D/seven.png" >"$D/cli-p3.txt" 2>&1
check "mnistd predict with a bad model file: exit 1" test $? = 1
"$VBIN" train --epochs 0 >/dev/null 2>&1
check "mnistd train --epochs 0: exit 2" test $? = 2

echo "== 3. unit tests under memcheck"
cc -shared -fPIC -O1 -o "$RL_TMP/cmocka_skip.so" tests/reliability/cmocka_skip.c -ldl 2>"$RL_TMP/cc.log" ||
  { bad "build tests/reliability/cmocka_skip.c: $(cat "$RL_TMP/cc.log")"; }
SKIP=${VG_SKIP:-}
for t in build/tests/test_*; do
  [ -x "$t" ] || continue
  s=$(now)
  MNISTD_DATA=$FULL_DATA CMOCKA_SKIP=$SKIP LD_PRELOAD=$RL_TMP/cmocka_skip.so timeout "${VG_UNIT_TIMEOUT:-1200}" \
    valgrind "${VGOPTS[@]}" --log-file="$VG/vg.%p.$(basename "$t").log" "$t" >"$D/$(basename "$t").out" 2>&1
  rc=$?
  info "$t: exit $rc in $(elapsed "$s" "$(now)")s; $(grep -h 'PASSED\|FAILED  \]' "$D/$(basename "$t").out" | head -2 | tr '\n' ' ')$(grep -h 'left out' "$D/$(basename "$t").out" | sed 's/cmocka_skip: //' | tr '\n' ' ')"
  check "$t under valgrind: exit 0" test "$rc" = 0
done

echo "== 4. tests/test_server.sh with the daemon under memcheck"
if [ "${VG_SERVER_SH:-1}" = 1 ]; then
  mkdir -p "$VG/server"
  cat >"$RL_TMP/mnistd-vg-server" <<EOF
#!/bin/sh
exec valgrind ${VGOPTS[*]} --log-file=$VG/server/vg.%p.log "$REAL_BIN" "\$@"
EOF
  chmod +x "$RL_TMP/mnistd-vg-server"
  s=$(now)
  MNISTD_BIN=$RL_TMP/mnistd-vg-server MNISTD_DATA=$FULL_DATA timeout "${VG_SERVER_TIMEOUT:-2400}" \
    tests/test_server.sh >"$D/test_server.out" 2>&1
  rc=$?
  grep '^FAIL' "$D/test_server.out" | sed 's/^/  /'
  info "tests/test_server.sh: exit $rc in $(elapsed "$s" "$(now)")s: $(tail -1 "$D/test_server.out")"
  check "tests/test_server.sh with the daemon under memcheck: exit 0" test "$rc" = 0
else
  info "skipped (VG_SERVER_SH=0)"
fi

echo "== logs"
RL_TMP=$RL_TMP python3 - "$VG" >"$D/vgsum.txt" <<'PY'
import glob, os, re, sys
bad = 0
groups = {}
unfinished_server = 0
for f in sorted(glob.glob(os.path.join(sys.argv[1], "vg.*.log")) + glob.glob(os.path.join(sys.argv[1], "server", "vg.*.log"))):
    t = open(f, errors="replace").read()
    cmd = re.search(r"Command: (.*)", t)
    defl = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", t)
    defl_b = int(defl.group(1).replace(",", "")) if defl else 0
    errs = re.search(r"ERROR SUMMARY: ([\d,]+) errors", t)
    kinds = {}
    for k in re.findall(r"^==\d+== (Invalid (?:read|write|free\(\)) of size \d+|Invalid free\(\).*|Mismatched free.*|Conditional jump or move depends on uninitialised value.*|Use of uninitialised value.*|Syscall param .*uninitialised.*|Source and destination overlap.*)$", t, re.M):
        kinds[k] = kinds.get(k, 0) + 1
    invalid = sum(v for k, v in kinds.items() if k.startswith(("Invalid", "Mismatched")))
    done = "ERROR SUMMARY" in t
    cmdline = cmd.group(1) if cmd else "?"
    # A forked child of a unit test that was killed or _exit()ed by design
    # writes no summary; a mnistd process must always end with one.
    must_finish = "mnistd " in cmdline + " "
    if os.path.basename(os.path.dirname(f)) == "server":
        # tests/test_server.sh SIGKILLs one daemon on purpose: no summary.
        must_finish = False
        unfinished_server += not done
    status = "ok" if (done or not must_finish) and defl_b == 0 and invalid == 0 else "FAIL"
    if status == "FAIL":
        bad += 1
    cmdline = cmdline.replace(os.environ.get("RL_TMP", "@@"), "$T")
    # One line per failing log and per mnistd process; the rest grouped.
    name = re.sub(r"^\S*/", "", cmdline.split(" --")[0])[:60]
    line = "%s\t%s\tdefinitely lost %d B\terrors %s\t%s\t%s" % (
        status, os.path.basename(f), defl_b, errs.group(1) if errs else "?",
        "; ".join("%s x%d" % kv for kv in kinds.items()) or "no invalid accesses",
        cmdline[:110] + ("" if done else "  (no summary: a forked child that did not exit normally)"))
    if status == "FAIL" or must_finish:
        print(line)
    else:
        g = groups.setdefault(name, [0, 0, 0])
        g[0] += 1; g[1] += defl_b; g[2] += int(errs.group(1).replace(",", "")) if errs else 0
for name, (n, b, e) in sorted(groups.items()):
    print("ok\t%d log(s) of %s\tdefinitely lost %d B\terrors %d" % (n, name, b, e))
print("UNFINISHED_SERVER=%d" % unfinished_server)
print("BAD=%d" % bad)
PY
grep -v '^BAD=\|^UNFINISHED' "$D/vgsum.txt" | sed 's/^/  /'
nlogs=$(find "$VG" -name 'vg.*.log' | wc -l)
nu=$(sed -n 's/^UNFINISHED_SERVER=//p' "$D/vgsum.txt")
if [ "${VG_SERVER_SH:-1}" = 1 ]; then
  check "test_server.sh: only the daemon it SIGKILLs on purpose ended without a summary ($nu)" test "$nu" -le 1
fi
nbad=$(sed -n 's/^BAD=//p' "$D/vgsum.txt")
check "$nlogs valgrind logs: no definite leaks, no invalid reads/writes/frees ($nbad bad)" test "$nbad" = 0
if [ "$nbad" != 0 ]; then
  for f in $(awk -F'\t' '$1 == "FAIL" {print $2}' "$D/vgsum.txt"); do
    echo "---- $f"; grep -A25 -m3 -E 'Invalid|definitely lost in' "$VG/$f" "$VG/server/$f" 2>/dev/null | head -80
  done
fi
BIN=$REAL_BIN
echo "valgrind: took $(elapsed "$T0" "$(now)")s"
echo "valgrind: $pass passed, $fail failed"
[ "$fail" = 0 ]
