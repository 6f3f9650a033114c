"""A node's crypto worker pool on a Ray cluster: the process pool's tasks, run where the cluster has CPUs.

A node whose homomorphic work outgrows one machine starts a Ray cluster inside its own
network (docs/scale.md) and names it in its config (``ray_address``). ``RayPool`` then
does what ``WorkerPool`` does: a job is cut into row chunks, each chunk runs
``parallel._task(spec, name, args)`` (now as a Ray task), and the parts come back in
order, so every result is the same integer the process pool gives. A Ray worker process
runs many tasks; the arithmetic object it rebuilds from a spec (for Paillier with its
fixed-base table) stays in that process's cache, as in a pool process. Chunks follow the
CPUs of the whole cluster, not of this machine.

Tasks whose key object holds a secret stay in a local process pool unless
``private_tasks_on_cluster``: decryption (the Paillier private key), a key holder's own
encryption (its CRT arithmetic carries p and q), PSI blinding (the blinding key); only the
public kinds in ``PUBLIC_SPECS`` go to the cluster by default, so a new kind of key stays
local until it is listed there. The reason:
by default Ray's transport neither encrypts nor authenticates, and a private key sent over
it is as exposed as the network it crosses (docs/scale.md).

Every use of Ray's API is in this module.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from fedcredit.common.ray_address import LOCAL, is_loopback_host, parse_address, ray_on_loopback
from fedcredit.crypto.errors import CryptoError
from fedcredit.crypto.parallel import MIN_PARALLEL_WORK, TASKS, WorkerPool, _task

PUBLIC_SPECS = frozenset({"paillier", "mock"})  # spec()[0] of arithmetic that carries no secret
CONNECT_TIMEOUT = 10.0  # seconds to reach the cluster's GCS port before giving up
JOIN_TIMEOUT = 120.0  # seconds for Ray to join the cluster behind that port (it would retry for ever)


class RayPool:
    """The crypto worker pool on the Ray cluster at ``address`` (connected at once; ``shutdown()`` disconnects).

    ``address``: ``"local"`` (a Ray instance of this machine, bound to 127.0.0.1, ended by
    ``shutdown()``), ``HOST:PORT`` of a running cluster's head (``ray start --head``), or
    ``ray://HOST:PORT`` (Ray Client). An address nobody answers at fails here, before any
    job work. ``workers``: the local process pool of the private-key tasks. ``min_work``: estimated
    mulmods below which a job runs inline (default ``MIN_PARALLEL_WORK``, read when the pool is made).
    """

    def __init__(self, address: str, *, min_work: int | None = None, workers: int | None = None,
                 private_tasks_on_cluster: bool = False) -> None:
        target = parse_address(address)
        if target is None or is_loopback_host(target[0]):
            ray_on_loopback()  # before Ray is imported: it would turn 127.0.0.1 into this machine's address
        if target is not None:
            _reachable(address, *target)
        import ray

        if ray.is_initialized():
            raise CryptoError(f"cannot use the Ray cluster {address}: this process is already connected to Ray "
                              "(e.g. it runs inside Flower's simulation engine)")
        self.address = address
        self.min_work = MIN_PARALLEL_WORK if min_work is None else min_work
        self.private_tasks_on_cluster = private_tasks_on_cluster
        self._local = WorkerPool(workers, self.min_work)
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        try:
            if target is None:
                ray.init(address=LOCAL, num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                _join(ray, address)
        except CryptoError:
            raise
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
            ray.shutdown()
            raise CryptoError(f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}") from None
        self._ray = ray
        self._remote = ray.remote(num_cpus=1)(_task)
        self.submitted = 0  # chunks sent to the cluster (tests and benchmarks read it)
        if self.cpus() < 1:
            self.shutdown()
            raise CryptoError(f"the Ray cluster at {address} has no CPUs")

    def cpus(self) -> int:
        """The CPUs of the whole cluster now (nodes may join or leave while a job runs)."""
        return int(self._ray.cluster_resources().get("CPU", 0))

    def chunks(self, work: int) -> int:
        """How many row chunks to cut a job of about ``work`` mulmods into (1 = inline)."""
        if work < self.min_work:
            return 1
        return max(1, self.cpus())

    def run(self, obj, name: str, arg_chunks: list[tuple]) -> list:
        """Run task ``name`` on each argument tuple; results in order."""
        if len(arg_chunks) == 1:
            return [TASKS[name](obj, *arg_chunks[0])]
        spec = obj.spec()
        if spec[0] not in PUBLIC_SPECS and not self.private_tasks_on_cluster:
            return self._local.run(obj, name, arg_chunks)
        spec = self._ray.put(spec)
        refs = [self._remote.remote(spec, name, args) for args in arg_chunks]
        self.submitted += len(refs)
        return self._ray.get(refs)

    def shutdown(self) -> None:
        """Disconnect (a ``"local"`` instance ends with its workers); the local private-key pool stops too."""
        self._local.shutdown()
        if getattr(self, "_ray", None) is not None:
            self._ray.shutdown()
            self._ray = None

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _reachable(address: str, host: str, port: int) -> None:
    """Fail fast, naming the address, when nothing listens there (Ray itself retries for minutes)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise CryptoError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start its head with "
                          f"'ray start --head --port {port}' on that machine, or fix ray_address") from None


def _join(ray, address: str) -> None:
    """``ray.init(address)``, given up after ``JOIN_TIMEOUT`` seconds: behind a port that answers but is no Ray
    head's (or of another Ray version), Ray keeps retrying without a word. It runs in a thread of its own so
    that it can be abandoned; the caller then fails, and the process exits with the thread. (Off the main
    thread Ray also leaves the process's SIGTERM handling alone, which the node service keeps for itself;
    its warning about that is dropped.)"""
    outcome: dict = {}
    quiet = _Drop("SIGTERM handler is not set")
    logging.getLogger("ray._private.worker").addFilter(quiet)

    def join() -> None:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except BaseException as exc:  # noqa: BLE001 — handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=join, name="ray-join", daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    logging.getLogger("ray._private.worker").removeFilter(quiet)
    if thread.is_alive():
        raise CryptoError(f"the Ray cluster at {address} did not answer within {JOIN_TIMEOUT:.0f} s: is it the GCS "
                          "port of a Ray head (ray start --head --port) of the same Ray version as this node?")
    if "error" in outcome:
        raise outcome["error"]


class _Drop(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def make_pool(workers: int | None = None, ray_address: str | None = None, *,
              private_tasks_on_cluster: bool = False) -> WorkerPool | RayPool:
    """A node's crypto worker pool: its Ray cluster when ``ray_address`` is set, else ``workers`` local processes."""
    if ray_address is not None:
        return RayPool(ray_address, workers=workers, private_tasks_on_cluster=private_tasks_on_cluster)
    return WorkerPool(workers)
