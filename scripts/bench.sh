#!/usr/bin/env bash
# Benchmark: `banger vm run -- true` from a warm image, its host-side part, and a bare
# qemu-system-x86_64 boot-to-ssh of the same image for comparison.
#
# Needs root (it creates a private network namespace for the guests) and a built
# release tree (make build). Prints one line per measurement; the README quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
B=$PWD/target/release/banger
export BANGER_HOME=${BANGER_HOME:-/var/tmp/banger-bench}
NS=banger-bench-$$
cleanup() {
  "$B" daemon stop >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  rm -rf "${BARE:-/nonexistent}"
}
trap cleanup EXIT

# Image on the host network (Debian's archive), daemon then moves into the namespace.
"$B" image list | grep -q debian-bookworm || "$B" image build debian
"$B" daemon stop >/dev/null
ip netns add "$NS"; ip -n "$NS" link set lo up
run() { ip netns exec "$NS" "$B" "$@"; }

run vm run -- true >/dev/null 2>&1   # warms the accelerator probe cache
echo "== banger vm run -- true (warm image, $RUNS runs)"
for i in $(seq "$RUNS"); do
  t0=$(date +%s.%N)
  timings=$(run vm run --timings -- true 2>&1 >/dev/null)
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
  guest=$(echo "$timings" | awk '$1=="agent"||$1=="ssh"{s+=$2} END{print s/1000}')
  host=$(awk -v a="$wall" -v b="$guest" 'BEGIN{print a-b}')
  stages=$(echo "$timings" | awk '$2 ~ /^[0-9]+$/ && $1!="total"{printf "%s=%sms ", $1, $2}')
  printf 'run %d: total %.2f s, guest boot %.2f s, host side %.2f s  [%s]\n' "$i" "$wall" "$guest" "$host" "$stages"
done

echo "== bare qemu-system-x86_64, same image, kernel and initrd, user-mode net ($RUNS runs)"
IMG=$(ls -d "$BANGER_HOME"/state/images/*/ | head -1)
BARE=$(mktemp -d /var/tmp/banger-bare.XXXX)
ssh-keygen -q -t ed25519 -N '' -f "$BARE/key" >/dev/null
TSC=$(grep -m1 'cpu MHz' /proc/cpuinfo | awk '{printf "%d", $4*1000}')
for i in $(seq "$RUNS"); do
  rm -f "$BARE"/*.ext4
  truncate -s 8G "$BARE/ovl.ext4" "$BARE/work.ext4"
  mkfs.ext4 -q -L banger-overlay "$BARE/ovl.ext4"
  mkfs.ext4 -q -L banger-work -d "$IMG/work-seed" "$BARE/work.ext4"
  printf 'mkdir /.ssh\nwrite %s /.ssh/authorized_keys\nsif /.ssh/authorized_keys mode 0100600\n' "$BARE/key.pub" > "$BARE/script"
  debugfs -w -f "$BARE/script" "$BARE/work.ext4" >/dev/null 2>&1
  PORT=$((20000 + RANDOM % 20000))
  t0=$(date +%s.%N)
  qemu-system-x86_64 -M microvm,pit=on,pic=on,rtc=on -accel tcg,thread=multi -cpu max -smp 2 -m 1024M \
    -nodefaults -no-user-config -display none -serial "file:$BARE/console.log" \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=$TSC tsc=reliable banger.ip=10.0.2.15/24 banger.gw=10.0.2.2 banger.hostname=bare" \
    -drive "id=d0,file=$IMG/rootfs.ext4,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=d0 \
    -drive "id=d1,file=$BARE/ovl.ext4,format=raw,if=none" -device virtio-blk-device,drive=d1 \
    -drive "id=d2,file=$BARE/work.ext4,format=raw,if=none" -device virtio-blk-device,drive=d2 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-device,netdev=n0 &
  QPID=$!
  until ssh -q -i "$BARE/key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=2 -p "$PORT" root@127.0.0.1 true 2>/dev/null; do sleep 0.1; done
  t1=$(date +%s.%N)
  kill "$QPID"; wait "$QPID" 2>/dev/null || true; QPID=
  printf 'bare %d: boot to ssh true %.2f s\n' "$i" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
done
