#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/kmod/run.sh [--lint]: build and test ortho.ko (make check-kmod).
#
#  1. builds the module against the headers of the kernel it will boot,
#     with W=1 and sparse (C=2): any warning fails the run (--lint stops
#     here);
#  2. builds the static test programs (kmod_test; kdev_test, which links
#     lib/kdev.c and daemon/orthod-kmod.c; kget; kpolled), the project's tools
#     ("make all": orthod, orthoctl, ortho-run, dynamically linked) and a
#     tiny packed model for tests/kmod/orthod_e2e.sh, and an initramfs with
#     busybox;
#  3. boots Debian's kernel in qemu (TCG, no KVM needed), where
#     tests/kmod/init.sh runs every case as root or uid 1000;
#  4. reads the serial console: every case must print PASS, none FAIL, no
#     oops, BUG or WARNING in the kernel log, and the run must finish.
#
# Exit 0 pass, 1 fail, 77 skip (no qemu, kernel image, headers, busybox).
# Overrides: ORTHO_KMOD_KERNEL (a vmlinuz), ORTHO_KMOD_KDIR (its headers),
# QEMU, ORTHO_KMOD_TIMEOUT (seconds, default 600), ORTHO_KMOD_SMP (2).
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/build/kmod-test"
timeout_s=${ORTHO_KMOD_TIMEOUT:-600}
qemu=${QEMU:-qemu-system-x86_64}
lint_only=0
[ "${1:-}" = "--lint" ] && lint_only=1
t_start=$(date +%s)

skip() {
	echo "SKIP: $*"
	exit 77
}

fail() {
	echo "FAIL: $*"
	exit 1
}

# ---- what we need ----
if [ -n "${ORTHO_KMOD_KERNEL:-}" ]; then
	kernel=$ORTHO_KMOD_KERNEL
else
	kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' 2>/dev/null |
		sort -V | tail -n 1)
fi
if [ -z "$kernel" ] || [ ! -f "$kernel" ]; then
	skip "no kernel image (/boot/vmlinuz-*-amd64; apt-get install linux-image-amd64)"
