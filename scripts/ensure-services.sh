#!/usr/bin/env bash
# Installs the servers the tests start (Debian packages), only when they are missing.
# Root: `apt-get update` once, then `apt-get install -y`. Not root and missing: one line saying what to install,
# and a failing exit, because tests never skip a missing server.
set -euo pipefail

# binary:package pairs the test suite needs.
needed=("nats-server:nats-server" "redis-server:redis-server")
# The Redis gateway's TLS test makes its CA and server certificate with openssl.
needed+=("openssl:openssl")
# The qemu worker driver and its guest build (scripts/build-guest.sh): QEMU, qemu-img, lz4 for the kernel
# payload, mkfs.ext4 for the base disk.
needed+=("qemu-system-x86_64:qemu-system-x86" "qemu-img:qemu-utils" "lz4:lz4" "mkfs.ext4:e2fsprogs")
# The HTML report test of the capacity simulator (test/capacity) opens reports in headless chromium.
needed+=("chromium:chromium")

missing=()
for pair in "${needed[@]}"; do
  bin="${pair%%:*}"
  pkg="${pair##*:}"
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "trellis tests need: apt-get install -y ${missing[*]} (run as root, then re-run the test command)" >&2
  exit 1
fi

echo "installing test servers: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's redis-server package may start a system instance on 6379; tests start their own on free ports.
for pair in "${needed[@]}"; do
  bin="${pair%%:*}"
  PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || { echo "failed to install $bin" >&2; exit 1; }
done
