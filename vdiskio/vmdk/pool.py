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

import os
from _queue import SimpleQueue
from _thread import allocate_lock, start_new_thread

MAX_WORKERS = 8
STALE = object()            # Job.result of a job queued before a fork, in the child

_pool = []                  # [the Pool], made at the first job
_generation = [0]           # moves at every fork, in the child
_make_lock = allocate_lock()


def cpus():
    """The CPUs this process may run on (taskset and cgroups' cpusets count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Job:
    """fn(*args) run by a worker; result() waits for it (and re-raises its exception)."""

    __slots__ = ("fn", "args", "value", "error", "done", "generation")

    def __init__(self, fn, args):
        self.fn = fn
        self.args = args
        self.value = self.error = None
        self.done = allocate_lock()
        self.done.acquire()
        self.generation = _generation[0]

    def run(self):
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
        self.done.acquire()
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
        queue = self.queue
        while True:
            job = queue.get()
            if job is None:
                return
            job.run()

    def submit(self, fn, *args):
        job = Job(fn, args)
        self.queue.put(job)
        return job


def get(min_cpus=2):
    """The process's pool (made now if need be: one worker per CPU, at most MAX_WORKERS),
    or None when the process runs on fewer than `min_cpus` CPUs: then threads would only
    add their cost."""
    if _pool:
        return _pool[0]
    n = cpus()
    if n < min_cpus:
        return None
    with _make_lock:
        if not _pool:
            _pool.append(Pool(min(n, MAX_WORKERS)))
    return _pool[0]


def started():
    """Whether this process has a pool (tests, info)."""
    return bool(_pool)


def _after_fork_in_child():
    global _make_lock
    _pool.clear()
    _generation[0] += 1
    _make_lock = allocate_lock()


def generation():
    return _generation[0]


os.register_at_fork(after_in_child=_after_fork_in_child)
