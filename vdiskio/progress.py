"""A progress bar for long operations (convert, create --from, compare, map, check): one
line on stderr, redrawn in place, with the percentage, the bytes done, the rate and the
time left. Shown when asked (-p) or when stderr is a terminal; never on a pipe unless
asked."""

import os
import sys
import time

REDRAW_SECONDS = 0.2


def wanted(flag):
    """flag: True (-p), False (--no-progress) or None (on a terminal only)."""
    if flag is not None:
        return flag
    try:
        return os.isatty(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _size(n):
    from .cli.common import human
    return human(int(n))


def _duration(seconds):
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """progress.update(done) as work advances (bytes of `total`); close() at the end."""

    def __init__(self, total, label="", enabled=None, stream=None):
        self.total = max(0, total)
        self.label = label
        self.enabled = wanted(enabled)
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.done = 0
        self.width = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(finished=exc_type is None)
        return False

    def update(self, done):
        self.done = min(done, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_draw >= REDRAW_SECONDS:
            self.last_draw = now
            self._draw(now)

    def line(self, now):
        elapsed = max(now - self.start, 1e-6)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.done / elapsed
        text = f"{self.label}{pct:5.1f}% {_size(self.done)} of {_size(self.total)}"
        text += f", {_size(rate)}/s"
        if self.done < self.total and rate > 0:
            text += f", {_duration((self.total - self.done) / rate)} left"
        elif self.done >= self.total:
            text += f", {_duration(elapsed)}"
        return text

    def _draw(self, now):
        text = self.line(now)
        pad = " " * max(0, self.width - len(text))
        self.width = len(text)
        try:
            self.stream.write("\r" + text + pad)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self, finished=True):
        if not self.enabled:
            return
        if finished:
            self.done = self.total
        self._draw(time.monotonic())
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self.enabled = False
