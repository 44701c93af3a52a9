#!/bin/sh
# make demo: build a small VHD holding an MBR with two partitions and an ext4 file system
# made from a directory, then read it through libvdiskio with unmodified tools. Needs only
# the build's packages and what every Debian has (util-linux, e2fsprogs); fdisk's tools
# are used when installed.
set -e
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin:/sbin"
VDISKIO=.venv/bin/vdiskio
VDPARTX=.venv/bin/vdpartx
D=demo
have() { command -v "$1" >/dev/null 2>&1; }
rm -rf "$D"
mkdir -p "$D/files/docs"
echo "hello from inside a VHD" > "$D/files/hello.txt"
cp README.md "$D/files/docs/"
seq 1 100000 > "$D/files/docs/numbers.txt"

echo "== a 64 MiB raw disk: MBR, ext4 (from $D/files) in partition 1, partition 2 empty"
truncate -s 64M "$D/disk.raw"
if have sfdisk; then
    printf 'label: dos\nstart=2048, size=40M, type=83\ntype=7\n' | sfdisk -q "$D/disk.raw"
else
    # fdisk's package is not installed: the same table, written by hand.
    .venv/bin/python - "$D/disk.raw" <<'PY'
import struct, sys
entries = [(0x83, 2048, 81920), (0x07, 83968, 47104)]
mbr = bytearray(512)
for i, (kind, start, count) in enumerate(entries):
    mbr[446 + 16 * i:462 + 16 * i] = struct.pack("<B3sB3sII", 0, b"\xff" * 3, kind, b"\xff" * 3,
                                                 start, count)
mbr[440:444], mbr[510:512] = b"vdio", b"\x55\xaa"
with open(sys.argv[1], "r+b") as f:
    f.write(mbr)
PY
fi
if have mkfs.ext4; then
    mkfs.ext4 -q -F -d "$D/files" -E offset=$((2048 * 512)) "$D/disk.raw" 40M
else
    echo "(no mkfs.ext4: install e2fsprogs for the file system part)"
fi

echo "== converted to a dynamic VHD by vdiskio create (not qemu-img)"
$VDISKIO create --from "$D/disk.raw" "$D/disk.vhd"
ls -l "$D/disk.raw" "$D/disk.vhd"

if have fdisk; then
    echo "== fdisk -l disk.vhd, through libvdiskio"
    $VDISKIO run -- fdisk -l "$D/disk.vhd"
else
    echo "== partx --show disk.vhd, through libvdiskio"
    $VDISKIO run -- partx --show "$D/disk.vhd"
fi

echo "== sha256 of the disk: dd through libvdiskio, then the raw original"
$VDISKIO run -- dd if="$D/disk.vhd" bs=1M status=none | sha256sum
sha256sum < "$D/disk.raw"

echo "== the same disk from Python, without the preload: vdiskio.open"
.venv/bin/python -c 'import hashlib, sys, vdiskio
with vdiskio.open(sys.argv[1]) as f:
    print(hashlib.file_digest(f, "sha256").hexdigest(), " vdiskio.open")' "$D/disk.vhd"

if have debugfs && have mkfs.ext4; then
    echo "== partition 1 as a file system: vdpartx -a, then debugfs on disk.vhd1"
    $VDPARTX -a -v "$D/disk.vhd"
    $VDISKIO run -- debugfs -R 'cat /hello.txt' "$D/disk.vhd1" 2>/dev/null
    $VDPARTX -d "$D/disk.vhd"
fi
