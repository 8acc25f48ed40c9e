#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the ortho.ko test initramfs (busybox sh, as root). Loads the
# module with a short grace period, runs every case of kmod_test (the
# "user" ones as uid 1000 after root's setup) and of kdev_test, then
# orthod_e2e.sh (orthod, orthoctl and ortho-run on the module), unloads
# the module, dumps the kernel log for run.sh to scan, prints
# ORTHO-KMOD-DONE and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp

# Only warnings and worse interleave with the results on the console; the
# whole log follows at the end. Audit records reach the log through
# printk, which must not drop them.
echo 5 >/proc/sys/kernel/printk
echo 0 >/proc/sys/kernel/printk_ratelimit
echo "ORTHO-KMOD-START $(uname -r)"

if insmod /lib/modules/ortho.ko grace_ms=300; then
	/bin/kmod_test --list >/tmp/cases
	while read -r mode name; do
		echo "ORTHO-KMOD-CASE $name ($mode)"
		if [ "$mode" = user ]; then
			/bin/kmod_test --setup "$name" </dev/null &&
				/bin/runas 1000 1000 /bin/kmod_test "$name" </dev/null
		else
			/bin/kmod_test "$name" </dev/null
		fi
	done </tmp/cases
	# The library's and orthod's clients of the module (lib/kdev.c,
	# daemon/orthod-kmod.c), on the same module.
	/bin/kdev_test --list >/tmp/kdev-cases
	while read -r mode name; do
		echo "ORTHO-KMOD-CASE $name ($mode)"
		/bin/kdev_test "$name" </dev/null
	done </tmp/kdev-cases
	# The Check program of the same clients, when run.sh could build it.
	if [ -x /bin/test_kdev ]; then
		echo "ORTHO-KMOD-CASE test_kdev (root)"
		CK_FORK=yes /bin/test_kdev >/tmp/test_kdev.log 2>&1 </dev/null
		rc=$?
		# 0, not 77: with the module loaded and as root nothing is skipped.
		if [ $rc -eq 0 ]; then
			echo "# test_kdev: $(grep -m1 -o 'Checks: [0-9]*' /tmp/test_kdev.log)"
			echo "PASS: test_kdev"
		else
			sed 's/^/# /' /tmp/test_kdev.log
			echo "FAIL: test_kdev: exit $rc"
		fi
	fi
	# The real orthod, orthoctl and library clients on the module.
	/bin/orthod_e2e.sh </dev/null
	# Revoked keys and all: unloading must be clean.
	if rmmod ortho; then
		echo "PASS: unload"
	else
		echo "FAIL: unload: rmmod ortho failed"
	fi
else
	echo "FAIL: insmod: cannot load /lib/modules/ortho.ko"
fi

echo "ORTHO-KMOD-DMESG-BEGIN"
dmesg
echo "ORTHO-KMOD-DMESG-END"
echo "ORTHO-KMOD-DONE"
poweroff -f
