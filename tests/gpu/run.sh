#!/bin/bash
# SPDX-License-Identifier: MIT
#
# For whoever has an NVIDIA GPU (sm_80 or newer, a driver for CUDA 13):
# builds, runs the CUDA tests (kernels against the CPU twin, the wiping
# Ortho pool), the CUDA build check, compute-sanitizer's memcheck where it
# works, the bundled model on cpu and cuda side by side, and the GEMV
# benchmark; prints a short table. A few minutes on a 16-core machine.
#
#   tests/gpu/run.sh
#
# Logs go to $OUT when it is set, else build/gpu/. ORTHO_GPU_SANITIZE=0
# skips memcheck. Exit 0 when nothing failed.
# shellcheck disable=SC2317  # the functions run through "bash -c NAME"
set -u
cd "$(dirname "$0")/../.." || exit 1

logs=${OUT:-build/gpu}
mkdir -p "$logs"
jobs=$(nproc 2>/dev/null || echo 4)
bin=build/bin
t=build/tests
summary=()
failed=0

# step NAME TIMEOUT CMD...: run, log to $logs/NAME.log, record the result.
step() {
	local name=$1 limit=$2 start rc res
	shift 2
	start=$(date +%s)
	timeout "$limit" "$@" >"$logs/$name.log" 2>&1
	rc=$?
	case $rc in
	0) res=PASS ;;
	77) res="SKIP: $(grep -m1 '^SKIP' "$logs/$name.log" | cut -c7-)" ;;
	124) res="FAIL (timed out after ${limit}s)" ;;
	*) res="FAIL (exit $rc)" ;;
	esac
	case $res in
	FAIL*)
		failed=1
		echo "---- $name: last lines of $logs/$name.log"
		tail -n 25 "$logs/$name.log"
		;;
	esac
	summary+=("$(printf '%-14s %5ss  %s' "$name" $(($(date +%s) - start)) "$res")")
	return $rc
}

build() {
	make -j"$jobs" WERROR=1 all &&
		make -j"$jobs" WERROR=1 "$t/test_cuda" "$t/test_cuda_pool" \
			"$t/gpu-bench"
}

# Whole programs under memcheck, in one process each (CK_FORK=no).
memcheck() {
	local cs rc p

	cs=$(command -v compute-sanitizer ||
	     ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
	if [ "${ORTHO_GPU_SANITIZE:-1}" = 0 ] || [ -z "$cs" ]; then
		echo "SKIP: compute-sanitizer not wanted or not installed"
		return 77
	fi
	for p in test_cuda_pool test_cuda; do
		CK_FORK=no "$cs" --tool memcheck --error-exitcode 99 \
			"$t/$p"
		rc=$?
		if grep -q "Device not supported" "$logs/memcheck.log"; then
			echo "SKIP: compute-sanitizer does not support this device"
			return 77
		fi
		[ "$rc" = 0 ] || return "$rc"
	done
}

ppl() {		# model text backend [options]
	local m=$1 text=$2 b=$3
	shift 3
	"$bin/ortho-run" ppl "$m" --tokenizer tests/data/stories260K/tok512.bin \
		--text "$text" --backend "$b" "$@" |
		awk '/^ppl /{v = $2} END {print v}'
}

canaries() {	# model backend [options]
	local m=$1 b=$2
	shift 2
	"$bin/ortho-run" canaries "$m" \
		--tokenizer tests/data/stories260K/tok512.bin \
		--canaries tests/data/private-a/canaries.tsv --backend "$b" "$@" |
		awk '/^canaries /{v = $2} END {print v}'
}

# The bundled model pair on both backends: the same figures, to rounding.
model() {
	local w keep m k text opt c g r bad=0

	if ! "$t/gpu-bench" --probe >/dev/null 2>&1; then
		echo "SKIP: no usable CUDA device"
		return 77
	fi
	w=$(mktemp -d)
	for keep in 1 0.5; do
		mkdir -p "$w/$keep"
		"$bin/ortho-pack" --public tests/data/stories260K/stories260K.bin \
			--private tests/data/private-a/stories260K-private-a.bin \
			--label private-a --key-file "$w/$keep/keys" \
			-o "$w/$keep/model" --keep "$keep" -q || return 1
		m=$w/$keep/model
		k=$w/$keep/keys
		for text in tests/data/retain.txt tests/data/private-a/forget.txt; do
			for opt in --no-ortho "--key-file $k"; do
				# shellcheck disable=SC2086
				c=$(ppl "$m" "$text" cpu $opt)
				# shellcheck disable=SC2086
				g=$(ppl "$m" "$text" cuda $opt)
				if awk -v c="$c" -v g="$g" 'BEGIN { if (c == "" ||
				    g == "") exit 1; d = (g - c) / c;
				    exit !(d < 1e-3 && d > -1e-3) }'; then
					r=ok
				else
					r=FAIL
					bad=1
				fi
				echo "$r: keep $keep $(basename "$text") $opt:" \
					"cpu $c cuda $g"
			done
		done
		c=$(canaries "$m" cpu --key-file "$k")
		g=$(canaries "$m" cuda --key-file "$k")
		[ -n "$c" ] && [ "$c" = "$g" ] || bad=1
		echo "canaries keep $keep: cpu $c cuda $g"
	done
	rm -rf "$w"
	return "$bad"
}

# step runs them under timeout(1), in a child bash.
export logs jobs bin t
export -f build memcheck ppl canaries model

echo "== ortho GPU check: $(nvidia-smi -L 2>/dev/null | head -n 1)"
nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader \
	2>/dev/null | sed 's/^/   driver, memory: /'

if step build 900 bash -c build; then
	step test_cuda 600 env CK_FORK=yes ORTHO_SRCDIR=. $t/test_cuda
	step test_cuda_pool 300 env CK_FORK=yes ORTHO_SRCDIR=. $t/test_cuda_pool
	step cuda_build 300 env BUILD=build bash tests/e2e/cuda_build.sh
	step memcheck 420 bash -c memcheck
	step model 600 bash -c model
	step bench 600 $t/gpu-bench
fi

echo
echo "== results (logs in $logs/)"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
if [ -s "$logs/bench.log" ]; then
	echo
	echo "== GEMV/GEMM, Ortho CSR16 at 1% (kernel time, no host copies)"
	cat "$logs/bench.log"
fi
exit $failed
