"""Process pool for large homomorphic jobs: split by rows, run kernels, combine.

Workers rebuild the arithmetic object from its picklable ``spec()`` once and cache it
(for Paillier that includes the fixed-base table). Small jobs run inline. The default
pool is created on first use and shut down by ``shutdown()`` or at interpreter exit,
so no worker outlives its parent.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

from fedcredit.crypto import kernels
from fedcredit.crypto.errors import CryptoError

MIN_PARALLEL_WORK = 200_000  # estimated mulmods (~1 s) below which a job runs inline
_CACHE: dict = {}


def _resolve(spec: tuple):
    obj = _CACHE.get(spec)
    if obj is None:
        from fedcredit.crypto.backend import arith_from_spec

        if len(_CACHE) >= 8:
            _CACHE.clear()
        obj = _CACHE[spec] = arith_from_spec(spec)
    return obj


TASKS = {
    "encrypt": lambda obj, ints: obj.encrypt(ints),
    "rerandomize": lambda obj, cts: obj.rerandomize(cts),
    "decrypt": lambda obj, cts: obj.decrypt(cts),
    "blind": lambda key, points: key.blind(points),
    "grouped_sum": kernels.grouped_sum_partial,
    "joint_sum": kernels.joint_sum_partial,
    "dot": kernels.dot_partial,
    "pack": kernels.pack_groups,
}


def _task(spec: tuple, name: str, args: tuple):
    return TASKS[name](_resolve(spec), *args)


class WorkerPool:
    """A lazily started pool of ``workers`` processes (1 means: run everything inline)."""

    def __init__(self, workers: int | None = None, min_work: int = MIN_PARALLEL_WORK) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or workers < 1:
            raise CryptoError(f"workers must be a positive int, got {workers!r}")
        self.workers = workers
        self.min_work = min_work
        self._executor: ProcessPoolExecutor | None = None

    def chunks(self, work: int) -> int:
        """How many row chunks to cut a job of about ``work`` mulmods into (1 = inline)."""
        if self.workers == 1 or work < self.min_work:
            return 1
        return self.workers

    def run(self, obj, name: str, arg_chunks: list[tuple]) -> list:
        """Run task ``name`` on each argument tuple; results in order."""
        if len(arg_chunks) == 1:
            return [TASKS[name](obj, *arg_chunks[0])]
        if self._executor is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["fedcredit.crypto.parallel"])
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        spec = obj.spec()
        futures = [self._executor.submit(_task, spec, name, args) for args in arg_chunks]
        return [f.result() for f in futures]

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


_default: WorkerPool | None = None


def configure(workers: int | None = None, min_work: int = MIN_PARALLEL_WORK) -> WorkerPool:
    """Replace the default pool (shutting the old one down); ``workers=None`` = os.cpu_count()."""
    global _default
    shutdown()
    _default = WorkerPool(workers, min_work)
    return _default


def default_pool() -> WorkerPool:
    global _default
    if _default is None:
        _default = WorkerPool()
    return _default


def shutdown() -> None:
    """Stop the default pool's worker processes (safe to call repeatedly)."""
    if _default is not None:
        _default.shutdown()


def stop_forkserver() -> None:
    """End this process's forkserver (at exit, or when a long-lived host process is done with its pool).

    It normally exits when its creator does, but when a child of the creator (e.g. a
    simulation runtime's helper) inherited its lifeline it would outlive us; so it is
    ended explicitly. Only at exit: a live pool may still need it to start workers.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        server._stop()  # closes the lifeline and reaps the process
    except (OSError, AttributeError, ChildProcessError):
        pass


def _at_exit() -> None:
    shutdown()
    stop_forkserver()


atexit.register(_at_exit)


def split(seq, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering ``range(len(seq))`` (or ``seq`` if an int)."""
    n = seq if isinstance(seq, int) else len(seq)
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]
