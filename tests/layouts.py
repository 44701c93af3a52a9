"""Random VMDK layouts for the property tests and the fuzzers' seeds: descriptors whose
extents (hosted sparse of any grain and grain-table size, stream-compressed ones whose
random grains deflate to stored blocks, flat, zero) start at odd
sectors, chains of such disks, children written in part, disk sizes that are no
multiple of a block. Built with tests/vmdk_writer (independent of vdiskio's own
declarations). Each layout's content is known: `expected` is the disk's raw bytes."""


import vmdk_writer as W
from helpers import SECTOR


def _grain_data(rng, nbytes):
    kind = rng.random()
    if kind < 0.2:
        return bytes(nbytes)                                  # stored zeros
    if kind < 0.5:
        return bytes([rng.randrange(1, 256)]) * nbytes
    return rng.randbytes(nbytes)


def _sparse_extent(rng, path, sectors, grain, gtes, below, zeroed_ok, compressed=False):
    """A hosted sparse extent of `sectors`; grains written at random. `below` gives the
    extent's bytes as the layer under it reads them (a parent's, or zeros); returns the
    extent's bytes as the disk reads them. compressed: grains deflated behind markers (a
    stream's, read-only: bottom layers only), the directory at the end half the time."""
    gb = grain * SECTOR
    content = bytearray(below)
    grains = {}
    ngrains = -(-sectors // grain)
    fill = rng.choice([0.0, 0.3, 0.7, 1.0])
    for g in range(ngrains):
        if rng.random() >= fill:
            continue
        lo = g * gb
        hi = min(lo + gb, sectors * SECTOR)
        if zeroed_ok and rng.random() < 0.15:
            grains[g] = W.ZEROED
            content[lo:hi] = bytes(hi - lo)
            continue
        data = _grain_data(rng, hi - lo)
        grains[g] = data
        content[lo:hi] = data
    version = 2 if zeroed_ok else rng.choice([1, 2])
    extra = {}
    if compressed:
        version = 3
        extra = dict(compress="zlib", markers=True, stream=rng.random() < 0.5)
    W.write_sparse(path, sectors, grains, version=version, grain=grain, gtes=gtes,
                   redundant=rng.random() < 0.5, zeroed_flag=zeroed_ok or None,
                   all_tables=rng.random() < 0.3, **extra)
    return bytes(content)


def make_layout(rng, d, name, total_sectors=None, parent=None, one_grain=None):
    """A descriptor `name`.vmdk in d with 1-4 extents; returns (path, expected bytes,
    total sectors, CID). With `parent` (path, expected, sectors, cid), a child of it."""
    total = total_sectors or rng.randint(1, 700)
    cuts = sorted(rng.sample(range(1, total), min(total - 1, rng.randint(0, 3)))) if total > 1 else []
    bounds = [0] + cuts + [total]
    below = parent[1] if parent is not None else bytes(total * SECTOR)
    lines, out = [], bytearray()
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        n = b - a
        part_below = below[a * SECTOR:b * SECTOR]
        kind = "SPARSE" if parent is not None else rng.choices(
            ["SPARSE", "FLAT", "ZERO"], [6, 3, 1])[0]
        if kind == "SPARSE":
            grain = one_grain or rng.choice([1, 2, 4, 8, 16])
            gtes = rng.choice([1, 2, 3, 4, 8, 16, 512])
            fname = f"{name}-s{i}.vmdk"
            data = _sparse_extent(rng, d / fname, n, grain, gtes, part_below,
                                  zeroed_ok=parent is not None and rng.random() < 0.3,
                                  compressed=parent is None and rng.random() < 0.25)
            lines.append(f'RW {n} SPARSE "{fname}"')
        elif kind == "FLAT":
            fname = f"{name}-f{i}.bin"
            skip = rng.choice([0, 0, 1, 3])
            stored = rng.choice([n, n, max(0, n - 2)])      # a short file reads zeros past its end
            blob = rng.randbytes((skip + stored) * SECTOR)
            (d / fname).write_bytes(blob)
            data = blob[skip * SECTOR:] + bytes((n - stored) * SECTOR)
            lines.append(f'RW {n} FLAT "{fname}" {skip}')
        else:
            data = bytes(n * SECTOR)
            lines.append(f"RW {n} ZERO")
        out += data
    cid = rng.randrange(1, 0xFFFFFFF0)
    hint = None
    parent_cid = 0xFFFFFFFF
    if parent is not None:
        hint, parent_cid = parent[0].name, parent[3]
    path = d / f"{name}.vmdk"
    path.write_text(W.descriptor(lines, "custom" if parent is None else "twoGbMaxExtentSparse",
                                 cid=cid, parent_cid=parent_cid, hint=hint))
    return path, bytes(out), total, cid


def make_chain(rng, d, prefix, depth=None):
    """A chain of 1-3 layouts (the top last): (top path, expected bytes)."""
    depth = depth or rng.randint(1, 3)
    one_grain = rng.choice([None, 1, 2, 8]) if rng.random() < 0.7 else None
    layer = make_layout(rng, d, f"{prefix}0", one_grain=one_grain)
    for level in range(1, depth):
        layer = make_layout(rng, d, f"{prefix}{level}", total_sectors=layer[2], parent=layer,
                            one_grain=one_grain)
    return layer[0], layer[1]
