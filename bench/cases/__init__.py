"""The case registry: every case once, in the order the bench runs them.

A per-variant case (`applies` set) runs on each variant it applies to, with the variant
built just before and removed after; `restage` cases have the variant's files and the raw
twin written again by one writer first (bench/images.py: restage). The other cases build
and remove their own inputs."""

from dataclasses import dataclass

from bench.cases import lvm, reads, sparse, startup, writes


@dataclass(frozen=True)
class Case:
    name: str
    run: object                 # run(bench) or, per variant, run(bench, variant)
    applies: object = None      # variant -> bool: a per-variant case
    restage: bool = False
    doc: str = ""


CASES = (
    Case("seq", reads.seq, applies=lambda v: True, restage=True,
         doc="sequential reads, whole process and steady state"),
    Case("pread", reads.pread, applies=lambda v: True, restage=True,
         doc="random 4 KiB preads, whole process and steady state"),
    Case("peers", reads.peers, applies=lambda v: v.peers, restage=True,
         doc="whole-image copies against qemu-img, nbdcopy, FUSE mounts"),
    Case("first-open", startup.first_open, applies=lambda v: v.first_open,
         doc="first open against the bare interpreter and qemu-img info"),
    Case("sparse-copy", sparse.sparse_copy, doc="cp --sparse=always of mostly empty images"),
    Case("writes", writes.seq_writes, doc="sequential writes into empty images"),
    Case("mkfs", writes.mkfs, doc="mkfs.ext4 of empty images"),
    Case("stream-write", writes.stream_write, doc="streamOptimized VMDK written"),
    Case("stream-read", reads.stream_read, doc="dd of a mixed-content streamOptimized VMDK"),
    Case("untouched", startup.untouched, doc="programs that never open an image"),
    Case("huge-open", startup.huge_open, doc="open of huge sparse images"),
    Case("lvm", lvm.lvm, doc="a linear logical volume (root only)"),
)

NAMES = tuple(c.name for c in CASES)
