"""ESX Server sparse extents ("COWD"): the -delta.vmdk of a vmfsSparse snapshot.

A 2048-byte header, a grain directory of 32-bit sector numbers, grain tables of a fixed
4096 entries, then grains. An entry of 0 means the grain is the parent's.
"""

from .. import errors
from ..image import DATA, PARENT
from ..tables import Table
from .extents import GrainTableExtent
from .structs import (COWD_CHILD, COWD_FLAG_ROOT, COWD_GT_ENTRIES, COWD_MAGIC, COWD_ROOT,
                      COWDISK_HEADER, SECTOR)

MAX_GRAIN_SECTORS = 1 << 16


def read_header(f):
    header = COWDISK_HEADER.parse(f.read_exact(0, COWDISK_HEADER.size, "COWD header"))
    if header.magic_number != COWD_MAGIC:
        raise errors.NotAnImage("no 'COWD' sparse extent header", f.path)
    return header


def _text(raw):
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class CowdExtent(GrainTableExtent):
    type_name = "VMFSSPARSE"
    sector_entries = True       # entries are sector numbers: 0 unallocated

    def __init__(self, line, start, size, file, access, header):
        path = file.path
        gs = header.grain_size
        if gs == 0 or gs & (gs - 1) or gs > MAX_GRAIN_SECTORS:
            raise errors.CorruptImage(f"COWD grain size of {gs} sectors is not a power of two up to"
                                      f" {MAX_GRAIN_SECTORS}", path)
        if header.num_sectors == 0:
            raise errors.CorruptImage("COWD extent of 0 sectors", path)
        if size > header.num_sectors * SECTOR:
            raise errors.CorruptImage(f"the descriptor gives this extent {size // SECTOR} sectors but"
                                      f" its header holds {header.num_sectors}", path)
        super().__init__(line, start, size, file, access, gs * SECTOR, COWD_GT_ENTRIES)
        self.header = header
        self.version = header.version
        self.flags = header.flags
        if header.num_gd_entries < self.gd_entries:
            raise errors.CorruptImage(f"COWD grain directory has {header.num_gd_entries} entries but"
                                      f" {self.size // SECTOR} sectors need {self.gd_entries}", path)
        offset = header.gd_offset * SECTOR
        if header.gd_offset == 0 or offset + self.gd_entries * 4 > file.size:
            raise errors.CorruptImage(f"COWD grain directory at sector {header.gd_offset} lies outside"
                                      f" the file ({file.size} bytes)", path)
        self.gd = Table(file, offset, self.gd_entries, "<I", "COWD grain directory")

    def refusal(self, top):
        return (f"vmfsSparse (COWD) extents are read-only in vdiskio (ESX writes them); to get"
                f" a writable copy: vdiskio create --from {top} NEW.vmdk")

    def decode_entry(self, entry):
        if entry == 0:
            return PARENT, 0
        return DATA, entry * SECTOR

    def info(self):
        info = super().info()
        h = self.header
        info.update({"version": h.version, "flags": h.flags, "generation": h.generation,
                     "name": _text(h.name), "description": _text(h.description)})
        if h.flags & COWD_FLAG_ROOT:
            root = COWD_ROOT.parse(h.u)
            info["geometry"] = {"cylinders": root.cylinders, "heads": root.heads,
                                "sectors": root.sectors}
        else:
            # Informational only: the descriptor's parentFileNameHint names the parent.
            info["parent_file_name"] = _text(COWD_CHILD.parse(h.u).parent_file_name)
        return info
