#!/usr/bin/env bash
# Runs docs/cookbook.md as a newcomer would: every ```sh block marked
# `<!-- cookbook: NAME -->`, in order, in one shell, against a live daemon
# started like `make run` (state in ./state, bootstrap model) on a free port,
# in a temporary directory holding build/mnistd and data/ links. A command
# that fails (non-zero exit, or an HTTP error status from curl) fails the
# test and is named; then each block's output is checked for its key lines.
# The Keras log sample in the page is compared with the real `train` run.
# Needs MNISTD_BIN and MNISTD_DATA (set by `make unit`), curl, jq, python3.
set -u
cd "$(dirname "$0")/../.."
DOC=${COOKBOOK:-docs/cookbook.md}
README=${COOKBOOK_README:-README.md}   # its "five curl lines" run last
BIN=$(realpath "${MNISTD_BIN:-build/mnistd}")
DATA=$(realpath "${MNISTD_DATA:-data}")
T=$(mktemp -d); PID=
cleanup() {
  # The script's daemon, if the script stopped before stopping it.
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
  [ -n "${KEEP:-}" ] && echo "cookbook: kept $T" || rm -rf "$T"
}
trap cleanup EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then ok; else bad "$name"; fi
}
has() { grep -Eq -- "$2" "$T/out.$1"; }            # block, regex
count() { grep -Ec -- "$2" "$T/out.$1"; }          # block, regex

for tool in curl jq python3; do
  command -v $tool >/dev/null || { echo "cookbook: $tool missing: run 'make deps'"; exit 1; }
done

# The blocks, as NAME<TAB>first line number, and each block's text in $T/block.NAME.
python3 - "$T" "$DOC" "$README" > "$T/blocks" <<'EOF' || { echo "cookbook: cannot read the pages"; exit 1; }
import re, sys
out = sys.argv[1]
for doc in sys.argv[2:]:
  lines = open(doc).read().split("\n")
  i = 0
  while i < len(lines):
    m = re.match(r"<!-- cookbook: ([a-z0-9-]+) -->$", lines[i])
    if m:
        fence = lines[i + 1]
        assert fence.startswith("```"), f"{doc}:{i + 2}: a fence must follow the marker"
        j = i + 2
        while not lines[j].startswith("```"): j += 1
        open(f"{out}/block.{m.group(1)}", "w").write("\n".join(lines[i + 2:j]) + "\n")
        print(f"{m.group(1)}\t{fence[3:] or 'text'}\t{doc}:{i + 3}")
        i = j
    i += 1
EOF
NAMES=$(awk -F'\t' '$2=="sh"{print $1}' "$T/blocks")
EXPECTED="cli pictures health train cancel predict models experiment readme"
check "the page's sh blocks are exactly: $EXPECTED" test "$(echo $NAMES)" = "$EXPECTED"
check "the page has the keras-log sample" test -s "$T/block.keras-log"

# A daemon as `make run` starts it, on a free port, started by the script
# where the page says to start it (before its first REST block), so that its
# first model does not train beside the command-line blocks' trainings.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$T/run/build" && ln -s "$BIN" "$T/run/build/mnistd" && ln -s "$DATA" "$T/run/data"
FIRST_REST=health

