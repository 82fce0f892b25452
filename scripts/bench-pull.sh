#!/usr/bin/env bash
# Benchmark: `banger image pull` (pull + flatten into an ext4 base image, through the
# daemon) of a ~100 MB OCI image from a local registry, next to the usual toolchain
# for the same job: `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d`.
#
# The image is Debian bookworm minbase + systemd-sysv + openssh-server + python3
# (mmdebstrap, once, cached in $WORK), one gzip layer. Needs root, a release build
# (make build), docker-registry, skopeo, umoci. Every run starts with a cold blob cache.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
B=$PWD/target/release/banger
WORK=${WORK:-/var/tmp/banger-bench-pull}
export BANGER_HOME=${BANGER_HOME:-/var/tmp/banger-bench}
mkdir -p "$WORK"
cleanup() {
  "$B" daemon stop >/dev/null 2>&1 || true
  [ -n "${RPID:-}" ] && kill "$RPID" 2>/dev/null || true
}
trap cleanup EXIT

[ -s "$WORK/rootfs.tar" ] || mmdebstrap --variant=minbase --include=systemd-sysv,openssh-server,python3 bookworm "$WORK/rootfs.tar"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$WORK/registry"; mkdir -p "$WORK/registry"
cat > "$WORK/registry.yml" <<EOC
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
EOC
docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 & RPID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# Push the layer as an image: an OCI layout made with umoci, copied with skopeo.
rm -rf "$WORK/layout"
umoci init --layout "$WORK/layout" && umoci new --image "$WORK/layout:bench"
umoci raw add-layer --image "$WORK/layout:bench" "$WORK/rootfs.tar"   # umoci gzips it
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:bench" "docker://127.0.0.1:$PORT/bench/devbox:1"
REF=127.0.0.1:$PORT/bench/devbox:1
layer=$(ls -S "$WORK"/layout/blobs/sha256/* | head -1)
printf '== image: one layer, %s MiB compressed, %s MiB unpacked\n' \
  "$(( $(stat -c %s "$layer") >> 20 ))" "$(( $(stat -c %s "$WORK/rootfs.tar") >> 20 ))"

# The default image provides the kernel pulled images boot (built once).
"$B" image list | grep -q debian-bookworm || "$B" image build debian >/dev/null
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }

echo "== banger image pull (daemon, release build, cold blob cache, $RUNS runs)"
for i in $(seq "$RUNS"); do
  "$B" image delete bench-pull >/dev/null 2>&1 || true
  "$B" image cache prune >/dev/null
  t0=$(now); "$B" image pull "$REF" --name bench-pull >/dev/null; t1=$(now)
  echo "run $i: $(secs "$t0" "$t1") s"
done
"$B" image delete bench-pull >/dev/null

echo "== skopeo copy + umoci unpack + mkfs.ext4 -d ($RUNS runs)"
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/out" && mkdir -p "$WORK/out"
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$WORK/out/layout:bench"
  umoci unpack --image "$WORK/out/layout:bench" "$WORK/out/bundle" >/dev/null
  size=$(( $(du -sm "$WORK/out/bundle/rootfs" | cut -f1) * 3 / 2 + 64 ))
  mkfs.ext4 -q -F -d "$WORK/out/bundle/rootfs" "$WORK/out/rootfs.ext4" "${size}M" >/dev/null
  t1=$(now)
  echo "run $i: $(secs "$t0" "$t1") s"
done
rm -rf "$WORK/out"
