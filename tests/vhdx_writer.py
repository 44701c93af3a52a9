"""An independent VHDX writer for the tests, written from MS-VHDX and sharing no code with
vdiskio.vhdx: it builds what QEMU cannot (differencing disks, 4096-byte sectors, every
block state, logs left dirty by a crash) so the decoder can be checked against a raw
mirror of the content.

    b = Builder(size, block_size=1 << 20, logical_sector_size=512)
    b.full(block, data)               # FULLY_PRESENT
    b.sectors(block, {sector: data})  # PARTIALLY_PRESENT (differencing only)
    b.state(block, 2)                 # ZERO, UNMAPPED, UNDEFINED, NOT_PRESENT
    b.write(path, parent=(name, data_write_guid) or None, log=...)
"""

import struct
import uuid

MB = 1 << 20
LOG_AT, LOG_LEN, META_AT, BAT_AT = 1 * MB, 1 * MB, 2 * MB, 3 * MB

_T = []


def crc32c(data):
    if not _T:
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _T.append(c)
    c = 0xFFFFFFFF
    for b in bytes(data):
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def with_crc(raw, at):
    raw = bytearray(raw)
    raw[at:at + 4] = bytes(4)
    raw[at:at + 4] = struct.pack("<I", crc32c(raw))
    return bytes(raw)


def ms_guid(text):
    return uuid.UUID(text).bytes_le


BAT_REGION = ms_guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
META_REGION = ms_guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = ms_guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
DISK_SIZE = ms_guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
DISK_ID = ms_guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL = ms_guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL = ms_guid("CDA348C7-445D-4471-9CC9-E9885251C556")
LOCATOR = ms_guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
LOCATOR_TYPE = ms_guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")


def header(seq, data_write_guid, log_guid=bytes(16), file_write_guid=None):
    raw = b"head" + bytes(4) + struct.pack("<Q", seq) + (file_write_guid or uuid.uuid4().bytes_le)
    raw += data_write_guid + log_guid + struct.pack("<HHIQ", 0, 1, LOG_LEN, LOG_AT)
    return with_crc(raw.ljust(4096, b"\0"), 4)


def region_table(bat_len, extra=()):
    entries = [(BAT_REGION, BAT_AT, bat_len, 1), (META_REGION, META_AT, MB, 1)] + list(extra)
    raw = b"regi" + bytes(4) + struct.pack("<II", len(entries), 0)
    for g, off, length, req in entries:
        raw += g + struct.pack("<QII", off, length, req)
    return with_crc(raw.ljust(65536, b"\0"), 4)


def locator(pairs):
    head = LOCATOR_TYPE + struct.pack("<HH", 0, len(pairs))
    at = 20 + 12 * len(pairs)
    table, blob = b"", b""
    for k, v in pairs:
        k, v = k.encode("utf-16-le"), v.encode("utf-16-le")
        table += struct.pack("<IIHH", at + len(blob), at + len(blob) + len(k), len(k), len(v))
        blob += k + v
    return head + table + blob


