"""The VMDK text descriptor: header keys, extent lines and the disk database.

A descriptor is a small text file (or a text area inside a hosted sparse extent):

    # Disk DescriptorFile
    version=1
    CID=fffffffe
    parentCID=ffffffff
    createType="twoGbMaxExtentSparse"
    # Extent description
    RW 4192256 SPARSE "disk-s001.vmdk"
    RW 1048576 FLAT "disk-flat.vmdk" 0
    RDONLY 2048 ZERO
    # The Disk Data Base
    ddb.adapterType = "lsilogic"

Tools vary the first line, the spacing, the line endings (LF or CRLF) and whether values
are quoted, so parsing is by line shape, not by section.
"""

import codecs

from .. import errors

MAX_DESCRIPTOR_BYTES = 1 << 20       # QEMU reads at most 1 MiB; real ones are < 10 KiB
MAX_EXTENTS = 4096                   # a 8 TiB twoGbMaxExtent disk has 4096
MAX_EXTENT_SECTORS = 1 << 40         # 512 TiB: anything larger is a corrupt line
MAX_NUMBER_DIGITS = 20               # a 64-bit number has at most 20 digits

# Codecs Python calls text encodings that no descriptor is written in: they transform
# text (escapes, IDNA labels, UTF-7's base64 runs) or refuse every byte ("undefined").
# Byte-to-byte codecs (hex, zlib, base64, rot13...) are refused as not text at all.
NOT_DESCRIPTOR_ENCODINGS = frozenset({"idna", "punycode", "undefined", "unicode-escape",
                                      "raw-unicode-escape", "utf-7"})

ACCESS_MODES = ("RW", "RDONLY", "NOACCESS")
NO_PARENT_CID = 0xFFFFFFFF
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class ExtentLine:
    """One extent line: access, size in sectors, type, file name, start sector in the file."""

    __slots__ = ("access", "sectors", "type", "file_name", "offset", "line_no", "text")

    def __init__(self, access, sectors, type_, file_name, offset, line_no, text):
        self.access = access
        self.sectors = sectors
        self.type = type_
        self.file_name = file_name
        self.offset = offset
        self.line_no = line_no
        self.text = text

    def describe(self):
        name = f' "{self.file_name}"' if self.file_name is not None else ""
        return f"{self.access} {self.sectors} {self.type}{name}"

    def __repr__(self):
        return f"<ExtentLine {self.describe()} @{self.offset} (line {self.line_no})>"


class Descriptor:
    """A parsed descriptor. `fields` keeps every key=value line, ddb.* included."""

    def __init__(self, path):
        self.path = path
        self.fields = {}
        self.extents = []
        self.encoding = "UTF-8"

    def get(self, key, default=None):
        return self.fields.get(key, default)

    @property
    def version(self):
        return self.fields.get("version")

    @property
    def create_type(self):
        return self.fields.get("createType")

    @property
    def parent_file_name_hint(self):
        return self.fields.get("parentFileNameHint") or None

    @property
    def cid(self):
        return self._hex("CID")

    @property
    def parent_cid(self):
        return self._hex("parentCID")

    def _hex(self, key):
        value = self.fields.get(key)
        if value is None:
            return None
        return _parse_hex(key, value, self.path)

    @property
    def has_parent(self):
        """A parent is named by parentFileNameHint; parentCID=ffffffff means none at all."""
        return self.parent_file_name_hint is not None and self.parent_cid != NO_PARENT_CID


def _parse_hex(key, value, path):
    if not 0 < len(value) <= 8 or not _HEX_DIGITS.issuperset(value):
        raise errors.CorruptImage(f"descriptor {key}={value[:40]!r} is not a 32-bit hexadecimal number",
                                  path)
    return int(value, 16)


def _declared_encoding(raw):
    """The value of an `encoding=` line, as bytes, or None."""
    for line in raw.split(b"\n"):
        line = line.strip()
        if line.startswith(b"encoding"):
            rest = line[8:].lstrip()
            if rest.startswith(b"="):
                return rest[1:].strip().strip(b'"') or None
    return None


def decode(raw, path):
    """Descriptor bytes to text, in the encoding it declares (UTF-8 by default)."""
    raw = raw.split(b"\0", 1)[0]
    declared = _declared_encoding(raw)
    encoding = declared.decode("ascii", errors="replace") if declared else "UTF-8"
    try:
        codec = codecs.lookup(encoding)
    except (LookupError, ValueError):
        raise errors.Unsupported(f"descriptor encoding {encoding[:40]!r} is unknown", path) from None
    if not codec._is_text_encoding or codec.name in NOT_DESCRIPTOR_ENCODINGS:
        raise errors.Unsupported(f"descriptor encoding {encoding[:40]!r} is not a text encoding"
                                 f" descriptors are written in", path)
    # Bytes the encoding cannot decode survive as surrogates, so an undeclared Latin-1
    # file name still reaches the file system unchanged. What even that cannot carry
    # (UTF-16 or UTF-32 cut short, bytes below 0x80 a multi-byte codec refuses) is
    # damage.
    try:
        return raw.decode(encoding, errors="surrogateescape"), encoding
    except (UnicodeError, ValueError) as e:
        raise errors.CorruptImage(f"descriptor is not valid {encoding[:40]} text: {e}", path) from None


