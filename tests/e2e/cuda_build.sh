#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The CUDA build: both libraries carry the kernels' fatbin in .nv_fatbin
# with sm_80 and sm_90 machine code and compute_90 PTX (read here from the
# container's own headers, and with cuobjdump where it is installed); the
# shared library does not link libcuda (it is dlopen()ed); the GPU
# benchmark compiles against the library and, without a device, says SKIP.
# SKIP when the toolkit is missing.
set -euo pipefail

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
	elf=$("$cuobjdump" --list-elf "$shlib")
	ptx=$("$cuobjdump" --list-ptx "$shlib")
	echo "cuobjdump --list-elf:"; echo "$elf"
	echo "cuobjdump --list-ptx:"; echo "$ptx"
	echo "$elf" | grep -q sm_80 || fail "cuobjdump: no sm_80 ELF"
	echo "$elf" | grep -q sm_90 || fail "cuobjdump: no sm_90 ELF"
	echo "$ptx" | grep -q sm_90 || fail "cuobjdump: no compute_90 PTX"
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
cat "$tmp/bench.out"
case $rc in
0) ;;
77) grep -q '^SKIP: no CUDA backend' "$tmp/bench.out" ||
	fail "bench: exit 77 without its SKIP line" ;;
*) fail "bench --quick exited $rc" ;;
esac
echo "PASS"
