#!/usr/bin/env bash
# Builds the production login-VM image: a Debian kernel, its initramfs and a
# raw ext4 root disk holding Chromium, Node.js, the provider CLIs
# (@openai/codex, @anthropic-ai/claude-code, @google/gemini-cli) and a static
# polydev binary whose `agent` subcommand is the VM's init payload.
#
#   sudo scripts/image-login.sh OUT_DIR
#
# Inputs (environment, all optional):
#   SUITE=trixie            Debian suite of the rootfs (trixie: Node.js 20, which gemini-cli needs)
#   MIRROR=http://deb.debian.org/debian
#   CODEX_VERSION=0.171.0 CLAUDE_VERSION=2.1.100 GEMINI_VERSION=0.61.0
#                           npm versions (pinned defaults that run on the rootfs's Node.js 20;
#                           written to OUT_DIR/manifest.txt)
#   SOURCE_DATE_EPOCH=…     timestamps inside the image (default: the git commit time)
#   SIZE_SLACK_MB=256       free space left in the ext4 image for the VM's writes
#
# Outputs in OUT_DIR: vmlinuz, initrd.img, rootfs.ext4 (raw), cmdline,
# manifest.txt (package and npm versions, sha256 of every output). Use them
# with `polydev serve --vm-kernel OUT/vmlinuz --vm-initrd OUT/initrd.img
# --vm-rootfs OUT/rootfs.ext4 --vm-cmdline "$(cat OUT/cmdline)"`; each VM
# sees rootfs.ext4 through its own copy-on-write qcow2 overlay, so the image
# itself is never written.
#
# Needs root, mmdebstrap, e2fsprogs, Go and npm (apt-get install mmdebstrap
# e2fsprogs golang); downloads Debian packages from MIRROR and the three
# CLIs from the npm registry, nothing else. Expect roughly 1.5 GiB of
# downloads, a 2–2.5 GiB image, and 10–20 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:?usage: scripts/image-login.sh OUT_DIR}"
suite="${SUITE:-trixie}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
slack="${SIZE_SLACK_MB:-256}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
for c in mmdebstrap mke2fs go npm; do command -v "$c" >/dev/null || { echo "$c missing" >&2; exit 1; }; done

start=$(date +%s)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# A fixed work directory: native npm modules record the path they were built
# in, so a random one would make every build differ.
work=/var/tmp/polydev-login-image-build
rm -rf "$work"
mkdir -p "$work"
rootfs="$work/rootfs"
trap 'rm -rf "$work"' EXIT

echo "== polydev (static)"
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$work/polydev" ./cmd/polydev

echo "== rootfs: Debian $suite"
# virtio devices of QEMU microvm and Firecracker are modules in Debian's
# cloud kernel: the initramfs must load them before it can mount /dev/vda.
mmdebstrap --variant=minbase --mode=root \
  --include=linux-image-cloud-amd64,initramfs-tools,ca-certificates,chromium,fonts-liberation,nodejs,iproute2,procps \
  --customize-hook='printf "virtio_mmio\nvirtio_blk\nvirtio_console\nvirtio_net\nvmw_vsock_virtio_transport\next4\n" >> "$1/etc/initramfs-tools/modules"' \
  --customize-hook="chroot \"\$1\" env SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH update-initramfs -u -k all" \
  "$suite" "$rootfs" "$mirror"

echo "== provider CLIs from npm"
# Pinned, and checked against the rootfs's Node.js (Debian trixie: 20):
# claude-code from 2.1.2xx on wants Node 22.
pkgs=("@openai/codex@${CODEX_VERSION:-0.171.0}" "@anthropic-ai/claude-code@${CLAUDE_VERSION:-2.1.100}" "@google/gemini-cli@${GEMINI_VERSION:-0.61.0}")
# The build host's npm installs them into the rootfs's /usr/local (they are
# JavaScript plus codex's linux-x64 binary; the VM runs the rootfs's own
# Node.js). The host's npm config — registry, CA bundle — applies to the
# download only; nothing of it enters the image.
command -v npm >/dev/null || { echo "npm missing on the build host" >&2; exit 1; }
npm install --global --prefix "$rootfs/usr/local" --omit=dev --no-fund --no-audit --engine-strict "${pkgs[@]}"

echo "== polydev agent as the VM's init payload"
install -m 0755 "$work/polydev" "$rootfs/usr/local/bin/polydev"
cat > "$rootfs/usr/local/sbin/polydev-init" <<'INIT'
#!/bin/sh
# PID 1 of a login VM: the minimum for Chromium and the CLIs, then the agent.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
ip link set lo up
hostname login-vm
exec /usr/local/bin/polydev agent
INIT
chmod 0755 "$rootfs/usr/local/sbin/polydev-init"
useradd --root "$rootfs" --create-home --uid 1000 --shell /bin/sh login 2>/dev/null || true
rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/* "$rootfs/tmp"/*

echo "== kernel, initramfs, ext4"
cp "$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)" "$out/vmlinuz"
cp "$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)" "$out/initrd.img"
echo "console=ttyS0 quiet panic=-1 root=/dev/vda rw rootfstype=ext4 init=/usr/local/sbin/polydev-init" > "$out/cmdline"
find "$rootfs" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} + 2>/dev/null || true
used_mb=$(du -sm "$rootfs" | cut -f1)
size_mb=$(( used_mb * 115 / 100 + slack ))
rm -f "$out/rootfs.ext4"
E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH" mke2fs -q -t ext4 -L polydev-login \
  -U 6c6f6769-6e76-4d00-8000-706f6c796465 -E hash_seed=6c6f6769-6e76-4d00-8000-706f6c796465,root_owner=0:0 \
  -d "$rootfs" "$out/rootfs.ext4" "${size_mb}M"

echo "== manifest"
{
  echo "suite: $suite  mirror: $mirror  SOURCE_DATE_EPOCH: $SOURCE_DATE_EPOCH"
  echo "kernel: $(basename "$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)")"
  chroot "$rootfs" dpkg-query -W -f='${Package} ${Version}\n' chromium nodejs
  npm ls --global --prefix "$rootfs/usr/local" --depth=0 2>/dev/null | grep -E 'codex|claude-code|gemini-cli'
  (cd "$out" && sha256sum vmlinuz initrd.img rootfs.ext4)
} > "$out/manifest.txt"
cat "$out/manifest.txt"
du -h "$out"/*
echo "built in $(( $(date +%s) - start )) s"
