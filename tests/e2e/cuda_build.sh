#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The CUDA build: both libraries carry the kernels' fatbin in .nv_fatbin
# with sm_80 and sm_90 machine code and compute_90 PTX (read here from the
# container's own headers, and with cuobjdump where it is installed, on the
# library and on the fatbin itself); the shared library does not link
# libcuda (it is dlopen()ed); the GPU benchmark compiles against the
# library and, without a device, says SKIP.
#
# Then the tools on the bundled model: without a device, ortho-run
# --backend auto runs on the CPU and gives the perplexities --backend cpu
# gives, digit for digit, and --backend cuda (ortho-run, and ortho-bench
# gemv) fails cleanly: a non-zero exit, no signal, no core, one message
# that names CUDA. With a device, auto and cuda take it and agree with the
# CPU to 1e-3, and ortho-bench gemv --backend cuda reports its figures
# with the outputs checked against the CPU twin.
# SKIP when the toolkit is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
fail() { echo "FAIL: $*"; exit 1; }

if [ ! -x "$CUDA_HOME/bin/nvcc" ] || [ ! -f "$CUDA_HOME/include/cuda.h" ]; then
	echo "SKIP: no CUDA toolkit at $CUDA_HOME"
	exit 77
fi
grep -q '^#define HAVE_CUDA 1' "$BUILD/config.h" ||
	fail "$BUILD/config.h: CUDA toolkit present but HAVE_CUDA unset"
shlibs=("$BUILD"/lib/libortho-rt.so.*.*.*)
shlib=${shlibs[0]}
stlib=$BUILD/lib/libortho-rt.a
if [ ! -f "$shlib" ] || [ ! -f "$stlib" ]; then
	fail "libraries not built in $BUILD/lib"
fi

stlib_abs=$(realpath "$stlib")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# u OFFSET BYTES: an unsigned little-endian field of the extracted fatbin.
u() { od -An -t "u$2" -j "$1" -N "$2" "$tmp/fatbin" | tr -d ' \n'; }

# Prints one line per entry: "ELF sm_80", "PTX compute_90".
list_fatbin() {
	local off total kind hs size arch

	[ "$(u 0 4)" = "$((0xba55ed50))" ] || fail "$1: no fatbin magic"
	total=$(($(u 8 8) + 16))
	[ "$total" -le "$(stat -c %s "$tmp/fatbin")" ] ||
		fail "$1: fatbin longer than its section"
	off=16
	while [ "$off" -lt "$total" ]; do
		kind=$(u "$off" 2)
		hs=$(u $((off + 4)) 4)
		size=$(u $((off + 8)) 8)
		arch=$(u $((off + 28)) 4)
		[ "$hs" -ge 64 ] || fail "$1: bad entry header at $off"
		case $kind in
		1) echo "PTX compute_$arch" ;;
		2) echo "ELF sm_$arch" ;;
		*) echo "kind $kind arch $arch" ;;
		esac
		off=$((off + hs + size))
	done
}

for lib in "$shlib" "$stlib"; do
	if [ "$lib" = "$stlib" ]; then
		(cd "$tmp" && ar x "$stlib_abs" gemv_int8.fatbin.o) ||
			fail "$stlib: no gemv_int8.fatbin.o member"
		obj=$tmp/gemv_int8.fatbin.o
	else
		obj=$lib
	fi
	readelf -SW "$obj" | grep -q ' \.nv_fatbin ' ||
		fail "$lib: no .nv_fatbin section"
	objcopy -O binary --only-section=.nv_fatbin "$obj" "$tmp/fatbin"
	entries=$(list_fatbin "$lib")
	echo "$lib:"
	while read -r e; do echo "  $e"; done <<<"$entries"
	for want in "ELF sm_80" "ELF sm_90" "PTX compute_90"; do
		echo "$entries" | grep -qx "$want" || fail "$lib: no $want"
	done
done

if readelf -d "$shlib" | grep NEEDED | grep -q libcuda; then
	fail "$shlib links libcuda; it must dlopen() it"
