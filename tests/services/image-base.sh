#!/usr/bin/env bash
# The root filesystem of the local base image that `make image` and tests/image/ build the
# Dockerfile on (no registry exists here, so no python:3.11-slim to pull): Debian SUITE,
# minbase variant, plus the PACKAGES (python3 and what the Dockerfile needs).
#
#   image-base.sh ROOTFS SUITE MIRROR PACKAGE...
#
# tests/services/image.py runs it as root and caches the result keyed by a hash of SUITE,
# the PACKAGES and this file: change any of them and the base is built anew.
set -euo pipefail

root=$1 suite=$2 mirror=$3
shift 3
include=$(IFS=,; echo "$*")

debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror"

# What a container runtime provides, and what only records this build.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/debconf/*-old "$root"/var/log/bootstrap.log
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
find "$root/var/log" -type f -exec truncate -s 0 {} +
