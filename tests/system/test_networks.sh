#!/usr/bin/env bash
# Networks as data through the daemon: GET /v1/architectures, the shape
# check (POST /v1/architectures/validate and job submission: 400 naming the
# layer), a cnn job with augmentation and a custom-layers job whose configs
# show their specs, and predictions, evaluation, the confusion matrix and
# both downloads (native, ONNX) for them. Needs MNISTD_BIN and MNISTD_DATA.
set -u
BIN=$(realpath "${MNISTD_BIN:-build/mnistd}")
DATA=$(realpath "${MNISTD_DATA:-data}")
T=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
check() { local name=$1; shift; if "$@" >"$T/check.log" 2>&1; then ok; else bad "$name"; tail -3 "$T/check.log"; fi; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
"$BIN" serve --listen 127.0.0.1:$PORT --state-dir "$T/state" --data-dir "$DATA" --no-bootstrap \
  --train-threads 2 >>"$T/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "$B/healthz" >/dev/null && break; sleep 0.05; done
req() { curl -s -o "$T/body" -w '%{http_code}' "$@" > "$T/code"; }
post() { req -XPOST -H 'Content-Type: application/json' -d "$2" "$B$1"; }
code() { cat "$T/code"; }
py() { python3 -c "import json; d = json.load(open('$T/body')); $1"; }

# ---- presets
req "$B/v1/architectures"
check "GET /v1/architectures: the three presets, default first, parameter counts" py "
a = d['architectures']; assert [x['name'] for x in a] == ['antirectifier', 'relu', 'cnn'], a
assert [x['parameters'] for x in a] == [337418, 669706, 34826] and a[0]['default']
c = a[2]['layers']; assert [l['type'] for l in c] == ['conv2d','max_pool2d','conv2d','max_pool2d','flatten','dropout','dense'], c
assert c[0] == {'type':'conv2d','filters':32,'kernel':3,'stride':1,'padding':'valid','activation':'relu'}, c[0]
t = {x['type']: x['fields'] for x in d['layer_types']}
assert t['batch_norm'] == 'type, momentum, epsilon' and t['dense'] == 'type, units, activation' and len(t) == 8, t"

# ---- the shape check
BADK='{"layers":[{"type":"conv2d","filters":4,"kernel":3,"stride":2},{"type":"max_pool2d","size":3},{"type":"conv2d","filters":4,"kernel":5},{"type":"flatten"},{"type":"dense","units":10}]}'
post /v1/architectures/validate "$BADK"
check "validate: a kernel too large names layers[2]" py "
assert d == {'valid': False, 'layer': 2, 'message': 'layers[2] conv2d: kernel 5 is larger than its 4x4 input'}, d"
post /v1/architectures/validate '{"layers":[{"type":"flatten"},{"type":"dense","units":10}]}'
check "validate: a good spec gives its parameter count" py "assert d == {'valid': True, 'parameters': 7850}, d"
post /v1/architectures/validate '{"layers":[{"type":"flatten"},{"type":"batch_norm"},{"type":"dense","units":10}]}'
check "validate: batch_norm counts 4 parameters per feature" py "assert d == {'valid': True, 'parameters': 4 * 784 + 7850}, d"
post /v1/architectures/validate '{"layers":[{"type":"dense","units":8},{"type":"batch_norm","momentum":1.5},{"type":"dense","units":10}]}'
check "validate: a bad batch_norm momentum names layers[1]" py "
assert d['valid'] is False and d['layer'] == 1 and d['message'].startswith('layers[1] batch_norm: momentum must be'), d"
post /v1/architectures/validate '[1,2]'
check "validate: not an object: 400 JSON error" bash -c "test $(code) = 400 && grep -q '\"error\"' $T/body"
# Field names match whole: the empty key once looped forever in the matcher
# (an unauthenticated request pinned an HTTP thread); "ype" read before it.
for k in '""' '"ype"'; do
  req --max-time 5 -XPOST -H 'Content-Type: application/json' \
    -d "{\"layers\":[{\"type\":\"dense\",\"units\":10,$k:1}]}" "$B/v1/architectures/validate"
  check "validate: field $k is refused at once, named" py "assert d['valid'] is False and 'unknown field' in d['message'], d"
done
curl -s --max-time 2 "$B/healthz" >/dev/null
check "the daemon still answers after those" bash -c "curl -sf --max-time 2 $B/healthz >/dev/null"
post /v1/jobs "$BADK"
check "job with a bad spec: 400 naming the layer" bash -c "test $(code) = 400 && grep -q 'layers\[2\] conv2d: kernel 5 is larger than its 4x4 input' $T/body"
for bad in '{"layers":[{"type":"conv3d"}]}' '{"layers":[{"type":"dense","units":10,"size":2}]}' \
           '{"layers":[{"type":"dense","units":12}]}' '{"layers":[]}' '{"arch":"custom"}' \
           '{"arch":"cnn","layers":[{"type":"flatten"},{"type":"dense","units":10}]}' \
           '{"arch":"cnn","augment":{"shift":99}}' '{"arch":"cnn","augment":{"blur":1}}' \
           '{"arch":"cnn","batch_size":4096,"layers":[{"type":"conv2d","filters":512,"kernel":3,"padding":"same"},{"type":"flatten"},{"type":"dense","units":10}]}'; do
  post /v1/jobs "$bad"
  check "job $bad: 400 with a message" py "assert d['error']['code'] == 400 and len(d['error']['message']) > 15, d"
done

# ---- a cnn job with augmentation, and a custom one
post /v1/jobs '{"arch":"cnn","epochs":1,"train_limit":3000,"test_limit":1000,"optimizer":{"name":"adam"},"augment":{"shift":2,"rotate":10,"scale":0.1},"activate":"always"}'
J1=$(py "print(d['id'])")
check "cnn job accepted (202), config shows the spec and augmentation" py "
c = d['config']; assert c['arch'] == 'cnn' and len(c['layers']) == 7 and c['augment'] == {'shift':2,'rotate':10,'scale':0.1}, c
assert d['parameters'] == 34826"
CUSTOM='{"layers":[{"type":"conv2d","filters":6,"kernel":3,"stride":2,"padding":"same","activation":"relu"},{"type":"antirectifier"},{"type":"max_pool2d","size":2},{"type":"flatten"},{"type":"dense","units":10}],"epochs":1,"train_limit":3000,"test_limit":1000,"optimizer":{"name":"adam"},"activate":"never"}'
post /v1/jobs "$CUSTOM"
J2=$(py "print(d['id'])")
check "custom job: arch custom, its layers in the config" py "
c = d['config']; assert c['arch'] == 'custom' and c['layers'][1] == {'type':'antirectifier'} and 'augment' not in c, c"
BNJOB='{"layers":[{"type":"dense","units":64},{"type":"batch_norm","momentum":0.9},{"type":"relu"},{"type":"dense","units":10}],"epochs":1,"train_limit":3000,"test_limit":1000,"optimizer":{"name":"adam"},"activate":"never"}'
post /v1/jobs "$BNJOB"
J3=$(py "print(d['id'])")
check "batch_norm job: its layer in the config with the defaults filled in, 4 parameters per unit" py "
c = d['config']; assert c['layers'][1] == {'type':'batch_norm','momentum':0.9,'epsilon':0.001}, c
assert d['parameters'] == 784 * 64 + 64 + 4 * 64 + 650, d"
for j in $J1 $J2 $J3; do
  for _ in $(seq 1200); do
    req "$B/v1/jobs/$j"; s=$(py "print(d['state'])"); case $s in succeeded|failed|cancelled) break;; esac; sleep 0.1
  done
  check "job $j succeeded" test "$s" = succeeded
