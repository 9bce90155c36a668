#!/bin/busybox sh
# The guest's /init and agent (busybox sh). It mounts the sandbox disk at /mnt, says it is ready on the
# serial console, then serves one request per line on that console:
#   P <tag>                                           → @@TRELLIS-PONG <tag>
#   X <tag> <timeoutS> <outBytesMax> <cmdB64> <stdinB64|->
#       runs the base64-decoded script with `sh` in /mnt, stdin from the decoded bytes, killed after timeoutS
#       → @@TRELLIS-EXIT <tag> <exitCode> <stdoutBytes> <stderrBytes> <stdoutB64|-> <stderrB64|->
# Output is cut to outBytesMax bytes each and base64'd on one line, so kernel messages can never be mistaken
# for a reply, and binary output survives the console. The host writes one request at a time.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
# Debian ships virtio as modules and no modules.dep in the package: load them in dependency order.
for m in virtio_ring virtio virtio_blk virtio_mmio; do insmod "/modules/$m.ko" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
if mount -t ext4 /dev/vda /mnt; then disk=ok; else disk=missing; fi
# Raw, no echo: a request line may be longer than the canonical-mode line limit, and echo would look like
# output to the host.
stty -F /dev/ttyS0 raw -echo 2>/dev/null

run() {
  echo "$4" | base64 -d >/tmp/cmd.sh
  if [ "$5" = "-" ]; then : >/tmp/in; else echo "$5" | base64 -d >/tmp/in; fi
  (cd /mnt && timeout -s KILL "$2" sh /tmp/cmd.sh </tmp/in >/tmp/out 2>/tmp/err)
  rc=$?
  ol=$(wc -c </tmp/out)
  el=$(wc -c </tmp/err)
  o=$(head -c "$3" /tmp/out | base64 -w 0)
  e=$(head -c "$3" /tmp/err | base64 -w 0)
  echo "@@TRELLIS-EXIT $1 $rc $ol $el ${o:--} ${e:--}"
}

# Freed cache pages are zeroed (init_on_free=1), so a state saved after this is smaller.
sync
echo 3 >/proc/sys/vm/drop_caches
echo "@@TRELLIS-READY disk=$disk" >/dev/ttyS0
while read -r op tag a b c d; do
  case "$op" in
    P) echo "@@TRELLIS-PONG $tag" ;;
    X) run "$tag" "$a" "$b" "$c" "$d" ;;
    *) echo "@@TRELLIS-BAD $tag" ;;
  esac
done </dev/ttyS0 >/dev/ttyS0 2>/dev/null
# The console closed: nothing more can reach this guest, so power off rather than spin.
poweroff -f
