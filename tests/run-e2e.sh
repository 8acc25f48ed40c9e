#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs each end-to-end script in tests/e2e/ (exit 0 pass, 77 skip, else fail)
# against the tools in $BUILD/bin.
BUILD=${BUILD:-build}
export BUILD
timeout_s=${ORTHO_TEST_TIMEOUT:-900}
pass=0 fail=0 skip=0
mkdir -p "$BUILD/e2e"
for t in tests/e2e/*.sh; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)
	log="$BUILD/e2e/$name.log"
	timeout "$timeout_s" bash "$t" >"$log" 2>&1
	rc=$?
	case $rc in
	0) pass=$((pass + 1)); echo "PASS: $name" ;;
	77) skip=$((skip + 1)); echo "SKIP: $name: $(grep -m1 '^SKIP' "$log" | cut -d: -f2-)" ;;
	124) fail=$((fail + 1)); echo "FAIL: $name (timed out after ${timeout_s}s)"; tail -n 40 "$log" ;;
	*) fail=$((fail + 1)); echo "FAIL: $name (exit $rc)"; tail -n 40 "$log" ;;
	esac
done
echo "e2e: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
