"""FLAT and VMFS extents of a VMDK: a file's bytes as they are (extents in files of their
own: layout.py makes them, in its group file; a sparse VMDK's first open never loads
this module)."""

from .. import log
from ..image import DATA, ZERO, Run
from .extents import VmdkExtent


class FlatExtent(VmdkExtent):
    """FLAT and VMFS extents: the bytes as they are, from a start sector of a file."""

    type_name = "FLAT"
    writes_in_place = True

    def __init__(self, line, start, size, file, access, file_offset, type_name="FLAT"):
        super().__init__(line, start, size, file, access)
        self.type_name = type_name
        self.file_offset = file_offset
        # A file shorter than its extent reads as zeros past its end, as QEMU reads it.
        self.stored = max(0, min(size, file.size - file_offset))
        if self.stored < size:
            log.warn(f"{file.path}: {type_name} extent needs {size} bytes from offset"
                     f" {file_offset} but the file holds {self.stored}; the rest reads as zeros")

    def refresh(self):
        self.stored = max(0, min(self.size, self.file.size - self.file_offset))

    def map(self, offset):
        if offset - self.start < self.stored:
            return Run(self.start, self.stored, DATA, self.file, self.file_offset,
                       owned=self.owned)
        return Run(self.start + self.stored, self.size - self.stored, ZERO)

    def write(self, offset, data, fill):
        self.file.pwrite(self.file_offset + offset - self.start, data)
        self.stored = max(0, min(self.size, self.file.size - self.file_offset))

    def discard(self, offset, length, has_parent):
        """In place: a hole where the file system can punch one, zeros elsewhere. Past
        the end of a short file the bytes already read as zeros."""
        rel = offset - self.start
        n = min(length, self.stored - rel)
        if n > 0:
            self.file.zero_range(self.file_offset + rel, n)
        return []

    def check(self):
        if self.stored < self.size:
            return [f"{self.type_name} extent on descriptor line {self.line.line_no} needs"
                    f" {self.size} bytes from offset {self.file_offset} of {self.file.path},"
                    f" the file holds {self.stored}"]
        return []
