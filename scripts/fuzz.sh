#!/usr/bin/env bash
# Builds the libFuzzer harnesses in tests/fuzz/ with clang (ASan + UBSan) into
# build/fuzz/ and runs each one for SECONDS, one after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (make fuzz FUZZ_SECONDS=N)
#
# SECONDS defaults to 60 (0: build, then run each seed corpus once and stop);
# TARGETs default to all of them (idx model png pgm image jobconfig predict dscsv dsarchive).
# Each target starts from a throwaway copy of its seed corpus
# tests/fuzz/corpus/<target>/ in build/fuzz/work/ (the committed corpus never
# grows), with tests/fuzz/<target>.dict when there is one. Crashers, timeouts and
# out-of-memory inputs are saved under build/fuzz/crashes/<target>/, logs
# under build/fuzz/logs/. Ends with "fuzz: N passed, N failed"; exits 1 if
# any target failed to build or found something.
#
# Environment: CLANG (default clang), FUZZ_CFLAGS (extra compiler flags,
# e.g. -O2), FUZZ_ARGS (extra libFuzzer flags, e.g. -use_value_profile=1).
# Installs clang and its fuzzer runtime with apt-get when they are missing
# (as root, or through sudo), like scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-60}
[ $# -gt 0 ] && shift
case "$SECS" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a number, not '$SECS'" >&2; exit 2 ;; esac
ALL=(idx model png pgm image jobconfig predict dscsv dsarchive)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

OUT=build/fuzz
CLANG=${CLANG:-clang}

# ---------------------------------------------------------------- per target
# Sources under test (the harness is tests/fuzz/fuzz_<target>.c), pkg-config
# modules to link, extra libraries, libFuzzer -max_len.
target_srcs() {
  case "$1" in
    idx)       echo "core/idx.c core/nn_err.c" ;;
    model)     echo "core/modelfile.c core/model.c core/bnorm.c core/spec.c core/conv.c core/augment.c core/train.c core/optim.c core/layers.c core/dnn.c core/nn_err.c" ;;
    png|pgm|image) echo "server/srv_image.c" ;;
    jobconfig|predict) echo "server/srv_validate.c server/srv_spec.c core/spec.c core/optim.c core/nn_err.c" ;;
    dscsv|dsarchive) echo "server/srv_dsparse.c server/srv_image.c" ;;
    *) return 1 ;;
  esac
}
target_pkgs() {
  case "$1" in
    idx|model) echo "zlib" ;;
    png)       echo "spng zlib" ;;      # the harness recomputes chunk CRCs
    pgm|image) echo "spng" ;;
    jobconfig|predict) echo "libcjson" ;;
    dscsv|dsarchive) echo "libarchive spng zlib" ;;
  esac
}
target_libs() {
  case "$1" in
    idx)       echo "-lpthread -lm" ;;
    model)     echo "-ldnnl -lgomp -lpthread -lm" ;;   # oneDNN (core/dnn.c); no .pc file
    *)     echo "-lm" ;;
  esac
}
# Inputs beyond these sizes only slow the search down: a 28x28 IDX set
# of ~80 images, a model of ~16k parameters, a PNG/PGM up to ~250x250, a
# JSON body with a few images.
target_maxlen() {
  case "$1" in
    idx|model|png|pgm|image) echo 65536 ;;
    jobconfig) echo 4096 ;;
    predict)   echo 131072 ;;
    dscsv|dsarchive) echo 131072 ;;
  esac
}

for t in "${TARGETS[@]}"; do
  target_srcs "$t" >/dev/null || { echo "fuzz.sh: unknown target '$t' (known: ${ALL[*]})" >&2; exit 2; }
done

# ---------------------------------------------------------------- toolchain
# shellcheck disable=SC2054  # the commas belong to -fsanitize=
SAN_FLAGS=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

toolchain_ok() {
  command -v "$CLANG" >/dev/null 2>&1 || return 1
  local d
  d=$(mktemp -d)
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$d/t.c"
  "$CLANG" "${SAN_FLAGS[@]}" "$d/t.c" -o "$d/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$d"
  return $rc
}

