"""lvm2's configuration syntax (libdm/libdm-config.c), in which VG metadata is written.

    name {                      # a section
        key = 12                # integers, floats, "strings", 'strings', bare words
        list = ["a", 1, 2.5]    # arrays (commas optional, as lvm2 reads them)
        inner { ... }
    }

Double-quoted strings take backslash escapes for '"' and '\\' only (other backslashes
stay); single-quoted strings take none. Tokens are read as lvm2 reads them: after '=',
'[' or ',' a token starting with a digit, '.', '+' or '-' is a number. Unlike lvm2,
which warns and keeps one, a key given twice in a section is an error: metadata written
by lvm2 never has one, so a duplicate means damage, and either choice would be a guess.
Every size is bounded: nesting depth, number of values, array lengths, numbers.

(Written with str methods, not the re module: importing re and compiling patterns
would cost more than the whole parse of a VG's metadata, inside every program that
opens a volume.)
"""

from .. import errors

MAX_DEPTH = 32                  # lvm2's MAX_INDENT
MAX_NODES = 1 << 20             # keys, sections and array items in one text
MAX_ARRAY = 1 << 16
INT64_MAX = (1 << 63) - 1

SPACE = frozenset(" \t\n\r\v\f")
WORD_END = frozenset(" \t\n\r\v\f#={}")
PUNCT = frozenset("{}[],=")
DIGITS = frozenset("0123456789")
NUMBER_START = frozenset("0123456789.+-")


class Section(dict):
    """A section's keys in text order: values are int, float, str, list or Section."""

    __slots__ = ("name", "line")

    def __init__(self, name, line):
        super().__init__()
        self.name = name
        self.line = line


def _number(token):
    """int or float of a number token as lvm2 reads them, or None. lvm2 reads integers
    with strtoll(base 0), so a leading zero would mean octal: lvm2 never writes one, and
    one is refused here rather than read either way."""
    sign = token[:1] in ("+", "-")
    digits = token[1:] if sign else token
    if digits and digits.isdigit() and digits.isascii():
        if len(digits) > 1 and digits[0] == "0" or len(digits) > 19:
            return None
        value = int(token)
        return value if -INT64_MAX - 1 <= value <= INT64_MAX else None
    whole, dot, frac = digits.partition(".")
    if dot and (whole or frac) and (not whole or whole.isdigit()) and \
            (not frac or frac.isdigit()) and digits.isascii():
        return float(token)
    return None


class _Parser:
    def __init__(self, text, where):
        self.text = text
        self.end = len(text)
        self.where = where
        self.pos = 0
        self.nodes = 0

    def fail(self, message, pos=None):
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        raise errors.CorruptImage(f"{self.where}: metadata line {line}: {message}")

    def peek(self):
        """The next character after spaces and comments ("" at the end)."""
        text, pos, end = self.text, self.pos, self.end
        while pos < end:
            c = text[pos]
            if c in SPACE:
                pos += 1
            elif c == "#":
                nl = text.find("\n", pos)
                pos = end if nl < 0 else nl + 1
            else:
                self.pos = pos
                return c
        self.pos = pos
        return ""

    def word(self):
        text, pos, end = self.text, self.pos, self.end
        start = pos
        while pos < end and text[pos] not in WORD_END:
            pos += 1
        self.pos = pos
        return text[start:pos]

    def count(self):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(f"more than {MAX_NODES} values")

    def name(self):
        """A section or key name: a bare word or a quoted string."""
        c = self.peek()
        if c == '"':
            return self.dq_string()
        if c == "'":
            return self.sq_string()
        if not c or c in PUNCT:
            self.fail(f"expected a name, found {c or 'the end of the text'!r}")
        return self.word()

    def dq_string(self):
        text = self.text
        start = pos = self.pos + 1
        while True:
            quote = text.find('"', pos)
            if quote < 0:
                self.fail("unterminated string")
            back = quote
            while back > start and text[back - 1] == "\\":
                back -= 1
            if (quote - back) % 2 == 0:
                break               # not escaped: an even run of backslashes before it
            pos = quote + 1
        self.pos = quote + 1
        raw = text[start:quote]
        if "\\" not in raw:
            return raw
        # Only \" and \\ are escapes (libdm's dm_unescape_double_quotes).
        out, i = [], 0
        while i < len(raw):
            c = raw[i]
            if c == "\\" and i + 1 < len(raw) and raw[i + 1] in '"\\':
                out.append(raw[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)

    def sq_string(self):
        quote = self.text.find("'", self.pos + 1)
        if quote < 0:
            self.fail("unterminated string")
        value = self.text[self.pos + 1:quote]
        self.pos = quote + 1
        return value

    def body(self, section, depth, closing):
        """Entries until `closing` ('}' or the end of the text)."""
        while True:
            c = self.peek()
            if closing == "}" and c == "}":
                self.pos += 1
                return
            if not c:
                if closing == "}":
                    self.fail(f"section {section.name!r} is not closed")
                return
            start = self.pos
            key = self.name()
            if key in section:
                self.fail(f"{key!r} appears twice in section {section.name!r}", start)
            self.count()
            c = self.peek()
            if c == "{":
                if depth >= MAX_DEPTH:
                    self.fail(f"sections nested deeper than {MAX_DEPTH}")
                self.pos += 1
                child = Section(key, self.text.count("\n", 0, start) + 1)
                self.body(child, depth + 1, "}")
                section[key] = child
            elif c == "=":
                self.pos += 1
                section[key] = self.value()
            else:
                self.fail(f"expected '=' or '{{' after {key!r}")

    def value(self):
        if self.peek() != "[":
            return self.scalar()
        self.pos += 1
        items = []
        while True:
            c = self.peek()
            if c == "]":
                self.pos += 1
                return items
            if len(items) >= MAX_ARRAY:
                self.fail(f"array longer than {MAX_ARRAY} items")
            items.append(self.scalar())
            self.count()
            if self.peek() == ",":
                self.pos += 1

    def scalar(self):
        c = self.peek()
        if c == '"':
            return self.dq_string()
        if c == "'":
            return self.sq_string()
        if not c or c in PUNCT:
            self.fail(f"expected a value, found {c or 'the end of the text'!r}")
        if c in NUMBER_START:
            # lvm2's number token: digits, and at most one '.', after the first character.
            text, start, end = self.text, self.pos, self.end
            pos = start + 1
            dot = c == "."
            while pos < end and (text[pos] in DIGITS or (text[pos] == "." and not dot)):
                dot = dot or text[pos] == "."
                pos += 1
            token = text[start:pos]
            self.pos = pos
            value = _number(token)
            if value is None:
                self.fail(f"{token!r} is not a number lvm2 writes", start)
            return value
        return self.word()          # a bare word, read as a string (as lvm2 does)


def parse(text, where):
    """The top-level Section of a metadata text (str). Errors: CorruptImage naming
    `where` and the line."""
    parser = _Parser(text, where)
    root = Section("", 1)
    parser.body(root, 0, "")
    return root
