#!/usr/bin/env bash
# ONNX export, verified in real ONNX tooling: small real models of both
# presets are exported through `mnistd export` and through
# GET /v1/models/ID/file?format=onnx, checked by Debian's python3-onnx
# (onnx.checker.check_model, full_check) and run by onnxruntime-node (npm)
# on every test image; each image must get the same class as
# `mnistd predict` gives it and every probability must agree within 1e-4.
# Plus the metadata and the error cases. Needs MNISTD_BIN and MNISTD_DATA,
# node_modules (make deps) and python3-onnx.
set -u
cd "$(dirname "$0")/../.."
BIN=${MNISTD_BIN:-build/mnistd}
DATA=${MNISTD_DATA:-data}
# Debian's python3-onnx lives in the system interpreter (not a pyenv one).
PY=${MNISTD_PYTHON:-/usr/bin/python3}
TOL=1e-4
T=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi; }
trap cleanup EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
check() { local name=$1; shift; if "$@" >"$T/check.log" 2>&1; then ok; else bad "$name"; sed 's/^/    /' "$T/check.log" | tail -5; fi; }

"$PY" -c 'import onnx' 2>/dev/null || { echo "FAIL: $PY cannot import onnx (run 'make deps': python3-onnx)"; exit 1; }
node -e 'require("onnxruntime-node")' 2>/dev/null || { echo "FAIL: node cannot load onnxruntime-node (run 'make deps')"; exit 1; }
MNIST_IMG=$DATA/mnist/t10k-images-idx3-ubyte
FASHION_IMG=$DATA/fashion-mnist/t10k-images-idx3-ubyte
[ -e "$FASHION_IMG" ] || FASHION_IMG=$FASHION_IMG.gz

# Checker (full_check runs shape inference too) and the documented interface
# and metadata. Arguments: file, data set ("" = unknown), then optional
# expected test accuracy and job config file.
onnx_check() {
  "$PY" - "$@" <<'EOF'
import json, sys, onnx
path, dataset = sys.argv[1], sys.argv[2]
m = onnx.load(path)
onnx.checker.check_model(m, full_check=True)
assert m.ir_version == 8 and [(o.domain, o.version) for o in m.opset_import] == [("", 13)], m.opset_import
assert m.producer_name == "mnistd" and m.producer_version, m.producer_name
g = m.graph
def dims(v): return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
assert [i.name for i in g.input] == ["image"] and dims(g.input[0]) == ["N", 1, 28, 28], g.input
assert [o.name for o in g.output] == ["probabilities"] and dims(g.output[0]) == ["N", 10], g.output
assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
ops = [n.op_type for n in g.node]
assert ops[0] in ("Flatten", "Conv") and ops[-1] == "Softmax" and "Dropout" not in ops, ops
meta = {p.key: p.value for p in m.metadata_props}
fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
want = fashion if dataset == "fashion-mnist" else [str(k) for k in range(10)]
assert json.loads(meta["class_names"]) == want, meta["class_names"]
assert meta["architecture"] in ("antirectifier", "relu", "cnn", "custom") and "white ink" in meta["input"], meta
if dataset: assert meta["dataset"] == dataset, meta
if len(sys.argv) > 3:
    assert abs(float(meta["test_accuracy"]) - float(sys.argv[3])) <= 2e-6, (meta["test_accuracy"], sys.argv[3])
    assert json.loads(meta["training_config"]) == json.load(open(sys.argv[4])), meta["training_config"]
print(meta["architecture"], len(g.node), "nodes", ops.count("Gemm"), "Gemm", ops.count("Conv"), "Conv")
EOF
}

# onnxruntime-node vs `mnistd predict --json` on every image of a file.
compare() { # name, onnx file, native model file, IDX images
  "$BIN" predict --model "$3" --json "$4" > "$T/pred.jsonl" 2>"$T/pred.err" ||
    { bad "$1: mnistd predict failed: $(cat "$T/pred.err")"; return; }
  if node tests/onnx_compare.mjs "$2" "$4" "$T/pred.jsonl" "$TOL" > "$T/cmp.json" 2>&1; then ok
  else bad "$1: onnxruntime disagrees with mnistd"; fi
  echo "  $1: $(cat "$T/cmp.json")"
}

# ---- CLI: the three presets and a custom network with every layer type the
# core has (stride 2, "same" padding, an antirectifier on a feature map, an
# overlapping pool, dense relu), trained for one epoch on 10,000 images
cat > "$T/custom.json" <<'EOF'
{"layers":[{"type":"conv2d","filters":6,"kernel":3,"stride":2,"padding":"same","activation":"relu"},
 {"type":"antirectifier"},{"type":"conv2d","filters":8,"kernel":3},{"type":"max_pool2d","size":3,"stride":2},
 {"type":"relu"},{"type":"flatten"},{"type":"dropout","rate":0.2},{"type":"dense","units":32,"activation":"relu"},
 {"type":"dense","units":10}]}
