"""Worker threads for deflating and inflating grains: the streamOptimized writer's
compression and the stream reader's readahead.

zlib and ISA-L release the GIL while they work on a buffer, so threads compress and
inflate on every core. The pool is made at the first job that asks for it: a process that
never reads a compressed grain sequentially (nor writes a stream) starts no thread. It
never outlives a fork: in the child (os.register_at_fork) the pool is forgotten, and so
is every job the parent had queued (their workers do not exist there); the child's next
job starts a pool of its own. A job from before the fork reports itself stale
(Job.result) instead of waiting for a worker that is gone. Nothing survives an exec
either: threads do not.

Workers run plain functions on plain arguments: they take no lock of the decoders (the
caller reads the results and caches them), import nothing, and log nothing; the
threads are started with _thread (the threading module is never imported). A worker
blocks only on the job queue.
"""

from _queue import Empty, SimpleQueue
from _thread import allocate_lock, start_new_thread
from _weakref import ref
from .._os import os

MAX_WORKERS = 8
KEEP = 4                    # job values each worker keeps alive (see Pool._work)
STALE = object()            # Job.result of a job queued before a fork, in the child

_pool = []                  # [the Pool], made at the first job
_generation = [0]           # moves at every fork, in the child
_make_lock = allocate_lock()
_readaheads = []            # weak references to every Readahead (reset in a forked child)