def _unquote(value):
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _decimal(text, limit=MAX_EXTENT_SECTORS):
    """A decimal number of at most `limit`, None when text is not one (or is larger:
    thousands of digits must not reach int())."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > MAX_NUMBER_DIGITS:
        return None
    value = int(text)
    return value if value <= limit else None


def _is_key(key):
    return key[:1].isascii() and key[:1].isalpha() and \
        key.replace(".", "").replace("_", "").isalnum() and key.isascii()


def _parse_extent(words, line_no, text, path):
    """ACCESS SECTORS TYPE ["FILE NAME" [OFFSET ...]] (words: the line split in four)."""
    access = words[0].upper()
    sectors = _decimal(words[1])
    if sectors is None:
        raise errors.CorruptImage(f"descriptor line {line_no}: extent size {words[1][:40]!r} is not"
                                  f" a number up to {MAX_EXTENT_SECTORS}: {text[:80]!r}", path)
    type_ = words[2].upper()
    if not type_.replace("_", "").isalnum() or not type_.isascii():
        raise errors.CorruptImage(f"descriptor line {line_no}: invalid extent type {words[2]!r}",
                                  path)
    rest = words[3] if len(words) > 3 else ""
    file_name = None
    tail = []
    if rest.startswith('"'):
        # The name runs to the last quote on the line, so names may hold spaces and quotes.
        end = rest.rfind('"')
        if end == 0:
            raise errors.CorruptImage(f"descriptor line {line_no}: unterminated file name: {text!r}",
                                      path)
        file_name = rest[1:end]
        tail = rest[end + 1:].split()
    elif rest:
        parts = rest.split()
        file_name, tail = parts[0], parts[1:]
    offset = 0
    if tail:
        offset = _decimal(tail[0])
        if offset is None:
            raise errors.CorruptImage(f"descriptor line {line_no}: extent offset {tail[0][:40]!r} is"
                                      f" not a number up to {MAX_EXTENT_SECTORS}: {text[:80]!r}", path)
    if not 0 < sectors <= MAX_EXTENT_SECTORS or not 0 <= offset <= MAX_EXTENT_SECTORS:
        raise errors.CorruptImage(f"descriptor line {line_no}: extent size {sectors} or offset"
                                  f" {offset} out of range: {text!r}", path)
    if type_ != "ZERO" and not file_name:
        raise errors.CorruptImage(f"descriptor line {line_no}: {type_} extent without a file name",
                                  path)
    return ExtentLine(access, sectors, type_, file_name, offset, line_no, text)


def parse(raw, path):
    """Parse descriptor bytes (NUL-padded or not) read from `path`."""
    if len(raw) > MAX_DESCRIPTOR_BYTES:
        raise errors.CorruptImage(f"descriptor of {len(raw)} bytes is larger than the"
                                  f" {MAX_DESCRIPTOR_BYTES} bytes a descriptor may have", path)
    text, encoding = decode(raw, path)
    desc = Descriptor(path)
    desc.encoding = encoding
    # Lines end with LF or CRLF (str.splitlines would also split at \x1c, \x85 and more).
    for line_no, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split(None, 3)
        if words[0].upper() in ACCESS_MODES:
            if len(words) < 3:
                raise errors.CorruptImage(f"descriptor line {line_no}: invalid extent line:"
                                          f" {stripped!r}", path)
            if len(desc.extents) >= MAX_EXTENTS:
                raise errors.CorruptImage(f"descriptor has more than {MAX_EXTENTS} extents", path)
            desc.extents.append(_parse_extent(words, line_no, stripped, path))
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip()
        if equals and _is_key(key):
            desc.fields[key] = _unquote(value.strip())
        # Anything else (tool-specific text) is ignored, as VMware and QEMU do.
    # Identities are checked here, once, so the library, info and check agree on them.
    for key in ("CID", "parentCID"):
        if key in desc.fields:
            _parse_hex(key, desc.fields[key], path)
    return desc


def replace_value(raw, key, value):
    """Descriptor bytes `raw` with the value of every `key=` line replaced by `value`
    (bytes), its spacing, quotes and line ending kept; None when no line sets `key`."""
    lines = raw.split(b"\n")
    found = False
    for i, line in enumerate(lines):
        name, equals, rest = line.partition(b"=")
        if not equals or name.strip() != key.encode():
            continue
        stripped = rest.strip()
        lead = len(rest) - len(rest.lstrip())
        quoted = len(stripped) >= 2 and stripped[:1] == b'"' and stripped[-1:] == b'"'
        first = lead + quoted
        last = lead + len(stripped) - quoted
        lines[i] = name + equals + rest[:first] + value + rest[last:]
        found = True
    return b"\n".join(lines) if found else None