EOF
# batch_norm (inference: the moving statistics) on a dense layer's units,
# on feature maps (per channel; 32 filters: 2 or 4 of oneDNN's channel blocks) and on a
# flattened vector
cat > "$T/bndense.json" <<'EOF'
{"layers":[{"type":"dense","units":64},{"type":"batch_norm"},{"type":"relu"},{"type":"dropout","rate":0.1},
 {"type":"dense","units":10}]}
EOF
cat > "$T/bnconv.json" <<'EOF'
{"layers":[{"type":"conv2d","filters":32,"kernel":3,"activation":"relu"},{"type":"batch_norm","momentum":0.9},
 {"type":"max_pool2d","size":2},{"type":"conv2d","filters":16,"kernel":3,"stride":2},
 {"type":"batch_norm","epsilon":0.01},{"type":"relu"},{"type":"flatten"},{"type":"batch_norm"},{"type":"dense","units":10}]}
EOF
for arch in antirectifier relu cnn custom bndense bnconv; do
  case $arch in custom|bn*) spec="--layers $T/$arch.json" ;; *) spec="--arch $arch" ;; esac
  # shellcheck disable=SC2086
  "$BIN" train $spec --data-dir "$DATA" --epochs 1 --train-limit 10000 --test-limit 1000 \
    --threads 2 --json --out "$T/$arch.model" > /dev/null 2>"$T/train.err"
  check "train $arch" test -s "$T/$arch.model"
  "$BIN" export --format onnx "$T/$arch.model" "$T/$arch.onnx" 2>"$T/export.err"
  check "mnistd export --format onnx ($arch) exits 0" test $? = 0
  check "no temp files beside the export" test "$(ls "$T" | grep -c '\.tmp\.')" = 0
  check "checker + interface + metadata ($arch, CLI)" onnx_check "$T/$arch.onnx" ""
  case $arch in bn*) check "$arch: one BatchNormalization per batch_norm layer" "$PY" -c \
    "import onnx, sys; ops = [n.op_type for n in onnx.load('$T/$arch.onnx').graph.node]; sys.exit(ops.count('BatchNormalization') != (1 if '$arch' == 'bndense' else 3))" ;;
  esac
  compare "CLI $arch on the 10000 MNIST test images" "$T/$arch.onnx" "$T/$arch.model" "$MNIST_IMG"
done
# The antirectifier's epsilon: first-layer weights scaled by 1e-9 put every
# sum of squares under 1e-12, where x / sqrt(max(ss, 1e-12)) is no longer a
# unit vector; the exported graph must follow the core there too.
"$PY" tests/onnx_tiny_model.py "$T/antirectifier.model" "$T/tiny.model" 1e-9
"$BIN" export --format onnx "$T/tiny.model" "$T/tiny.onnx"
compare "CLI antirectifier in the clamped-norm regime (weights x 1e-9)" "$T/tiny.onnx" "$T/tiny.model" "$MNIST_IMG"
"$BIN" export --format onnx --dataset fashion-mnist "$T/relu.model" "$T/relu-f.onnx"
check "--dataset fashion-mnist gives the Fashion-MNIST class names" onnx_check "$T/relu-f.onnx" fashion-mnist

# ---- CLI errors
exit_code() { "$@" >"$T/out" 2>"$T/err"; echo $?; }
for badargs in "export" "export $T/relu.model $T/x.onnx" "export --format tflite $T/relu.model $T/x.onnx" \
               "export --format onnx $T/relu.model" "export --format onnx --dataset cifar $T/relu.model $T/x.onnx" \
               "export --format onnx --state-dir $T abc $T/x.onnx"; do
  # shellcheck disable=SC2086
  rc=$(exit_code "$BIN" $badargs)
  check "'$badargs' exits 2 with one line" test "$rc" = 2 -a "$(wc -l < "$T/err")" = 1
done
rc=$(exit_code "$BIN" export --format onnx "$T/missing.model" "$T/x.onnx")
check "missing model file: exit 1 naming it" bash -c "test $rc = 1 && grep -q missing.model '$T/err'"
head -c 1000 "$T/relu.model" > "$T/trunc.model"
rc=$(exit_code "$BIN" export --format onnx "$T/trunc.model" "$T/x.onnx")
check "truncated model file: exit 1, nothing written" bash -c "test $rc = 1 && test ! -e '$T/x.onnx'"
rc=$(exit_code "$BIN" export --format onnx "$T/relu.model" "$T/nodir/x.onnx")
check "unwritable destination: exit 1 naming it" bash -c "test $rc = 1 && grep -q nodir '$T/err'"
check "export --help documents the input" bash -c "'$BIN' export --help | grep -q 'white ink'"

# ---- HTTP: models trained by the daemon's jobs, with their records
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
"$BIN" serve --listen 127.0.0.1:$PORT --state-dir "$T/state" --data-dir "$DATA" --no-bootstrap \
  --train-threads 2 >>"$T/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "$B/healthz" >/dev/null && break; sleep 0.05; done
req() { curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' "$@" > "$T/code"; }
code() { cat "$T/code"; }
jq_() { "$PY" -c "import json,sys; d=json.load(open('$T/body')); print($1)"; }
submit() { # config -> job id; waits for the job to succeed, prints its model id
  req -XPOST -H 'Content-Type: application/json' -d "$1" "$B/v1/jobs"
  local job; job=$(jq_ 'd["id"]')
  for _ in $(seq 1800); do   # 3 minutes at most
    req "$B/v1/jobs/$job"
    case $(jq_ 'd["state"]') in succeeded) break ;; failed|cancelled) break ;; esac
    sleep 0.1
  done
  jq_ 'd.get("model_id") or ""'
  jq_ 'json.dumps(d["config"])' > "$T/job$job.config"
  echo "$job" > "$T/lastjob"
}
M1=$(submit '{"arch":"antirectifier","dataset":"mnist","epochs":1,"train_limit":10000}')
J1=$(cat "$T/lastjob")
M2=$(submit '{"arch":"relu","dataset":"fashion-mnist","epochs":1,"train_limit":10000,"activate":"always"}')
J2=$(cat "$T/lastjob")
M3=$(submit '{"arch":"cnn","dataset":"mnist","epochs":1,"train_limit":5000,"optimizer":{"name":"adam"}}')
J3=$(cat "$T/lastjob")
check "daemon trained the presets" test -n "$M1" -a -n "$M2" -a -n "$M3"
for pair in "$M1 $J1 mnist $MNIST_IMG" "$M2 $J2 fashion-mnist $FASHION_IMG" "$M3 $J3 mnist $MNIST_IMG"; do
  set -- $pair
  req "$B/v1/models/$1"; acc=$(jq_ 'd["test_accuracy"]'); arch=$(jq_ 'd["arch"]')
  req "$B/v1/models/$1/file?format=onnx"
  check "GET /v1/models/$1/file?format=onnx: 200" test "$(code)" = 200
  cp "$T/body" "$T/http$1.onnx"
  check "  served as an .onnx attachment" grep -qi "content-disposition: attachment; filename=\"mnistd-model-$1.onnx\"" "$T/headers"
  check "  checker + metadata: $3 class names, test accuracy, job config" \
    onnx_check "$T/http$1.onnx" "$3" "$acc" "$T/job$2.config"
  curl -s -o "$T/http$1.model" "$B/v1/models/$1/file"
  compare "HTTP $arch ($3) on its 10000 test images" "$T/http$1.onnx" "$T/http$1.model" "$4"
  "$BIN" export --format onnx --state-dir "$T/state" "$1" "$T/state$1.onnx" 2>"$T/err"
  check "  export --state-dir $1 writes the same bytes as the HTTP route" cmp "$T/http$1.onnx" "$T/state$1.onnx"
done
compare "HTTP antirectifier (mnist) on the Fashion-MNIST images too" "$T/http$M1.onnx" "$T/http$M1.model" "$FASHION_IMG"
# export --state-dir reads the daemon's database read-only: beside the
# running daemon, mnistd.db and its write-ahead log are the same bytes
# after it (a read-write open folded the log into the file at close).
dbsum() { for f in mnistd.db mnistd.db-wal; do
  if [ -e "$T/state/$f" ]; then sha256sum < "$T/state/$f"; else echo "no $f"; fi; done; }
before=$(dbsum)
check "the daemon's write-ahead log holds records" test -s "$T/state/mnistd.db-wal"
"$BIN" export --format onnx --state-dir "$T/state" "$M1" "$T/again.onnx" 2>"$T/err"
check "export --state-dir beside the running daemon: mnistd.db and its log byte for byte as before" \
  test "$(dbsum)" = "$before"
check "  and the same file as the HTTP route" cmp "$T/http$M1.onnx" "$T/again.onnx"

# ---- HTTP errors: JSON bodies a person can act on
badreq() { # status, name, url
  req "$3"
  check "$2: $1 with a JSON error" "$PY" -c "
import json; e = json.load(open('$T/body'))['error']; assert e['code'] == $1 and len(e['message']) > 10, e
assert '$(code)' == '$1', '$(code)'"
}
badreq 404 "unknown model id" "$B/v1/models/999/file?format=onnx"
badreq 400 "unknown format" "$B/v1/models/$M1/file?format=tflite"
rc=$(exit_code "$BIN" export --format onnx --state-dir "$T/state" 999 "$T/x.onnx")
check "export --state-dir with an unknown id: exit 1, 'not found'" bash -c "test $rc = 1 && grep -q 'not found' '$T/err'"
req "$B/v1/models/$M1/file"
check "native download unchanged (MNISTDNN file)" bash -c "test $(code) = 200 && head -c 8 '$T/body' | grep -q MNISTDNN"
req "$B/healthz"; check "daemon still healthy" test "$(code)" = 200

kill -TERM "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits 0 on SIGTERM (no leaks under ASan)" test "$rc" = 0
echo "onnx: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
