#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs each Check program with a timeout; exit 0 pass, 77 skip, else fail.
# Prints one line per program and the closing "N passed, N failed" line.
timeout_s=${ORTHO_TEST_TIMEOUT:-600}
# Check's per-test timeouts only catch hangs: a loaded machine or the
# sanitizer build must not turn a slow test into a failure (Check's own
# default is 4 s).
export CK_DEFAULT_TIMEOUT="${CK_DEFAULT_TIMEOUT:-60}"
export CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-2}"
pass=0 fail=0 skip=0
for t in "$@"; do
	name=$(basename "$t")
	log="${t}.log"
	CK_FORK=yes timeout "$timeout_s" "$t" >"$log" 2>&1
	rc=$?
	case $rc in
	0) pass=$((pass + 1)); echo "PASS: $name ($(grep -Eo 'Checks: [0-9]+' "$log" | head -n 1))" ;;
	77) skip=$((skip + 1)); echo "SKIP: $name: $(grep -m1 '^SKIP' "$log" | cut -d: -f2-)" ;;
	124) fail=$((fail + 1)); echo "FAIL: $name (timed out after ${timeout_s}s)"; tail -n 30 "$log" ;;
	*) fail=$((fail + 1)); echo "FAIL: $name (exit $rc)"; tail -n 30 "$log" ;;
	esac
done
echo "unit: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