def cpus():
    """The CPUs this process may run on (taskset and cgroups' cpusets count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Job:
    """fn(*args), run by a worker or by the thread that asks for its result: that thread
    runs the job itself when no worker has started it, and while a worker runs it, runs
    the jobs queued after it. So the caller is one more worker whenever it would wait
    (the pool has a worker per CPU but one), and on a busy machine it does the work
    itself rather than wait for a thread the system does not schedule."""

    __slots__ = ("fn", "args", "pool", "value", "error", "claim", "done", "generation")

    def __init__(self, fn, args, pool):
        self.fn = fn
        self.args = args
        self.pool = pool
        self.value = self.error = None
        self.claim = allocate_lock()    # taken by whoever runs it
        self.done = allocate_lock()
        self.done.acquire()
        self.generation = _generation[0]

    def run(self):
        if not self.claim.acquire(False):
            return                      # the waiter took it
        try:
            self.value = self.fn(*self.args)
        except BaseException as e:      # noqa: B902 - handed to the waiter, which raises it
            self.error = e
        self.fn = self.args = None
        self.done.release()

    @property
    def stale(self):
        return self.generation != _generation[0]

    def result(self):
        """The job's value (its exception raised), or STALE for a job of the parent
        process, which no worker here will ever run."""
        if self.stale:
            return STALE
        self.run()
        while not self.done.acquire(False):
            other = self.pool.queued()
            if other is None:
                self.done.acquire()
                break
            other.run()
        self.done.release()
        if self.error is not None:
            raise self.error
        return self.value


class Pool:
    def __init__(self, workers):
        self.workers = workers
        self.queue = SimpleQueue()
        for _ in range(workers):
            start_new_thread(self._work, ())

    def _work(self):
        # The values of the last KEEP jobs are kept alive here, and so are freed by this
        # thread, oldest first. Otherwise the caller frees each one as it is consumed, and
        # glibc trims this thread's arena at every free of its top chunk: the next value
        # page-faults all of its pages again (measured: 12 faults per 64 KiB grain, more
        # CPU than the inflate itself).
        queue = self.queue
        kept = [None] * KEEP
        n = 0
        while True:
            job = queue.get()
            if job is None:
                return
            job.run()
            kept[n % KEEP] = job.value
            n += 1

    def submit(self, fn, *args):
        job = Job(fn, args, self)
        self.queue.put(job)
        return job

    def queued(self):
        """A job no worker has taken yet, or None."""
        try:
            return self.queue.get_nowait()
        except Empty:
            return None


def get(min_cpus=2):
    """The process's pool (made now if need be: a worker per CPU but one, the caller's,
    which runs the jobs it waits for; at most MAX_WORKERS), or None when the process
    runs on fewer than `min_cpus` CPUs: then threads would only add their cost."""
    if _pool:
        return _pool[0]
    n = cpus()
    if n < min_cpus:
        return None
    with _make_lock:
        if not _pool:
            _pool.append(Pool(max(1, min(n - 1, MAX_WORKERS))))
    return _pool[0]


def started():
    """Whether this process has a pool (tests, info)."""
    return bool(_pool)


class Stream:
    """One sequential reader: where its next read starts, the next unit (grain) not yet
    looked at for readahead, and the units read ahead for it (key -> job, index, unit)."""

    __slots__ = ("start", "next", "scheduled", "ahead")

    def __init__(self, start, next_offset):
        self.start = start
        self.next = next_offset
        self.scheduled = 0
        self.ahead = {}


class Readahead:
    """The sequential streams of reads over one extent, each with at most `window` units
    inflated (or being inflated) ahead of it, `per_job` units per worker job.

    A read that starts where an earlier one ended (or past it, at what was read ahead)
    continues its stream; any other read starts a new one (the least recently continued
    of `streams` is forgotten, with what was read ahead for it). Only a stream that has
    read `min_run` bytes in a row reads ahead (a random read that crosses a grain's end
    is two reads in a row): random reads never wait for, or pay for, work they did not
    ask for. The shim calls the decoder with a disk and an offset, not a file
    descriptor: a stream is recognised by its offsets, so two programs (or two fds)
    reading one image front to back are two streams."""

    def __init__(self, window, per_job, min_run, streams=4):
        self.window = max(1, window)
        self.min_run = min_run
        self.per_job = max(1, per_job)
        self.max_streams = streams
        self.lock = allocate_lock()
        self.streams = []
        self.jobs = 0                   # jobs submitted (tests)
        _readaheads.append(ref(self))
        if len(_readaheads) > 64:
            _readaheads[:] = [r for r in _readaheads if r() is not None]

    def follow(self, offset, length, key):
        """The stream the read [offset, offset+length) of `key` continues (now past it),
        or None. A read continues a stream when it starts where the stream's last read
        ended, or reads what was read ahead for it (the stream went past a hole)."""
        end = offset + length
        with self.lock:
            streams = self.streams
            for i, s in enumerate(streams):
                if s.next == offset or (key in s.ahead and offset > s.next):
                    s.next = end
                    if i:
                        streams.insert(0, streams.pop(i))
                    return s
            streams.insert(0, Stream(offset, end))
            del streams[self.max_streams:]
        return None

    def take(self, stream, key):
        """What a worker made for `key` ahead of `stream` (waiting for it), or None: not
        read ahead, from before a fork, or failed (the caller then does it itself, and
        meets the error in its own thread)."""
        with self.lock:
            got = stream.ahead.pop(key, None)
        if got is None:
            return None
        job, index, _ = got
        try:
            values = job.result()
        except Exception:               # noqa: B902 - redone (and reported) by the caller
            return None
        if values is STALE:
            return None
        value = values[index]
        return None if isinstance(value, BaseException) else value

    def schedule(self, stream, unit, units, lookup, work):
        """Read ahead of `stream`, now at `unit` (of `units`): lookup(u) is the key of unit
        u when it needs work (None: nothing to do for it), work(items) the job run for a
        list of (key, unit), returning a value (or an exception) per item."""
        if stream.next - stream.start < self.min_run:
            return                  # a read across a grain's end is not (yet) a stream
        if stream.scheduled - unit > self.window - self.per_job and \
                stream.scheduled < units:
            return                  # (unlocked: a hint) not a job's worth of room yet
        workers = get()
        if workers is None:
            return
        with self.lock:
            ahead = stream.ahead
            while ahead:            # passed over (the reader skipped them): the oldest
                key = next(iter(ahead))
                if ahead[key][2] > unit:
                    break
                del ahead[key]
            u = max(unit + 1, stream.scheduled)
            stop = min(units, unit + 1 + self.window)
            if ahead and (self.window - len(ahead) < self.per_job or
                          (stop - u < self.per_job and stop < units)):
                return                          # jobs of per_job units, not of one
            batch = []
            resume = u              # the first unit of the batch being gathered
            while u < stop and len(ahead) + len(batch) < self.window:
                key = lookup(u)
                if key is not None and key not in ahead:
                    batch.append((key, u))
                    if len(batch) == self.per_job:
                        self._submit(workers, ahead, batch, work)
                        batch = []
                        resume = u + 1
                u += 1
            if batch and (u >= units or (u >= stop and u - resume >= self.per_job)):
                # The extent's last units, or few to do among many (holes): as they are.
                self._submit(workers, ahead, batch, work)
                resume = u
            elif not batch:
                resume = u
            stream.scheduled = resume       # a partial batch waits for more room

    def _submit(self, workers, ahead, batch, work):
        job = workers.submit(work, batch)
        self.jobs += 1
        for i, (key, u) in enumerate(batch):
            ahead[key] = (job, i, u)

    def _reset(self):
        self.lock = allocate_lock()
        self.streams = []


def _after_fork_in_child():
    global _make_lock
    _pool.clear()
    _generation[0] += 1
    _make_lock = allocate_lock()
    for r in _readaheads:
        readahead = r()
        if readahead is not None:
            readahead._reset()
_readaheads = []            # weak references to every Readahead (reset in a forked child)


def generation():
    return _generation[0]


os.register_at_fork(after_in_child=_after_fork_in_child)