if ! toolchain_ok; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  echo "fuzz: installing clang and its fuzzer runtime"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang
  if ! toolchain_ok; then
    ver=$("$CLANG" -dumpversion | cut -d. -f1)
    $SUDO apt-get install -y -qq --no-install-recommends "libclang-rt-$ver-dev"
  fi
  toolchain_ok || { echo "fuzz.sh: $CLANG cannot build -fsanitize=fuzzer binaries" >&2; exit 1; }
fi
for p in zlib spng libcjson libarchive; do
  pkg-config --exists "$p" || { echo "fuzz.sh: missing library $p: run 'make deps'" >&2; exit 1; }
done
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || { echo "fuzz.sh: missing oneDNN (libdnnl-dev): run 'make deps'" >&2; exit 1; }

# ---------------------------------------------------------------- build
# NN_NO_CLONES: clang 14 does not emit the ifunc of a target_clones function
# for callers in other translation units (undefined references at link time).
CFLAGS=(-std=c11 -D_GNU_SOURCE -DNN_NO_CLONES -g -O1 "${SAN_FLAGS[@]}" -Wall -Wextra -Icore -Iserver
        -Itests/fuzz)
# shellcheck disable=SC2206
EXTRA_CFLAGS=(${FUZZ_CFLAGS:-})
mkdir -p "$OUT/bin" "$OUT/logs"

build() {
  local t=$1 pkgs
  pkgs=$(target_pkgs "$t")
  # Word splitting of the module, source and flag lists is intended.
  # shellcheck disable=SC2046,SC2086
  "$CLANG" "${CFLAGS[@]}" "${EXTRA_CFLAGS[@]}" $(pkg-config --cflags $pkgs) \
    "tests/fuzz/fuzz_$t.c" $(target_srcs "$t") \
    -o "$OUT/bin/fuzz_$t" $(pkg-config --libs $pkgs) $(target_libs "$t")
}

# ---------------------------------------------------------------- run
pass=0; fail=0; failed=(); summary=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:allocator_may_return_null=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1        # no OpenMP team (oneDNN) inside the fuzzer
# shellcheck disable=SC2206
EXTRA_ARGS=(${FUZZ_ARGS:-})

for t in "${TARGETS[@]}"; do
  log="$OUT/logs/$t.log"
  if [ "$SECS" -eq 0 ]; then echo "=== fuzz_$t (seed corpus only)"; else echo "=== fuzz_$t (${SECS}s)"; fi
  if ! build "$t" >"$OUT/logs/$t.build.log" 2>&1; then
    cat "$OUT/logs/$t.build.log" >&2
    echo "fuzz: $t: BUILD FAILED"
    fail=$((fail + 1)); failed+=("$t"); summary+=("$t: build failed")
    continue
  fi
  work="$OUT/work/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$OUT/crashes/$t"
  [ -d "tests/fuzz/corpus/$t" ] && cp -R "tests/fuzz/corpus/$t/." "$work/corpus/"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
  if [ "$SECS" -eq 0 ]; then limit=(-runs=0); else limit=(-max_total_time="$SECS"); fi
  set +e
  timeout -k 10 $((SECS + 120)) "$OUT/bin/fuzz_$t" \
    "${limit[@]}" -max_len="$(target_maxlen "$t")" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$OUT/crashes/$t/" -print_final_stats=1 "${dict[@]}" "${EXTRA_ARGS[@]}" \
    "$work/corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  line="$t: ${runs:-?} runs, ${eps:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, peak rss ${rss:-?} MB"
  if [ $rc -eq 0 ]; then
    echo "fuzz: $line: ok"
    pass=$((pass + 1)); summary+=("$line: ok")
  else
    # Show what went wrong: the sanitizer/libFuzzer report and the artifact.
    grep -E -A30 '^==[0-9]+==ERROR|runtime error|invariant failed|^SUMMARY|ALARM|out-of-memory|Test unit written' "$log" | head -60 >&2 || tail -40 "$log" >&2
    what="exit $rc"
    [ $rc -eq 124 ] && what="hung (killed by timeout)"
    echo "fuzz: $line: FAILED ($what); log $log, inputs in $OUT/crashes/$t/"
    fail=$((fail + 1)); failed+=("$t"); summary+=("$line: FAILED")
  fi
done

echo
printf '  %s\n' "${summary[@]}"
[ $fail -gt 0 ] && echo "failed targets: ${failed[*]} (reproduce: $OUT/bin/fuzz_<target> <input>; add the input to tests/fuzz/regressions/)"
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
