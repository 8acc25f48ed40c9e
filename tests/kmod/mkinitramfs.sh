#!/bin/sh
# SPDX-License-Identifier: MIT
# mkinitramfs.sh OUT.cpio.gz MODULE.ko BUSYBOX INIT [PROGRAM | /DEST=SRC]...
# Builds the ortho.ko test initramfs: a static busybox, the init script,
# the module at /lib/modules/ortho.ko and the test programs in /bin (with
# the libraries of any that is dynamically linked); an argument /DEST=SRC
# copies the file or directory SRC to /DEST (modes kept), for test data.
# Needs no root: files are owned by 0:0 in the archive, and /dev/console
# comes from the kernel's built-in initramfs.
set -eu
if [ $# -lt 4 ]; then
	echo "usage: $0 OUT.cpio.gz MODULE.ko BUSYBOX INIT [PROGRAM | /DEST=SRC]..." >&2
	exit 2
fi
out=$1 ko=$2 busybox=$3 init=$4
shift 4
stage=$(mktemp -d "${TMPDIR:-/tmp}/ortho-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/modules" "$stage/proc" "$stage/sys" \
	"$stage/dev" "$stage/tmp"
install -m 0755 "$busybox" "$stage/bin/busybox"
install -m 0755 "$init" "$stage/init"
install -m 0644 "$ko" "$stage/lib/modules/ortho.ko"
# A dynamically linked program brings its loader and libraries along, at
# the paths ldd names (following symlinks), so the Check programs built by
# "make tests" run in the VM as they do on the host. A library from outside
# the system's directories (the build tree's libortho-rt) goes to /lib,
# where the tools' run path ($ORIGIN/../lib) finds it beside /bin.
copy_libs() {
	ldd "$1" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
	while read -r lib; do
		case $lib in
		/lib/* | /lib64/* | /usr/lib/* | /usr/lib64/*) dest=$lib ;;
		*) dest=/lib/$(basename "$lib") ;;
		esac
		[ -e "$stage$dest" ] && continue
		mkdir -p "$stage$(dirname "$dest")"
		cp -L "$lib" "$stage$dest"
	done
}
for p in "$@"; do
	case $p in
	/*=*)
		dest=${p%%=*}
		mkdir -p "$stage$(dirname "$dest")"
		cp -R -p "${p#*=}" "$stage$dest"
		continue
		;;
	esac
	install -m 0755 "$p" "$stage/bin/$(basename "$p")"
	if readelf -l "$p" 2>/dev/null | grep -q INTERP; then
		copy_libs "$p"
	fi
done
# busybox sh runs /init; the shebang names /bin/sh before --install.
ln -s busybox "$stage/bin/sh"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
