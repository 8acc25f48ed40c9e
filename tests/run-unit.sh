#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs each Check program with a timeout; exit 0 pass, 77 skip, else fail.
# Prints one line per program and the closing "N passed, N failed" line.
timeout_s=${ORTHO_TEST_TIMEOUT:-600}
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
