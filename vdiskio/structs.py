"""Named fixed-size records over the struct module.

On-disk structures are declared in <format>_structs.py with the specification's field
names; this helper keeps those declarations short and fast to parse. (construct would
cost about 50 ms at import, more than three times the shim's whole first-open budget;
the test suite declares every structure a second time with construct, from the
specifications, and checks the two agree.)
"""

import struct
from collections import namedtuple


class Record:
    """A fixed layout: parse(bytes) gives a namedtuple, build(namedtuple) gives bytes."""

    def __init__(self, name, fields, byteorder):
        self.name = name
        self.fields = fields
        self.struct = struct.Struct(byteorder + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self.type = namedtuple(name, [field for field, _ in fields])

    def parse(self, buf, offset=0):
        return self.type._make(self.struct.unpack_from(buf, offset))

    def build(self, record):
        return self.struct.pack(*record)

    def offset_of(self, field):
        """Byte offset of a field inside the record (for patching one field in place)."""
        prefix = []
        for name, fmt in self.fields:
            if name == field:
                return struct.calcsize(self.struct.format[0] + "".join(prefix))
            prefix.append(fmt)
        raise KeyError(field)