fi

cuobjdump=$(command -v cuobjdump || echo "$CUDA_HOME/bin/cuobjdump")
if [ -x "$cuobjdump" ]; then
	for f in "$shlib" "$BUILD/obj/kernels/gemv_int8.fatbin"; do
		[ -f "$f" ] || fail "$f: not built"
		elf=$("$cuobjdump" --list-elf "$f")
		ptx=$("$cuobjdump" --list-ptx "$f")
		echo "cuobjdump --list-elf $f:"; echo "$elf"
		echo "cuobjdump --list-ptx $f:"; echo "$ptx"
		echo "$elf" | grep -q sm_80 || fail "cuobjdump $f: no sm_80 ELF"
		echo "$elf" | grep -q sm_90 || fail "cuobjdump $f: no sm_90 ELF"
		echo "$ptx" | grep -q sm_90 || fail "cuobjdump $f: no compute_90 PTX"
	done
else
	echo "cuobjdump not installed: entries read from the fatbin headers"
fi

# The GPU benchmark (built with the tests; run.sh runs it on a GPU).
bench=$BUILD/tests/gpu-bench
[ -x "$bench" ] || make -s BUILD="$BUILD" "$bench" >/dev/null ||
	fail "$bench does not build"
set +e
"$bench" --quick >"$tmp/bench.out" 2>&1
rc=$?
set -e
sed 's/^/gpu-bench: /' "$tmp/bench.out"
case $rc in
0) have_gpu=1 ;;
77) grep -q '^SKIP: no CUDA backend' "$tmp/bench.out" ||
	fail "bench: exit 77 without its SKIP line"
    have_gpu=0 ;;
*) fail "bench --quick exited $rc" ;;
esac