fi
[ -r "$kernel" ] || skip "$kernel is not readable by $(id -un)"
kver=${kernel##*/vmlinuz-}
kdir=${ORTHO_KMOD_KDIR:-/usr/src/linux-headers-$kver}
[ -f "$kdir/Makefile" ] || skip "no headers for $kver at $kdir (apt-get install linux-headers-$kver)"
if [ $lint_only -eq 0 ]; then
	command -v "$qemu" >/dev/null 2>&1 || skip "$qemu not found (apt-get install qemu-system-x86)"
	busybox=$(command -v busybox 2>/dev/null) || skip "busybox not found (apt-get install busybox-static)"
	if command -v readelf >/dev/null 2>&1 &&
	   readelf -l "$busybox" 2>/dev/null | grep -q INTERP; then
		skip "$busybox is dynamically linked (apt-get install busybox-static)"
	fi
	command -v cpio >/dev/null 2>&1 || skip "cpio not found (apt-get install cpio)"
	command -v gzip >/dev/null 2>&1 || skip "gzip not found"
fi
mkdir -p "$work" || fail "cannot create $work"

# ---- 1. the module, with W=1 and sparse ----
# A copy keeps kbuild's output out of the source tree and away from a
# concurrent "make kmod".
src="$work/src"
rm -rf "$src"
if ! mkdir -p "$src/kmod/uapi" || ! cp "$root/Kbuild" "$src/Kbuild" ||
   ! cp "$root"/kmod/Kbuild "$root"/kmod/*.c "$root"/kmod/*.h "$src/kmod/" ||
   ! cp "$root"/kmod/uapi/*.h "$src/kmod/uapi/"; then
	fail "cannot copy the module sources"
fi
sparse_flag=C=2
if ! command -v sparse >/dev/null 2>&1; then
	echo "kmod: sparse not found (apt-get install sparse): W=1 only"
	sparse_flag=C=0
fi
echo "kmod: building ortho.ko for $kver (W=1 $sparse_flag)"
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$kdir" M="$src" W=1 $sparse_flag modules >"$work/build.log" 2>&1; then
	cat "$work/build.log"
	fail "module build"
fi
if grep -Ei 'warning|error' "$work/build.log" | grep -v -e 'Skipping BTF' -e 'jobserver unavailable' >"$work/lint.log"; then
	cat "$work/lint.log"
	fail "the module build or sparse reported the lines above"
fi
echo "kmod: module build clean (W=1, sparse)"
[ $lint_only -eq 1 ] && exit 0
ko="$src/kmod/ortho.ko"
modver=$(modinfo -F vermagic "$ko" 2>/dev/null | cut -d' ' -f1)
if [ -n "$modver" ] && [ "$modver" != "$kver" ]; then
	fail "ortho.ko is built for $modver, the kernel is $kver"
fi

# ---- 2. static test programs and the initramfs ----
cc=${CC:-cc}
cflags="-std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wvla -Wno-unused-parameter -Werror"
t=tests/kmod
cd "$root" || fail "cd $root"
# shellcheck disable=SC2086
$cc $cflags -static -o "$work/kmod_test" $t/kmod_test.c $t/kmod_test_revoke.c \
	$t/kmod_test_admin.c $t/kt_util.c || fail "building kmod_test"
# shellcheck disable=SC2086
$cc $cflags -static -o "$work/runas" $t/runas.c || fail "building runas"
# The library's and orthod's module clients, compiled from their sources.
# shellcheck disable=SC2086
$cc $cflags -static -Ilib -Ilib/include -Idaemon -o "$work/kdev_test" \
	$t/kdev_test.c $t/kt_util.c lib/kdev.c lib/secmem.c \
	daemon/orthod-kmod.c || fail "building kdev_test"
# shellcheck disable=SC2086
$cc $cflags -static -Ilib -Ilib/include -o "$work/kget" $t/kget.c lib/kdev.c \
	lib/secmem.c || fail "building kget"
# orthod, orthoctl and ortho-run as built, and what they work on: the
# bundled model packed with one fine-tune (five shards, 1 MiB) and its key
# file, the tokenizer and two lines of text (rounds are slow under TCG).
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$root" all \
	>"$work/tools.log" 2>&1 || { cat "$work/tools.log"; fail "building the tools"; }
# A polled-mode library client, linked like the tools.
# shellcheck disable=SC2086,SC2016
$cc $cflags -Ilib/include -o "$work/kpolled" $t/kpolled.c -Lbuild/lib \
	-l:libortho-rt.so.0 -Wl,-rpath,'$ORIGIN/../lib' || fail "building kpolled"
e2e="$work/e2e-data"
rm -rf "$e2e"
mkdir -p "$e2e" || fail "cannot create $e2e"
d=tests/data
build/bin/ortho-pack --public $d/stories260K/stories260K.bin \
	--private $d/private-a/stories260K-private-a.bin --label private-a \
	--key-file "$e2e/keys" -o "$e2e/model" >"$work/pack.log" 2>&1 ||
	{ cat "$work/pack.log"; fail "packing the model for orthod_e2e.sh"; }
cp $d/stories260K/tok512.bin "$e2e/tok.bin" &&
	head -n 2 $d/private-a/forget.txt >"$e2e/text.txt" ||
	fail "copying the tokenizer and text"
# tests/test_kdev.c (Check, dynamically linked) runs too when Check is here.
test_kdev=
if pkg-config --exists check 2>/dev/null && command -v ldd >/dev/null 2>&1; then
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$root" \
		build/tests/test_kdev >"$work/test_kdev.log" 2>&1 ||
		{ cat "$work/test_kdev.log"; fail "building build/tests/test_kdev"; }
	test_kdev="$root/build/tests/test_kdev"
else
	echo "kmod: Check not found: tests/test_kdev.c is not run in the VM"
fi
# shellcheck disable=SC2086
"$t/mkinitramfs.sh" "$work/initramfs.cpio.gz" "$ko" "$busybox" "$t/init.sh" \
	"$work/kmod_test" "$work/kdev_test" "$work/runas" "$work/kget" \
	"$work/kpolled" $test_kdev \
	build/bin/orthod build/bin/orthoctl build/bin/ortho-run \
	"$t/orthod_e2e.sh" "/data=$e2e" || fail "building the initramfs"
"$work/kmod_test" --list | awk '{ print $2 }' >"$work/expected" || fail "kmod_test --list"
"$work/kdev_test" --list | awk '{ print $2 }' >>"$work/expected" || fail "kdev_test --list"
[ -n "$test_kdev" ] && echo test_kdev >>"$work/expected"
sh "$t/orthod_e2e.sh" --list | awk '{ print $2 }' >>"$work/expected" ||
	fail "orthod_e2e.sh --list"
echo unload >>"$work/expected"

# ---- 3. boot ----
log="$work/serial.log"
rm -f "$log"
echo "kmod: booting $kernel in qemu (TCG), console in ${log#"$root"/}"
t_boot=$(date +%s)
timeout "$timeout_s" "$qemu" -accel tcg -m 512 -smp "${ORTHO_KMOD_SMP:-2}" \
	-nodefaults -nographic -no-reboot \
	-kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
	-append "console=ttyS0 panic=1 loglevel=5 audit=1 audit_backlog_limit=8192" \
	-serial "file:$log" </dev/null >"$work/qemu.log" 2>&1
qrc=$?
t_end=$(date +%s)
[ -f "$log" ] || { cat "$work/qemu.log"; fail "qemu wrote no console log"; }
tr -d '\r' <"$log" >"$work/console.txt"
c="$work/console.txt"

# ---- 4. results ----
grep -E '^(PASS|FAIL): |^# ' "$c"
status=0
if [ $qrc -eq 124 ]; then
	echo "FAIL: qemu timed out after ${timeout_s}s"
	status=1
elif [ $qrc -ne 0 ]; then
	cat "$work/qemu.log"
	echo "FAIL: qemu exited with $qrc"
	status=1
fi
if ! grep -q '^ORTHO-KMOD-DONE' "$c"; then
	echo "FAIL: no ORTHO-KMOD-DONE marker; the console ends with:"
	tail -n 40 "$c"
	status=1
fi
grep -q '^FAIL: ' "$c" && status=1
pass=0 missing=0
while read -r name; do
	if grep -qx "PASS: $name" "$c"; then
		pass=$((pass + 1))
	elif ! grep -q "^FAIL: $name" "$c"; then
		echo "FAIL: $name: no result"
		missing=$((missing + 1))
		status=1
	fi
done <"$work/expected"
oops='BUG:|Oops|WARNING:|Call Trace|Kernel panic|general protection fault'
oops="$oops|UBSAN|KASAN|refcount_t|list_(add|del) corruption|blocked for more than|RIP: "
if grep -E "$oops" "$c" >"$work/oops.txt"; then
	echo "FAIL: the kernel log shows an oops, BUG or WARNING:"
	sed -n '1,40p' "$work/oops.txt"
	status=1
fi
total=$(wc -l <"$work/expected")
echo "kmod: $pass/$total passed, boot and tests $((t_end - t_boot)) s, all $((t_end - t_start)) s"
[ $status -eq 0 ] || echo "kmod: full console log in $log"
exit $status
