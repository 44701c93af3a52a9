"""Named fixed-size records over the struct module.

On-disk structures are declared in <format>_structs.py with the specification's field
names; this helper keeps those declarations short and fast to parse. (construct would
cost about 50 ms at import, more than three times the shim's whole first-open budget;
the test suite declares every structure a second time with construct, from the
specifications, and checks the two agree.)
"""

import _struct as struct       # struct.py re-exports it: 0.4 M instructions of start-up


def record_type(name, fields):
    """A namedtuple-like class (parse results, _replace, _make, _fields) built without
    collections.namedtuple, whose import and exec'd code cost milliseconds at start-up."""

    def __new__(cls, *args, **kwargs):
        if kwargs:
            args = args + tuple(kwargs[f] for f in fields[len(args):])
        if len(args) != len(fields):
            raise TypeError(f"{name} takes {len(fields)} fields, got {len(args)}")
        return tuple.__new__(cls, args)

    def _replace(self, **changes):
        return tuple.__new__(type(self), [changes.pop(f, v) for f, v in zip(fields, self)]) \
            if not set(changes) - set(fields) else _bad_fields(changes, fields)

    def __repr__(self):
        return f"{name}(" + ", ".join(f"{f}={v!r}" for f, v in zip(fields, self)) + ")"

    namespace = {f: property(_item(i)) for i, f in enumerate(fields)}
    namespace.update(__new__=__new__, _replace=_replace, __repr__=__repr__, __slots__=(),
                     _fields=tuple(fields), _make=classmethod(tuple.__new__),
                     _asdict=lambda self: dict(zip(fields, self)))
    return type(name, (tuple,), namespace)


def _item(i):
    # (Not _operator's itemgetter: importing _operator cost every first open 0.22 M
    # instructions, more than all the field reads of a process.)
    return lambda record: record[i]


def _bad_fields(changes, fields):
    raise ValueError(f"unknown fields {sorted(set(changes) - set(fields))}")


class Record:
    """A fixed layout: parse(bytes) gives a namedtuple, build(namedtuple) gives bytes."""

    def __init__(self, name, fields, byteorder):
        self.name = name
        self.fields = fields
        self.struct = struct.Struct(byteorder + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self._type = None

    @property
    def type(self):
        """The record's class, made when first needed: most declared structures are never
        parsed in a given process, and making one costs about 0.1 ms."""
        if self._type is None:
            self._type = record_type(self.name, [field for field, _ in self.fields])
        return self._type

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
