"""Writing new VHD files: fixed, dynamic, and differencing (a child of a parent VHD)."""

import os
import signal
import time
import uuid

from ..backing import sys_open
from ..errors import AlreadyExists, BadRequest, VdError
from .image import MAX_GEOMETRY, SECTOR, open_vhd
from .structs import (DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED,
                      DYNAMIC_COOKIE, DYNAMIC_HEADER, FEATURE_RESERVED, FILE_FORMAT_VERSION,
                      FOOTER, FOOTER_COOKIE, HEADER_VERSION, PARENT_LOCATOR,
                      PARENT_LOCATOR_COUNT, UNUSED_BAT_ENTRY, checksum)

VHD_EPOCH = 946684800               # 2000-01-01T00:00:00Z
CREATOR_APPLICATION = b"vdio"
CREATOR_VERSION = 0x00010000
DEFAULT_BLOCK_SIZE = 2 << 20
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF


def chs_geometry(size):
    """CHS geometry of the VHD specification's algorithm (appendix), for `size` bytes."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def geometry_for(size):
    """The spec's geometry when it describes exactly `size` bytes; otherwise the maximum
    geometry, which tells every reader (QEMU's size rules included) to use current_size."""
    c, h, s = chs_geometry(size)
    return (c, h, s) if c * h * s * SECTOR == size else MAX_GEOMETRY


def build_footer(size, disk_type, data_offset, unique_id=None):
    c, h, s = geometry_for(size)
    fields = FOOTER.type(
        cookie=FOOTER_COOKIE, features=FEATURE_RESERVED, file_format_version=FILE_FORMAT_VERSION,
        data_offset=data_offset, time_stamp=int(time.time()) - VHD_EPOCH,
        creator_application=CREATOR_APPLICATION, creator_version=CREATOR_VERSION,
        creator_host_os=b"Wi2k", original_size=size, current_size=size,
        cylinders=c, heads=h, sectors_per_track=s, disk_type=disk_type, checksum=0,
        unique_id=unique_id or uuid.uuid4().bytes, saved_state=0, reserved=bytes(427))
    raw = FOOTER.build(fields)
    return FOOTER.build(fields._replace(checksum=checksum(raw, FOOTER.offset_of("checksum"))))


# Files made by this process's creates, oldest first: what a failed or interrupted
# create removes (vdiskio.create). A name enters the list in the same breath as the file
# is made, signals blocked in between, so an interruption never leaves a file unlisted.
made = []
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _exclusive_create(path, access=os.O_WRONLY):
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        fd = sys_open(path, access | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        made.append(path)
        return fd
    except FileExistsError:
        raise AlreadyExists(
            "already exists; vdiskio create never overwrites a file", path) from None
    except OSError as e:
        raise VdError(f"cannot create: {e.strerror}", path, e.errno) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _check_size(size, path):
    if size <= 0 or size % SECTOR:
        raise BadRequest(f"size {size} is not a positive multiple of 512", path)
    if size > 2040 << 30:
        raise BadRequest(f"size {size} exceeds the VHD format's 2040 GiB", path)


def create_fixed(path, size):
    _check_size(size, path)
    fd = _exclusive_create(path)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, build_footer(size, DISK_TYPE_FIXED, NO_DATA_OFFSET), size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _locators(child_path, parent_path, start):
    """W2ru (relative, as Windows writes it) and W2ku (absolute) locators for the parent,
    with their data placed from `start` on."""
    rel = os.path.relpath(parent_path, os.path.dirname(os.path.abspath(child_path)))
    entries, blobs = [], []
    for code, name in ((b"W2ru", ".\\" + rel.replace("/", "\\")), (b"W2ku", parent_path)):
        data = name.encode("utf-16-le")
        space = -(-len(data) // SECTOR) * SECTOR
        entries.append(PARENT_LOCATOR.build(PARENT_LOCATOR.type(
            platform_code=code, platform_data_space=space, platform_data_length=len(data),
            reserved=0, platform_data_offset=start)))
        blobs.append((start, data))
        start += space
    return entries, blobs, start


def create_dynamic(path, size, block_size=DEFAULT_BLOCK_SIZE, parent=None):
    """A dynamic VHD, or with `parent` (a VHD path) a differencing one of the same size."""
    parent_image = None
    if parent is not None:
        parent_image = open_vhd(os.path.abspath(parent))
        size = parent_image.size
        parent_image.close()
    _check_size(size, path)
    if block_size < SECTOR or block_size & (block_size - 1):
        raise BadRequest(f"block size {block_size} is not a power of two >= 512", path)
    entries = -(-size // block_size)
    table_offset = 3 * SECTOR
    bat_bytes = -(-(4 * entries) // SECTOR) * SECTOR
    data_start = table_offset + bat_bytes
    disk_type = DISK_TYPE_DYNAMIC
    header = dict(cookie=DYNAMIC_COOKIE, data_offset=NO_DATA_OFFSET, table_offset=table_offset,
                  header_version=HEADER_VERSION, max_table_entries=entries,
                  block_size=block_size, checksum=0, parent_unique_id=bytes(16),
                  parent_time_stamp=0, reserved1=0, parent_unicode_name=bytes(512),
                  parent_locators=bytes(24 * PARENT_LOCATOR_COUNT), reserved2=bytes(256))
    blobs = []
    if parent_image is not None:
        disk_type = DISK_TYPE_DIFFERENCING
        parent_path = os.path.realpath(parent)
        locs, blobs, data_start = _locators(path, parent_path, data_start)
        name = os.path.basename(parent_path).encode("utf-16-be")[:510]
        header.update(
            parent_unique_id=parent_image.footer.unique_id,
            parent_time_stamp=max(0, int(os.stat(parent_path).st_mtime) - VHD_EPOCH),
            parent_unicode_name=name + bytes(512 - len(name)),
            parent_locators=b"".join(locs) + bytes(24 * (PARENT_LOCATOR_COUNT - len(locs))))
    raw = DYNAMIC_HEADER.build(DYNAMIC_HEADER.type(**header))
    raw = DYNAMIC_HEADER.build(DYNAMIC_HEADER.type(**dict(
        header, checksum=checksum(raw, DYNAMIC_HEADER.offset_of("checksum")))))
    footer = build_footer(size, disk_type, SECTOR)
    fd = _exclusive_create(path)
    try:
        os.pwrite(fd, footer, 0)
        os.pwrite(fd, raw, SECTOR)
        os.pwrite(fd, UNUSED_BAT_ENTRY.to_bytes(4, "big") * entries + bytes(bat_bytes - 4 * entries),
                  table_offset)
        for offset, data in blobs:
            os.pwrite(fd, data + bytes(-len(data) % SECTOR), offset)
        os.pwrite(fd, footer, data_start)
        os.fsync(fd)
    finally:
        os.close(fd)