# ---- the tools on the bundled model ----
# Absolute: the runs below start in a directory of their own.
case $BUILD in
/*) bin=$BUILD/bin ;;
*) bin=$PWD/$BUILD/bin ;;
esac
data=$PWD/tests/data
tok=$data/stories260K/tok512.bin
for t in ortho-pack ortho-run ortho-bench; do
	[ -x "$bin/$t" ] || fail "$bin/$t is not built"
done
"$bin/ortho-pack" --public "$data/stories260K/stories260K.bin" \
	--private "$data/private-a/stories260K-private-a.bin" \
	--label private-a --key-file "$tmp/keys" -o "$tmp/model" \
	>"$tmp/pack.log" || fail "ortho-pack of the bundled model"

# run NAME CMD...: in $tmp/cwd (cores would land there), stdout, stderr
# and exit status to $tmp/NAME.{out,err,rc}; ORTHO_LOG=info says which
# backend a context took. Never fails itself.
mkdir -p "$tmp/cwd"
run() {
	local name=$1 rc=0
	shift
	(cd "$tmp/cwd" && ulimit -c unlimited 2>/dev/null
	 ORTHO_LOG=info ORTHO_AUTHORITY=none "$@") \
		>"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
	echo "$rc" >"$tmp/$name.rc"
}
ppl_of() { awk '/^ppl /{v = $2} END {print v}' "$tmp/$1.out"; }

# A clean failure: non-zero, not a signal, no core, CUDA named on stderr.
clean_failure() {	# name what
	local rc
	rc=$(cat "$tmp/$1.rc")
	echo "$2: exit $rc: $(tr '\n' '|' <"$tmp/$1.err")"
	[ "$rc" -ne 0 ] || fail "$2 succeeded without a device"
	[ "$rc" -lt 126 ] || fail "$2 died (exit $rc)"
	grep -q CUDA "$tmp/$1.err" || fail "$2: the message does not name CUDA"
	if compgen -G "$tmp/cwd/core*" >/dev/null; then
		fail "$2 left a core file"
	fi
}

for opt in --no-ortho "--key-file $tmp/keys"; do
	for text in $data/retain.txt $data/private-a/forget.txt; do
		for b in cpu auto cuda; do
			# shellcheck disable=SC2086
			run "ppl-$b" "$bin/ortho-run" ppl "$tmp/model" \
				--tokenizer "$tok" --text "$text" \
				--backend "$b" $opt
		done
		c=$(ppl_of ppl-cpu)
		a=$(ppl_of ppl-auto)
		g=$(ppl_of ppl-cuda)
		what="$(basename "$text") ${opt%% *}"
		if [ "$(cat "$tmp/ppl-cpu.rc")" != 0 ] || [ -z "$c" ]; then
			fail "$what: --backend cpu: $(cat "$tmp/ppl-cpu.err")"
		fi
		if [ "$(cat "$tmp/ppl-auto.rc")" != 0 ] || [ -z "$a" ]; then
			fail "$what: --backend auto: $(cat "$tmp/ppl-auto.err")"
		fi
		if [ "$have_gpu" = 0 ]; then
			grep -q 'backend auto: no usable CUDA device; using the CPU' \
				"$tmp/ppl-auto.err" ||
				fail "$what: auto did not say it took the CPU"
			[ "$a" = "$c" ] || fail "$what: auto ppl $a, cpu ppl $c"
			echo "ok: $what: auto (on the CPU) $a = cpu $c"
			clean_failure ppl-cuda "$what: ortho-run --backend cuda"
			[ -z "$g" ] || fail "$what: --backend cuda printed a ppl"
		else
			grep -q 'backend cuda:0: ' "$tmp/ppl-auto.err" ||
				fail "$what: auto did not take the device"
			[ "$(cat "$tmp/ppl-cuda.rc")" = 0 ] ||
				fail "$what: --backend cuda: $(cat "$tmp/ppl-cuda.err")"
			awk -v c="$c" -v a="$a" -v g="$g" 'BEGIN {
				d1 = (a - c) / c; d2 = (g - c) / c
				exit !(g != "" && d1 < 1e-3 && d1 > -1e-3 &&
				       d2 < 1e-3 && d2 > -1e-3) }' ||
				fail "$what: cpu $c, auto $a, cuda $g"
			echo "ok: $what: cpu $c, auto (device) $a, cuda $g"
		fi
	done
done

# ortho-bench gemv: --backend cuda fails cleanly in one line without a
# device, and runs (outputs checked) with one.
for b in cuda cuda:1; do
	run "gemv-$b" "$bin/ortho-bench" gemv --rows 512 --cols 512 \
		--iters 10 --json --backend "$b"
	[ "$have_gpu" = 1 ] && [ "$b" = cuda:1 ] && continue
	if [ "$have_gpu" = 0 ]; then
		clean_failure "gemv-$b" "ortho-bench gemv --backend $b"
		[ "$(wc -l <"$tmp/gemv-$b.err")" = 1 ] ||
			fail "ortho-bench gemv --backend $b: not one line"
		grep -qx "ortho-bench: backend $b: no CUDA driver/device (.*)" \
			"$tmp/gemv-$b.err" ||
			fail "ortho-bench gemv --backend $b: the message"
		[ ! -s "$tmp/gemv-$b.out" ] ||
			fail "ortho-bench gemv --backend $b: printed figures"
	else
		[ "$(cat "$tmp/gemv-$b.rc")" = 0 ] ||
			fail "ortho-bench gemv --backend $b: $(cat "$tmp/gemv-$b.err")"
		cat "$tmp/gemv-$b.out"
		if ! grep -q '"backend": "cuda:0"' "$tmp/gemv-$b.out" ||
		   ! grep -q '"twin_ok": true' "$tmp/gemv-$b.out"; then
			fail "ortho-bench gemv --backend $b: figures"
		fi
	fi
done
run gemv-bad "$bin/ortho-bench" gemv --rows 8 --cols 8 --backend gpu
[ "$(cat "$tmp/gemv-bad.rc")" = 2 ] ||
	fail "ortho-bench gemv --backend gpu: exit $(cat "$tmp/gemv-bad.rc"), want 2"
echo "PASS"