def log_entry(seq, log_guid, writes, tail, file_size):
    """One log entry: `writes` [(file_offset, 4096 bytes)], tail offset in the log."""
    n = len(writes)
    desc_sectors = -(-(n + 2) // 128)
    length = (desc_sectors + n) * 4096
    hdr = b"loge" + bytes(4) + struct.pack("<IIQII", length, tail, seq, n, 0) + log_guid
    hdr += struct.pack("<QQ", file_size, file_size)
    descs = b""
    data = b""
    for off, page in writes:
        descs += b"desc" + page[4092:4096] + page[:8] + struct.pack("<QQ", off, seq)
        data += b"data" + struct.pack("<I", seq >> 32) + page[8:4092] + struct.pack("<I", seq & 0xFFFFFFFF)
    raw = (hdr + descs).ljust(desc_sectors * 4096, b"\0") + data
    return with_crc(raw, 4)


class Builder:
    def __init__(self, size, block_size=MB, logical_sector_size=512, physical_sector_size=None,
                 leave_allocated=False):
        self.size = size
        self.bs = block_size
        self.lss = logical_sector_size
        self.pss = physical_sector_size or logical_sector_size
        self.leave_allocated = leave_allocated
        self.ratio = (1 << 23) * logical_sector_size // block_size
        self.blocks = {}            # block -> (state, data or {sector: data})
        self.data_write_guid = uuid.uuid4().bytes_le

    def full(self, block, data):
        assert len(data) == min(self.bs, self.size - block * self.bs)
        self.blocks[block] = (6, data)

    def sectors(self, block, sectors):
        self.blocks[block] = (7, dict(sectors))

    def state(self, block, state):
        self.blocks[block] = (state, None)

    def image(self, parent_bytes=None):
        """The virtual disk's bytes as a reader must see them (parent_bytes: the parent's)."""
        out = bytearray(parent_bytes if parent_bytes is not None else bytes(self.size))
        for block, (state, data) in self.blocks.items():
            start = block * self.bs
            end = min(start + self.bs, self.size)
            if state == 6:
                out[start:end] = data
            elif state in (1, 2, 3) or (state == 0 and parent_bytes is None):
                out[start:end] = bytes(end - start)
            elif state == 7:
                for s, d in data.items():
                    out[start + s * self.lss:start + (s + 1) * self.lss] = d
        return bytes(out)

    def write(self, path, parent=None, locator_pairs=None, dirty_blocks=(), stale=False,
              torn=False, extra_regions=(), extra_items=()):
        """Write the file. parent: the parent's DataWriteGuid (bytes); locator_pairs: the
        parent locator's (key, value) pairs. dirty_blocks: blocks whose BAT entries reach
        the file only through a log left unreplayed (the BAT in place says NOT_PRESENT for
        them); stale adds an older, already-applied sequence, torn a newer entry with a bad
        checksum, neither of which may be replayed."""
        blocks = -(-self.size // self.bs)
        if parent is not None:
            entries = -(-blocks // self.ratio) * (self.ratio + 1)
        else:
            entries = blocks + (blocks - 1) // self.ratio
        bat_len = -(-entries * 8 // MB) * MB
        bat = bytearray(bat_len)
        payload = []
        end = BAT_AT + bat_len
        bitmaps = {}
        for block in sorted(self.blocks):
            state, data = self.blocks[block]
            off = 0
            if state in (6, 7):
                off = end
                end += self.bs
                if state == 6:
                    payload.append((off, data))
                else:
                    chunk = block // self.ratio
                    bm = bitmaps.setdefault(chunk, bytearray(MB))
                    per_block = self.bs // self.lss
                    for s, d in data.items():
                        payload.append((off + s * self.lss, d))
                        bit = (block % self.ratio) * per_block + s
                        bm[bit // 8] |= 1 << (bit % 8)
            struct.pack_into("<Q", bat, 8 * (block + block // self.ratio), state | (off >> 20) << 20)
        for chunk, bm in sorted(bitmaps.items()):
            struct.pack_into("<Q", bat, 8 * (chunk * (self.ratio + 1) + self.ratio), 6 | (end >> 20) << 20)
            payload.append((end, bytes(bm)))
            end += MB
        flags = (2 if parent is not None else 0) | (1 if self.leave_allocated else 0)
        items = [(FILE_PARAMS, 4, struct.pack("<II", self.bs, flags)),
                 (DISK_SIZE, 6, struct.pack("<Q", self.size)),
                 (DISK_ID, 6, uuid.uuid4().bytes_le),
                 (LOGICAL, 6, struct.pack("<I", self.lss)),
                 (PHYSICAL, 6, struct.pack("<I", self.pss))] + list(extra_items)
        if parent is not None:
            items.append((LOCATOR, 4, locator(locator_pairs)))
        meta = b"metadata" + struct.pack("<HH", 0, len(items)) + bytes(20)
        blob = b""
        for g, fl, data in items:
            meta += g + struct.pack("<IIII", 65536 + len(blob), len(data), fl, 0)
            blob += data
        meta = meta.ljust(65536, b"\0") + blob
        log_guid = bytes(16)
        log = b""
        on_disk_bat = bytearray(bat)
        if dirty_blocks:
            log_guid = uuid.uuid4().bytes_le
            pages = set()
            for block in dirty_blocks:
                at = 8 * (block + block // self.ratio)
                on_disk_bat[at:at + 8] = bytes(8)
                pages.add(at - at % 4096)
            writes = [(BAT_AT + p, bytes(bat[p:p + 4096])) for p in sorted(pages)]
            if stale:
                # An older sequence (seq 5, 6) at the front of the log, zeroing the pages.
                for i, seq in enumerate((5, 6)):
                    log += log_entry(seq, log_guid, [(off, bytes(4096)) for off, _ in writes],
                                     len(log), end)
            good = log_entry(7 if stale else 1, log_guid, writes, len(log), end)
            log += good
            if torn:
                bad = bytearray(log_entry(8 if stale else 2, log_guid,
                                          [(off, bytes(4096)) for off, _ in writes], len(log), end))
                bad[-100] ^= 0xFF
                log += bytes(bad)
        with open(path, "wb") as f:
            f.truncate(end)
            for off, data in [(0, b"vhdxfile" + "vhdx_writer".encode("utf-16-le")),
                              (64 << 10, header(1, self.data_write_guid, log_guid)),
                              (128 << 10, header(2, self.data_write_guid, log_guid)),
                              (192 << 10, region_table(bat_len, extra_regions)),
                              (256 << 10, region_table(bat_len, extra_regions)),
                              (LOG_AT, log), (META_AT, meta), (BAT_AT, bytes(on_disk_bat))] + payload:
                f.seek(off)
                f.write(data)
        return path


def data_write_guid(path):
    """The DataWriteGuid of a VHDX file's current header (for children of QEMU's images)."""
    with open(path, "rb") as f:
        best = None
        for off in (64 << 10, 128 << 10):
            f.seek(off)
            raw = f.read(4096)
            if raw[:4] == b"head" and with_crc(raw, 4) == raw:
                seq = struct.unpack_from("<Q", raw, 8)[0]
                if best is None or seq > best[0]:
                    best = (seq, raw[32:48])
    return best[1]


def guid_text(raw):
    return "{" + str(uuid.UUID(bytes_le=raw)) + "}"
