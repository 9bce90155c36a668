#!/usr/bin/env bash
# Builds the qemu driver's guest from Debian packages only (no other downloads), into a cache directory:
#   vmlinux        the cloud kernel's uncompressed ELF, so QEMU enters it through PVH and skips decompression
#   initramfs.cpio busybox-static, the virtio modules (insmod'ed in order by /init) and the guest agent
#   base.img       a raw ext4 image every sandbox disk is a qcow2 overlay of
#   stamp          written last; its presence means the build is complete (a half build is redone)
# Usage: scripts/build-guest.sh [CACHE_DIR]   (default .cache/guest next to this repo)
# Needs: apt-get (download only, no root needed for that), dpkg-deb, lz4, mkfs.ext4.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/.cache/guest}"
# The guest build's version: bump it when this script or guest/ changes so caches are rebuilt.
version="4"
base_mib="${TRELLIS_GUEST_BASE_MIB:-256}"

built() { [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$version" ]; }
built && exit 0
mkdir -p "$out"
# One build at a time per cache: test files run in parallel, and a second build's files moved over the first's
# replace a base image that a running sandbox's overlay already reads (seen as "Bad message" in the guest).
# The one that waited finds the stamp and is done.
exec 9>"$out/.lock"
flock 9
built && exit 0
work="$(mktemp -d "${TMPDIR:-/tmp}/trellis-guest.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# The cloud kernel flavour is a metapackage; download the versioned image it depends on.
kernel_of() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
kernel_pkg="$(kernel_of)"
if [ -z "$kernel_pkg" ] && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq >/dev/null
  kernel_pkg="$(kernel_of)"
fi
if [ -z "$kernel_pkg" ]; then
  echo "build-guest: linux-image-cloud-amd64 is unknown to apt; run apt-get update first" >&2
  exit 1
fi
apt-get download -q "$kernel_pkg" busybox-static >/dev/null
dpkg-deb -x linux-image-*.deb kernel
dpkg-deb -x busybox-static_*.deb bb

# vmlinux: the bzImage payload is LZ4 (legacy frame, magic 02 21 4c 18); decompress from the first magic.
# lz4 complains about the trailing bytes after the payload, which is expected; the ELF check decides.
bz="$(ls kernel/boot/vmlinuz-*)"
offset="$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$bz" | head -n1 | cut -d: -f1)"
[ -n "$offset" ] || { echo "build-guest: no LZ4 payload in $bz" >&2; exit 1; }
tail -c "+$((offset + 1))" "$bz" | lz4 -dc >vmlinux 2>/dev/null || true
if [ "$(head -c 4 vmlinux | od -An -c | tr -d ' ')" != "177ELF" ]; then
  echo "build-guest: the extracted kernel is not an ELF file" >&2
  exit 1
fi

# Initramfs: busybox, the modules virtio needs on microvm, the agent as /init.
mkdir -p root/bin root/dev root/proc root/sys root/tmp root/mnt root/modules
cp bb/bin/busybox root/bin/busybox
for m in virtio_ring virtio virtio_blk virtio_mmio; do
  ko="$(find kernel/lib/modules -name "$m.ko*" | head -n1)"
  [ -n "$ko" ] || { echo "build-guest: module $m not found" >&2; exit 1; }
  case "$ko" in
    *.xz) xz -dc "$ko" >"root/modules/$m.ko" ;;
    *.zst) unzstd -qc "$ko" >"root/modules/$m.ko" ;;
    *) cp "$ko" "root/modules/$m.ko" ;;
  esac
done
cp "$here/guest/init.sh" root/init
chmod 755 root/init
# The downloaded busybox's cpio, always: one path on every machine (a fresh one has no cpio), by absolute
# path because it runs inside root/.
(cd root && find . | "$work/bb/bin/busybox" cpio -o -H newc) >initramfs.cpio 2>/dev/null

# The base disk: sparse raw ext4, initialised lazily so it costs no writes now.
truncate -s "${base_mib}M" base.img
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 -L trellis base.img

mv vmlinux initramfs.cpio base.img "$out/"
echo "$kernel_pkg" >"$out/kernel-package"
echo "$version" >"$out/stamp"
echo "build-guest: built $out ($kernel_pkg)" >&2
