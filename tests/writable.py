"""Writable test images of every variant, each with its raw mirror (the disk's content).

make(kind, dir, size, seed) -> Writable(path, mirror, qemu_format). qemu_format is the
-f to give qemu-img to read the image back, or None when qemu cannot read it whole
(a differencing VHD: qemu ignores VHD parents; qemu opens no differencing VHDX).
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path
from helpers import MiB, ROOT, VDISKIO, random_raw, require_tool


@dataclass
class Writable:
    path: Path
    mirror: Path
    qemu_format: str


def _sh(cmd):
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)


def _qemu_convert(raw, out, fmt, opts):
    require_tool("qemu-img")
    cmd = ["qemu-img", "convert", "-f", "raw", "-O", fmt] + (["-o", opts] if opts else [])
    _sh(cmd + [str(raw), str(out)])


def make(kind, d, size=24 * MiB, seed=1):
    d = Path(d)
    raw = random_raw(d / f"{kind}.mirror", size, seed=seed,
                     holes=[(2 * MiB, 5 * MiB), (size - 3 * MiB, MiB)])
    img = d / f"{kind}.{kind.split('-')[0]}"
    if kind in ("vhdx-fixed", "vhdx-dynamic"):
        _qemu_convert(raw, img, "vhdx", f"subformat={kind[5:]},block_size=1M")
        return Writable(img, raw, "vhdx")
    if kind == "vhdx-empty":
        with open(raw, "r+b") as f:
            f.truncate(0)
            f.truncate(size)
        _sh(VDISKIO + ["create", "-s", str(size), "-b", "1M", str(img)])
        return Writable(img, raw, "vhdx")
    if kind == "vhdx-differencing":
        parent = d / f"{kind}-parent.vhdx"
        _sh(VDISKIO + ["create", "--from", str(raw), str(parent)])
        img = d / f"{kind}.avhdx"
        _sh(VDISKIO + ["create", "-p", str(parent), "-b", "1M", str(img)])
        return Writable(img, raw, None)
    if kind == "vhd-fixed":
        _qemu_convert(raw, img, "vpc", "subformat=fixed,force_size=on")
        return Writable(img, raw, "vpc")
    if kind == "vhd-dynamic":
        _qemu_convert(raw, img, "vpc", "subformat=dynamic,force_size=on")
        return Writable(img, raw, "vpc")
    if kind == "vhd-empty":
        with open(raw, "r+b") as f:
            f.truncate(0)
            f.truncate(size)
        _sh(VDISKIO + ["create", "-s", str(size), str(img)])
        return Writable(img, raw, "vpc")
    if kind == "vhd-differencing":
        parent = d / f"{kind}-parent.vhd"
        _sh(VDISKIO + ["create", "--from", str(raw), str(parent)])
        _sh(VDISKIO + ["create", "-p", str(parent), str(img)])
        return Writable(img, raw, None)
    if kind.startswith("vmdk-"):
        sub = kind[5:]
        if sub == "snapshot":
            base = d / f"{kind}-base.vmdk"
            _qemu_convert(raw, base, "vmdk", "subformat=monolithicSparse")
            require_tool("qemu-img")
            _sh(["qemu-img", "create", "-f", "vmdk", "-b", base.name, "-F", "vmdk", str(img)])
            return Writable(img, raw, "vmdk")
        if sub == "zeroed":
            _qemu_convert(raw, img, "vmdk", "subformat=monolithicSparse,zeroed_grain=on")
            return Writable(img, raw, "vmdk")
        _qemu_convert(raw, img, "vmdk", f"subformat={sub}")
        return Writable(img, raw, "vmdk")
    raise ValueError(kind)