done
req "$B/v1/jobs/$J1"; M1=$(py "print(d['model_id'])")
req "$B/v1/jobs/$J2"; M2=$(py "print(d['model_id'])")
req "$B/v1/models/$M1"
check "model $M1 shows its layers and arch" py "assert d['arch'] == 'cnn' and len(d['layers']) == 7 and d['test_accuracy'] > 0.5, d"  # chance: 0.1
req "$B/v1/jobs/$J3"; M3=$(py "print(d['model_id'])")
req "$B/v1/models/$M3"
check "model $M3 lists its batch_norm layer and predicts on the moving statistics" py "
assert d['layers'][1] == {'type':'batch_norm','momentum':0.9,'epsilon':0.001} and d['test_accuracy'] > 0.6, d"
python3 - "$DATA/mnist" > "$T/img.json" <<'EOF'
import gzip, json, os, sys
p = os.path.join(sys.argv[1], "t10k-images-idx3-ubyte")
b = open(p, "rb").read() if os.path.exists(p) else gzip.open(p + ".gz").read()
print(json.dumps({"images": [list(b[16 + 784 * i: 16 + 784 * (i + 1)]) for i in range(8)]}))
EOF
for m in $M1 $M2; do
  req -XPOST -H 'Content-Type: application/json' --data-binary @"$T/img.json" "$B/v1/predict?model=$m"
  check "model $m: predictions for 8 test digits (7 2 1 0 4 1 4 9), 5+ right" py "
p = [x['label'] for x in d['predictions']]; want = [7,2,1,0,4,1,4,9]
assert sum(a == b for a, b in zip(p, want)) >= 5, p"
  req "$B/v1/models/$m/evaluation"
  check "model $m: evaluation with a 10x10 confusion matrix over 10000 images" py "
c = d['confusion']; assert len(c) == 10 and all(len(r) == 10 for r in c) and sum(map(sum, c)) == 10000, d"
  req "$B/v1/models/$m/file"
  check "model $m: native download (version 2 file)" bash -c "test $(code) = 200 && head -c 9 $T/body | tail -c 1 | od -An -tu1 | grep -q ' 2'"
  req "$B/v1/models/$m/file?format=onnx"
  check "model $m: ONNX download" test "$(code)" = 200
done
kill -TERM "$PID"; wait "$PID"; rc=$?; PID=
check "daemon exits 0 on SIGTERM" test "$rc" = 0
echo "networks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