# One script: the blocks in order, each writing its own output file; the
# ERR trap names the command that failed. The blocks' curl is a shim that
# fails on HTTP errors (unless the page already passes -f) and ends each
# answer with a newline (the daemon's JSON has none; a terminal shows the
# answers apart anyway).
mkdir -p "$T/bin"
cat > "$T/bin/curl" <<EOF
#!/bin/sh
for a; do case \$a in --fail*|-[!-]*f*) exec $(command -v curl) "\$@";; esac; done
exec $(command -v curl) -sS --fail-with-body -w '\n' "\$@"
EOF
chmod +x "$T/bin/curl"
{
  echo 'set -eo pipefail'
  echo 'trap '\''echo "cookbook: exit status $? from: $BASH_COMMAND" >&2'\'' ERR'
  for n in $NAMES; do
    echo "exec > '$T/out.$n' 2>&1; echo '## block $n' >> '$T/progress'"
    [ "$n" = "$FIRST_REST" ] && echo "build/mnistd serve --data-dir data --state-dir state \\
  --listen 127.0.0.1:$PORT > '$T/daemon.log' 2>&1 & echo \$! > '$T/daemon.pid'
for _ in \$(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz > /dev/null && break; sleep 0.1; done"
    sed "s/127\.0\.0\.1:8080/127.0.0.1:$PORT/g" "$T/block.$n"   # the pages' port, as the page says to change it
  done
  # The end: is the daemon still serving, then SIGTERM and its exit status.
  echo "echo \"\$MODEL\" > '$T/run/model.id'"
  echo "curl -sf http://127.0.0.1:$PORT/healthz > '$T/healthz.after' || true"
  echo "kill -TERM \$(cat '$T/daemon.pid'); rc=0; wait \$(cat '$T/daemon.pid') || rc=\$?; echo \$rc > '$T/daemon.rc'"
  echo "echo done >> '$T/progress'"
} > "$T/cookbook.sh"
start=$(date +%s)
(cd "$T/run" && PATH="$T/bin:$PATH" timeout 600 bash "$T/cookbook.sh")
rc=$?
[ -s "$T/daemon.rc" ] || PID=$(cat "$T/daemon.pid" 2>/dev/null)   # still running: cleanup stops it
last=$(tail -1 "$T/progress" 2>/dev/null)
if [ $rc = 0 ] && [ "$last" = done ]; then ok; else
  bad "every command ran: exit $rc in ${last#\#\# }"
  tail -5 "$T/out.${last#\#\# block }" 2>/dev/null | sed 's/^/  | /'
fi
echo "cookbook: the blocks ran in $(( $(date +%s) - start )) s"
for n in $NAMES; do touch "$T/out.$n"; done

# cli: the Keras log sample equals a real default run, times aside (the
# figures depend on the thread count, which defaults to the cores: the
# sample is from 2).
MASK='s/ - [0-9.]+s - / - Ts - /; s/ - [0-9]+ samples\/s$/ - N samples\/s/'
check "cli: the sample's first line is what train prints" \
  grep -qxF -- "$(head -1 "$T/block.keras-log")" "$T/out.cli"
if [ "$(nproc)" = 2 ]; then
  check "cli: every line of the Keras log sample (times aside) is in a default run" \
    bash -c "diff <(sed -E '$MASK' '$T/block.keras-log') <(grep -E '^(antirectifier on|Epoch|469/469)' '$T/out.cli' | head -9 | sed -E '$MASK')"
else
  echo "cookbook: $(nproc) cores, not 2: the sample's figures are not compared"
  check "cli: the sample's epoch lines have the format train prints" \
    bash -c "test \$(grep -Ec '^469/469 - [0-9.]+s - loss: [0-9.]+ - accuracy: [0-9.]+ - val_loss: [0-9.]+ - val_accuracy: [0-9.]+ - [0-9]+ samples/s$' '$T/out.cli') -ge 4"
fi
check "cli: --json prints the epoch object" has cli '^\{"epoch":1,"loss":'
check "cli: predict --limit 5 prints five digits" test "$(count cli '\[[0-4]\]: [0-9] \(')" = 5
check "cli: predict --labels ends with the accuracy" has cli '[Aa]ccuracy'
check "cli: export wrote my.onnx" test -s "$T/run/my.onnx"
check "cli: serve --help names --listen" has cli '--listen'

check "pictures: the PNG is a 7" has pictures '"file":"digit.png".*"label":7'
check "pictures: the PGM is a 7" has pictures '^digit.pgm\[0\]: 7 '

check "health: healthz" has health '^\{"status":"ok"\}$'
check "health: readyz after the first model" has health '"status":"ready"'
check "health: datasets lists mnist" has health '"mnist"'

check "train: the job id was captured" has train '^job [0-9]+$'
check "train: the stream ends with end, succeeded, activated" \
  has train '^data: \{"job":[0-9]+,"state":"succeeded","model_id":[0-9]+,"activated":(true|false)\}'
check "train: the stream had both epoch events" test "$(count train '^event: epoch')" -ge 2
check "train: ndjson lines" has train '^\{"id":[0-9]+,"event":"end"'
check "train: the job has its model" has train '"model_id":[1-9]'

check "cancel: the job ended cancelled" has cancel '"state":"cancelled"'

check "predict: seven answers" test "$(count predict '"predictions":\[')" = 7
check "predict: the first test digit is a 7 in all six formats" test "$(count predict '^\{"model":[0-9]+,"predictions":\[\{"label":7,')" = 6
check "predict: ?model= answers from that model" has predict "^\\{\"model\":$(cat "$T/run/model.id" 2>/dev/null),"
check "predict: explain returns the 28x28 it saw" bash -c "sed -n 3p '$T/out.predict' | jq -e '.predictions[0].pixels | length == 784'"
check "predict: the ten raw images" bash -c "grep -o '\"label\"' <(sed -n 5p '$T/out.predict') | wc -l | grep -qx 10"
check "predict: TF-Serving answer" has predict '^\{"predictions":\[\['

check "models: the list marks the active model" has models '"active":true'
check "models: the downloaded model predicts the PNG" has models '^digit.png\[0\]: 7 '
check "models: evaluation has a confusion matrix" has models '"confusion'
check "models: metrics in Prometheus format" has models '^# TYPE mnistd_'

check "experiment: antirectifier line" has experiment $'^antirectifier\t337418\t0\\.9[0-9]*$'
check "experiment: relu line" has experiment $'^relu\t669706\t0\\.9[0-9]*$'

check "readme: ready" has readme '^\{"status":"ready","model":[0-9]+\}$'
check "readme: job 1's events end" has readme '^data: \{"job":1,"state":"succeeded"'
check "readme: a new job" has readme '^\{"id":[0-9]+,"state":"queued"'
check "readme: digit.png is a 7" has readme '"predictions":\[\{"label":7,'
check "readme: the models" has readme '^\{"models":\['

check "the daemon survived the cookbook" grep -qx '{"status":"ok"}' "$T/healthz.after"
check "the daemon exits 0 on SIGTERM" test "$(cat "$T/daemon.rc" 2>/dev/null)" = 0
[ "$fail" = 0 ] || { echo "daemon log (last 10 lines):"; tail -10 "$T/daemon.log"; }
echo "cookbook: $pass passed, $fail failed"
[ "$fail" = 0 ]
