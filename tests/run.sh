#!/usr/bin/env bash
# Runs each test program given as an argument (cmocka binaries and shell
# integration tests alike), shows their output, and ends with one summary
# line "N passed, N failed". Exit status 1 if any failed.
set -u
pass=0; fail=0; failed=()
for t in "$@"; do
  echo "=== $t"
  if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); fi
done
[ $fail -gt 0 ] && printf 'FAILED: %s\n' "${failed[@]}"
echo "tests: $pass passed, $fail failed"
[ $fail -eq 0 ]
