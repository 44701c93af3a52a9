#!/bin/sh
# make demo: build a small VHD holding an MBR with two partitions and an ext4 file system
# made from a directory, then read it through libvdiskio with unmodified tools.
set -e
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin:/sbin"
VDISKIO=.venv/bin/vdiskio
D=demo
rm -rf "$D"
mkdir -p "$D/files/docs"
echo "hello from inside a VHD" > "$D/files/hello.txt"
cp README.md "$D/files/docs/"
seq 1 100000 > "$D/files/docs/numbers.txt"

echo "== a 64 MiB raw disk: MBR, ext4 (from $D/files) in partition 1, partition 2 empty"
truncate -s 64M "$D/disk.raw"
printf 'label: dos\nstart=2048, size=40M, type=83\ntype=7\n' | sfdisk -q "$D/disk.raw"
mkfs.ext4 -q -F -d "$D/files" -E offset=$((2048 * 512)) "$D/disk.raw" 40M

echo "== converted to a dynamic VHD by vdiskio create (not qemu-img)"
$VDISKIO create --from "$D/disk.raw" "$D/disk.vhd"
ls -l "$D/disk.raw" "$D/disk.vhd"

echo "== fdisk -l disk.vhd, through libvdiskio"
$VDISKIO run -- fdisk -l "$D/disk.vhd"

echo "== sha256 of the disk: dd through libvdiskio, then the raw original"
$VDISKIO run -- dd if="$D/disk.vhd" bs=1M status=none | sha256sum
sha256sum < "$D/disk.raw"

echo "== partition 1 as a file system: vdpartx -a, then debugfs on disk.vhd1"
.venv/bin/vdpartx -a -v "$D/disk.vhd"
$VDISKIO run -- debugfs -R 'cat /hello.txt' "$D/disk.vhd1" 2>/dev/null
.venv/bin/vdpartx -d "$D/disk.vhd"
