#!/bin/bash
# SPDX-License-Identifier: MIT
# make install into a DESTDIR: every file in place (the library with its
# symlinks, the public headers, the tools, orthod, the systemd unit with
# ExecStart at PREFIX/bin/orthod); the installed ortho-pack and ortho-run
# pack the bundled model and compute its perplexity through the installed
# library (the loader's own account of what it loaded), the same figures
# as the build tree's; the installed headers compile and link against the
# installed library; the unit passes systemd-analyze verify where that is
# installed; make uninstall removes every file again.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
text=$data/private-a/forget.txt
prefix=/opt/ortho-e2e

for t in ortho-pack ortho-run orthoctl orthod; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }
unset LD_LIBRARY_PATH

# The same build the other tests use: the sanitizer one lives in build-san.
mk=(make --no-print-directory BUILD="$BUILD" PREFIX="$prefix" DESTDIR="$root")
san=()
if [ "$BUILD" = build-san ]; then
	mk+=(SANITIZE=1)
	san=("-fsanitize=address,undefined")
fi
if ! "${mk[@]}" install >"$work/install.log" 2>&1; then
	bad "make install failed"; tail -n 20 "$work/install.log"; exit 1
fi
ok "make install DESTDIR=... PREFIX=$prefix"

echo "== the files"
p=$root$prefix
ver=$(readlink "$BUILD/lib/libortho-rt.so.0")	# libortho-rt.so.X.Y.Z
for f in bin/ortho-pack bin/ortho-run bin/orthoctl bin/orthod \
	lib/$ver lib/libortho-rt.a lib/systemd/system/orthod.service; do
	[ -f "$p/$f" ] || bad "$prefix/$f is missing"
done
for t in ortho-pack ortho-run orthoctl orthod; do
	[ -x "$p/bin/$t" ] || bad "$prefix/bin/$t is not executable"
done
[ "$(readlink "$p/lib/libortho-rt.so.0")" = "$ver" ] &&
	[ "$(readlink "$p/lib/libortho-rt.so")" = libortho-rt.so.0 ] &&
	ok "lib: $ver, libortho-rt.so.0 -> $ver, libortho-rt.so -> libortho-rt.so.0" ||
	bad "library symlinks: $(ls -l "$p"/lib/libortho*)"
for h in lib/include/*.h; do
	cmp -s "$h" "$p/include/$(basename "$h")" || bad "header $(basename "$h") not installed"
done
ok "headers: $(cd lib/include && echo *.h)"
unit=$p/lib/systemd/system/orthod.service
grep -q "^ExecStart=$prefix/bin/orthod --state-dir " "$unit" &&
	! grep -q "/usr/bin/orthod" "$unit" &&
	ok "unit: ExecStart=$prefix/bin/orthod ..." ||
	bad "unit: $(grep '^ExecStart' "$unit")"

echo "== the installed tools, through the installed library"
# The loader's account: which libortho-rt it mapped for the installed
# ortho-run (not the build tree's, which no path here names).
loaded=$(LD_DEBUG=libs "$p/bin/ortho-run" --help 2>&1 >/dev/null |
	sed -n 's/.*calling init: \(.*libortho-rt[^ ]*\).*/\1/p' | head -n1)
case $loaded in
"$p"/bin/../lib/libortho-rt.so.0 | "$p"/lib/libortho-rt.so.0)
	ok "ortho-run loads $loaded" ;;
*)	bad "ortho-run loads '$loaded', not the installed library"
	ldd "$p/bin/ortho-run" | grep ortho || true ;;
esac
"$p/bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/model" -q \
	>"$work/pack.log" 2>&1 || { bad "installed ortho-pack failed"; cat "$work/pack.log"; }
ppl() {		# ortho-run model [options]
	"$1" ppl "$work/model" --tokenizer $tok --text $text "${@:2}" 2>/dev/null |
		awk '/^ppl /{print $2}'
}
for o in --no-ortho "--key-file $work/keys"; do
	# shellcheck disable=SC2086
	got=$(ppl "$p/bin/ortho-run" $o)
	# shellcheck disable=SC2086
	want=$(ppl "$bin/ortho-run" $o)
	[ -n "$got" ] && [ "$got" = "$want" ] &&
		ok "installed ortho-run ppl ${o%% *}: $got (the build tree's: $want)" ||
		bad "installed ortho-run ppl ${o%% *}: '$got', the build tree's: '$want'"
done

echo "== the installed headers and library"
if command -v "${CC:-cc}" >/dev/null; then
	cat >"$work/use.c" <<'EOF'
#include <ortho.h>
#include <ortho-admin.h>
#include <stdio.h>

int main(void)
{
	printf("%s\n", ortho_strerror(-2));
	return 0;
}
EOF
	if "${CC:-cc}" "${san[@]}" -I"$p/include" -o "$work/use" "$work/use.c" \
		-L"$p/lib" -lortho-rt -Wl,-rpath,"$p/lib" 2>"$work/cc.log" &&
		"$work/use" >/dev/null 2>>"$work/cc.log"; then
		ok "a program built against $prefix/include and -lortho-rt runs"
	else
		bad "building against the installed headers: $(head -n5 "$work/cc.log")"
	fi
else
	echo "SKIP (this part): no C compiler"
fi

echo "== the unit"
if command -v systemd-analyze >/dev/null; then
	# verify wants ExecStart's file to exist: the installed one, in DESTDIR.
	mkdir "$work/unit"
	sed "s|^ExecStart=$prefix/bin/orthod |ExecStart=$p/bin/orthod |" "$unit" \
		>"$work/unit/orthod.service"
	rc=0
	systemd-analyze verify "$work/unit/orthod.service" >"$work/verify.log" 2>&1 || rc=$?
	# It warns about what it ignores and still exits 0: any word about our
	# unit is a fault (words about the machine's other units are not ours).
	if [ $rc -eq 0 ] && ! grep -q "orthod" "$work/verify.log"; then
		ok "systemd-analyze verify: clean$([ -s "$work/verify.log" ] &&
			echo " (other units: $(wc -l <"$work/verify.log") lines)")"
	else
		bad "systemd-analyze verify (exit $rc): $(cat "$work/verify.log")"
	fi
else
	echo "SKIP (this part): systemd-analyze is not installed: the unit is not verified"
fi

echo "== make uninstall"
"${mk[@]}" uninstall >"$work/uninstall.log" 2>&1 || bad "make uninstall failed"
left=$(find "$root" ! -type d | sed "s|^$root||")
[ -z "$left" ] && ok "make uninstall removed every file" ||
	bad "left after make uninstall: $left"
[ "$fail" -eq 0 ] && echo "install: all passed"
exit "$fail"
