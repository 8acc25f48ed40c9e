#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages ortho builds and tests with (run as root).
# Optional parts (kernel module tests, CUDA) are skipped when their packages
# or the CUDA toolkit are absent; this installs all that Debian has.
set -eu
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (sudo $0)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential pkg-config ca-certificates \
	libssl-dev openssl liburing-dev check libsubunit-dev \
	libopenblas-dev libkeyutils-dev \
	python3 procps util-linux passwd kmod \
	linux-headers-amd64 linux-image-amd64 qemu-system-x86 \
	busybox-static cpio sparse
