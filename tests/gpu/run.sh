#!/bin/bash
# SPDX-License-Identifier: MIT
#
# For whoever has an NVIDIA GPU (sm_80 or newer, a driver for CUDA 13): one
# script that builds (make WERROR=1 all tests), runs the CUDA tests (every
# kernel against the CPU twin; the wiping Ortho pool, whose released memory
# is mapped again and scanned), the CUDA build check (tests/e2e/
# cuda_build.sh: cpu, auto and cuda on the bundled model),
# compute-sanitizer's memcheck where it is installed, the bundled model on
# cpu and cuda side by side, and ortho-bench gemv --backend cuda on a few
# shapes; then prints a table: kernel, shape, time per call, error against
# the CPU twin (as a share of the bound test_cuda uses), the device's
# cuMemcpyDtoD rate and the kernel's share of it. A few minutes.
#
#   tests/gpu/run.sh
#
# Logs go to $OUT when it is set, else build/gpu/. ORTHO_GPU_SANITIZE=0
# skips memcheck. Exit 0 when every step passed, 1 when one failed, 77
# when there is no usable GPU (the build and the steps that mean something
# without one still run, and a failure there is still exit 1).
# shellcheck disable=SC2317  # the functions run through "bash -c NAME"
set -u
cd "$(dirname "$0")/../.." || exit 1

logs=${OUT:-build/gpu}
mkdir -p "$logs" || exit 1
jobs=$(nproc 2>/dev/null || echo 4)
bin=build/bin
t=build/tests
summary=()
failed=0

# The shapes of the benchmark: rows cols ntok.
gemv_shapes=("4096 4096 1" "11008 4096 1" "4096 11008 1" "4093 4099 1"
	     "4096 4096 8" "4096 4096 128")

# step NAME TIMEOUT CMD...: run, log to $logs/NAME.log, record the result.
step() {
	local name=$1 limit=$2 start rc res skip
	shift 2
	start=$(date +%s)
	timeout "$limit" "$@" >"$logs/$name.log" 2>&1
	rc=$?
	skip=$(grep -m1 '^SKIP' "$logs/$name.log" | cut -c7-)
	case $rc in
	0) res=PASS${skip:+ (SKIP: $skip)} ;;
	77) res="SKIP: $skip" ;;
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
	echo "${summary[-1]}"
	return $rc
}

skipped() {	# name why
	summary+=("$(printf '%-14s %5s   SKIP: %s' "$1" - "$2")")
	echo "${summary[-1]}"
}

build() {
	make -j"$jobs" WERROR=1 all tests
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
				echo "$r: keep $keep $(basename "$text") ${opt%% *}:" \
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

# ortho-bench gemv --backend cuda per shape, one JSON line each to
# $logs/gemv-R-C-N.json; a miss against the CPU twin fails the run.
gemv() {
	local s r c n f rc=0

	for s in "${gemv_shapes[@]}"; do
		read -r r c n <<<"$s"
		f=$logs/gemv-$r-$c-$n.json
		echo "== ortho-bench gemv --rows $r --cols $c --ntok $n --backend cuda"
		if ! "$bin/ortho-bench" gemv --rows "$r" --cols "$c" \
			--ntok "$n" --json --backend cuda >"$f"; then
			rc=1
		fi
		cat "$f"
	done
	return "$rc"
}

# jget KEY FILE: a value of the one-line JSON (keys are unique there).
jget() {
	grep -Eo "\"$1\": (\"[^\"]*\"|[^,}]*)" "$2" | head -n 1 |
		sed 's/^[^:]*: //; s/"//g'
}

gemv_table() {
	local s r c n f k sb so db
	printf '%-10s %-11s %4s %-10s %9s %8s %6s %10s %9s\n' kernel shape \
		ntok variant "us/call" "GB/s" "of DtoD" "err/bound" \
		"DtoD GB/s"
	for s in "${gemv_shapes[@]}"; do
		read -r r c n <<<"$s"
		f=$logs/gemv-$r-$c-$n.json
		if ! grep -q '"bench": "gemv"' "$f" 2>/dev/null; then
			printf '%-10s %-11s %4s (no figures: see %s)\n' - \
				"${r}x$c" "$n" "$logs/gemv.log"
			continue
		fi
		k=$(jget kernel "$f")
		db=$(jget dtod_GBps "$f")
		sb=$(jget fused_base_only_s "$f")
		so=$(jget fused_ortho_s "$f")
		awk -v k="$k" -v sh="${r}x$c" -v n="$n" -v db="$db" \
		    -v sb="$sb" -v so="$so" \
		    -v gb="$(jget fused_base_only_GBps "$f")" \
		    -v go="$(jget fused_ortho_GBps "$f")" \
		    -v eb="$(jget max_err_over_bound "$f")" \
		    -v ok="$(jget twin_ok "$f")" 'BEGIN {
			e = sprintf("%.3f%s", eb, ok == "true" ? "" : " FAIL")
			printf "%-10s %-11s %4s %-10s %9.2f %8.0f %6.1f%% %10s %9.0f\n",
			    k, sh, n, "base only", sb * 1e6, gb, gb / db * 100,
			    e, db
			printf "%-10s %-11s %4s %-10s %9.2f %8.0f %6.1f%% %10s %9.0f\n",
			    k, sh, n, "+Ortho 1%", so * 1e6, go, go / db * 100,
			    e, db }'
	done
}

# step runs them under timeout(1), in a child bash.
export logs jobs bin t
export -f build memcheck ppl canaries model gemv

gpus=$(nvidia-smi -L 2>/dev/null | head -n 1)
echo "== ortho GPU check: ${gpus:-nvidia-smi lists no GPU}"
nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader \
	2>/dev/null | sed 's/^/   driver, memory: /'

if ! step build 900 bash -c build; then
	echo "run.sh: the build failed (see $logs/build.log)"
	exit 1
fi
"$t/gpu-bench" --probe >"$logs/probe.log" 2>&1
probe=$?
gpu=1
if [ "$probe" != 0 ]; then
	gpu=0
	why=$(sed -n 's/^SKIP: no CUDA backend: //p' "$logs/probe.log" | head -n 1)
	[ -n "$why" ] || why="probe exited $probe: $(head -n 1 "$logs/probe.log")"
	echo "run.sh: no usable CUDA GPU: $why"
fi

step test_cuda 600 env CK_FORK=yes "$t/test_cuda"
step test_cuda_pool 300 env CK_FORK=yes "$t/test_cuda_pool"
step cuda_build 300 env BUILD=build bash tests/e2e/cuda_build.sh
if [ "$gpu" = 1 ]; then
	step memcheck 420 bash -c memcheck
	step model 300 bash -c model
	step gemv 300 bash -c gemv
else
	for s in memcheck model gemv; do
		skipped "$s" "no usable CUDA GPU"
	done
fi

echo
echo "== results (logs in $logs/)"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
if [ "$gpu" = 1 ]; then
	echo
	echo "== ortho-bench gemv --backend cuda: kernels only, weights" \
		"rotated past L2, Ortho CSR at 1%"
	echo "   $(jget device "$logs/gemv-4096-4096-1.json" 2>/dev/null)"
	gemv_table | tee "$logs/gemv-table.txt"
fi
if [ "$failed" != 0 ]; then
	echo "run.sh: FAILED (see the steps above)"
	exit 1
fi
if [ "$gpu" = 0 ]; then
	echo "run.sh: no usable CUDA GPU ($why): the GPU steps did not run"
	exit 77
fi
echo "run.sh: all passed"
