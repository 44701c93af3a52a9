"""`os` for the decoder, without importing os where nothing else has.

Importing os costs the library's first open about a millisecond (its environ mapping
pulls in _collections_abc), more than any other module it imports, and the programs run
under the library (dd, fdisk, sha256sum...) never load it otherwise. The decoder's
modules take `os` from here: os itself when it is already loaded (a Python program, the
vdiskio command), else posix's functions and constants with the few pieces os.py adds
that the decoder uses: SEEK_SET/CUR/END, fsencode/fsdecode, getenv and environ (the
environment the process started with, as os's; environ is built on first use), and os.path's basename, dirname, join, isabs,
normpath, abspath, islink and realpath, written to give os.path's results
(tests/test_os_subset.py compares them on random paths and symlink trees). Any other
name is looked up in os itself, imported then.
"""

import sys

# File types of st_mode, POSIX's values (the same on every Linux): importing _stat for
# its S_IS* tests cost the first open 0.17 M instructions.
S_IFMT = 0o170000
S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK = 0o140000, 0o120000, 0o100000, 0o060000
S_IFDIR, S_IFCHR, S_IFIFO = 0o040000, 0o020000, 0o010000


def file_type(mode):
    """The S_IF* type of st_mode `mode`."""
    return mode & S_IFMT


os = sys.modules.get("os")

if os is None:
    import posix

    def _real_os():
        import os as real
        return real

    class _Subset:
        """Names not set here are posix's, else _source()'s (os itself, or os.path), kept
        once looked up (copying posix's 300 names up front cost the first open 1.9 million
        instructions)."""
        _source = staticmethod(_real_os)
        _first = posix

        def __getattr__(self, name):
            if name == "environ":
                value = {fsdecode(k): fsdecode(v) for k, v in posix.environ.items()}
            else:
                value = getattr(self._first, name, _Subset)
                if value is _Subset or name.startswith("__"):
                    value = getattr(self._source(), name)
            setattr(self, name, value)
            return value

    def _fs_encoding():
        return sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()

    def fsencode(filename):
        filename = posix.fspath(filename)
        return filename.encode(*_fs_encoding()) if isinstance(filename, str) else filename

    def fsdecode(filename):
        filename = posix.fspath(filename)
        return filename.decode(*_fs_encoding()) if isinstance(filename, bytes) else filename

    def _on_str(fn):
        """fn over str paths (os.PathLike ones made str first); any other path goes to
        posixpath's function of the same name, which answers or raises as os does."""
        name = fn.__name__

        def call(*paths):
            paths = tuple(map(posix.fspath, paths))
            if all(isinstance(p, str) for p in paths):
                return fn(*paths)
            return getattr(_real_os().path, name)(*paths)
        call.__name__ = name
        return staticmethod(call)

    class _Path(_Subset):
        """posixpath's functions the decoder uses, on str paths (others: posixpath's)."""
        _source = staticmethod(lambda: _real_os().path)
        _first = None

        @staticmethod
        def _split(p):
            i = p.rfind("/") + 1
            head, tail = p[:i], p[i:]
            if head and head != "/" * len(head):
                head = head.rstrip("/")
            return head, tail

        @_on_str
        def basename(p):
            return p[p.rfind("/") + 1:]

        @_on_str
        def dirname(p):
            return _Path._split(p)[0]

        @_on_str
        def isabs(p):
            return p.startswith("/")

        @_on_str
        def join(a, *rest):
            path = a
            for b in rest:
                if b.startswith("/"):
                    path = b
                elif not path or path.endswith("/"):
                    path += b
                else:
                    path += "/" + b
            return path

        @_on_str
        def normpath(p):
            if not p:
                return "."
            # POSIX keeps exactly two leading slashes; one, or three and more, are one.
            lead = 2 if p.startswith("//") and not p.startswith("///") else \
                1 if p.startswith("/") else 0
            parts = []
            for part in p.split("/"):
                if part in ("", "."):
                    continue
                if part != ".." or (not lead and not parts) or (parts and parts[-1] == ".."):
                    parts.append(part)
                elif parts:
                    parts.pop()
            p = "/" * lead + "/".join(parts)
            return p or "."

        @_on_str
        def abspath(p):
            if not p.startswith("/"):
                p = _Path.join(posix.getcwd(), p)
            return _Path.normpath(p)

        @staticmethod
        def islink(p):
            try:
                return file_type(posix.lstat(p).st_mode) == S_IFLNK
            except (OSError, ValueError):
                return False

        @classmethod
        def realpath(cls, filename, *, strict=False):
            filename = posix.fspath(filename)
            if strict or not isinstance(filename, str):
                return _real_os().path.realpath(filename, strict=strict)
            return cls.abspath(cls._resolve("", filename, {})[0])

        @classmethod
        def _resolve(cls, path, rest, seen):
            """path (resolved) joined with rest, each symbolic link in rest followed; seen:
            the links being or already followed (None while being: a loop). Returns (the
            path, False when a loop stopped it: the rest then joined unresolved)."""
            if rest.startswith("/"):
                path, rest = "/", rest[1:]
            while rest:
                name, _, rest = rest.partition("/")
                if name in ("", "."):
                    continue
                if name == "..":
                    if not path:
                        path = ".."
                    else:
                        head, tail = cls._split(path)
                        path = cls.join(head, "..", "..") if tail == ".." else head
                    continue
                candidate = cls.join(path, name)
                try:
                    link = file_type(posix.lstat(candidate).st_mode) == S_IFLNK
                except OSError:
                    link = False
                if not link:
                    path = candidate
                    continue
                if candidate in seen:
                    if seen[candidate] is not None:
                        path = seen[candidate]
                        continue
                    return cls.join(candidate, rest), False
                seen[candidate] = None
                path, ok = cls._resolve(path, posix.readlink(candidate), seen)
                if not ok:
                    return cls.join(path, rest), False
                seen[candidate] = path
            return path, True

    def getenv(key, default=None):
        """os.getenv without building environ: one variable of the environment the process
        started with (environ, built on first use, holds the same)."""
        value = posix.environ.get(fsencode(key))
        return default if value is None else fsdecode(value)

    os = _Subset()
    os.SEEK_SET, os.SEEK_CUR, os.SEEK_END = 0, 1, 2
    os.fsencode, os.fsdecode, os.getenv = fsencode, fsdecode, getenv
    os.path = _Path()
