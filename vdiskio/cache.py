"""The one cache: a dict of at most `limit` entries, the least recently used dropped
first. Used for table slices (tables.py), VMDK grain tables, inflated grains and VHD
sector bitmaps.

`lock` guards every operation; get_or_load holds it while it loads, so a load racing
with a writer that updates a cached entry (the file first, then the entry, under the
same lock) never caches what the file held before. A loader must not use the cache.
In a forked child every LRU gets a new lock: a thread the child does not have may have
held one at the fork (a program's reader thread, in the middle of a get).
"""

from _thread import allocate_lock
from _weakref import ref

from ._os import os

_every = []         # weak references to every LRU, for the fork handler


class LRU:
    def __init__(self, limit):
        self.limit = max(1, limit)
        self.lock = allocate_lock()
        self._items = {}                # key -> value, least recently used first
        self.loads = 0                  # values loaded (for tests and info)
        _every.append(ref(self))
        if len(_every) > 2 * _live[0] + 64:
            _every[:] = [r for r in _every if r() is not None]
            _live[0] = len(_every)

    def _touch(self, key):
        value = self._items.pop(key, None)
        if value is not None:
            self._items[key] = value
        return value

    def _put(self, key, value):
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self.limit:
            del self._items[next(iter(self._items))]

    def get(self, key):
        """The value cached for key (now the most recently used), or None."""
        with self.lock:
            return self._touch(key)

    def peek(self, key):
        """The value cached for key, its place kept; the caller holds `lock`."""
        return self._items.get(key)

    def put(self, key, value):
        with self.lock:
            self._put(key, value)

    def get_or_load(self, key, load):
        """The cached value, or load() cached (None is returned uncached)."""
        with self.lock:
            value = self._touch(key)
            if value is None:
                value = load()
                if value is not None:
                    self.loads += 1
                    self._put(key, value)
            return value

    def clear(self):
        with self.lock:
            self._items.clear()

    def __len__(self):
        return len(self._items)


_live = [0]


def _new_locks_in_child():
    for r in _every:
        lru = r()
        if lru is not None:
            lru.lock = allocate_lock()


os.register_at_fork(after_in_child=_new_locks_in_child)
