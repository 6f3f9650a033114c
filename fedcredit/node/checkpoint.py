"""A run's checkpoint at a node: a small signed file per delivery, large objects written once and referenced.

A node checkpoints its agent after every delivery so that it survives a crash at any
point. Pickling the whole agent each time costs time and bytes in proportion to its
rows (data, bins, encrypted label vectors). Here the agent is pickled with *persistent
references*: every large object (numpy arrays, data frames, encrypted vectors, big byte
strings) goes into ``blobs/<sha256>`` the first time it is seen and is referenced by its
digest from then on; the per-delivery file holds only the protocol state and the
delivery's replies. The node keeps the stored objects in memory by identity, so an
unchanged object costs nothing on the next delivery. Stored numpy arrays are made
read-only: a protocol that changed one in place would fail loudly instead of leaving a
stale blob behind.

The file starts with a magic line, the format version and an HMAC-SHA256 under the
node's own secret (``node.secret`` in its work directory): a node loads only checkpoints
it wrote itself, never a file put there by someone else (pickle runs code). Blobs are
checked against their digest when loaded, and the signed file names every digest.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import secrets
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError

MAGIC = b"fedcredit-checkpoint\n"
FORMAT = 2  # 1 was a whole-agent pickle (agent-<run>.pkl)
LARGE_BYTES = 32 * 1024  # objects at least this large are stored once as blobs
SECRET_FILE = "node.secret"


def node_secret(work: Path) -> bytes:
    """The node's checkpoint and channel secret (created once, mode 0600, in its work directory)."""
    work = Path(work)
    path = work / SECRET_FILE
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this node made it first
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_hex(32).encode())
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise FedCreditError(f"{path} does not hold a node secret (expected 64 hex digits)")
    return secret


@dataclass
class Checkpoint:
    """What a node needs to resume a run: its agent, the last delivery completed, and that delivery's answer."""

    agent: object
    seq: int
    replies: list[bytes] = field(default_factory=list)
    head: dict | None = None


@dataclass
class SaveStats:
    """What one save wrote (for the benchmark): the signed state file, the delivery's replies (always a blob
    of their own: they are the message that goes out anyway), other new blobs, and how long it took."""

    state_bytes: int
    reply_bytes: int
    blob_bytes: int
    blobs_written: int
    seconds: float


def _size(obj) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes if obj.dtype != object else obj.size * 64
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    kind = type(obj).__module__.split(".", 1)[0], type(obj).__name__
    if kind in (("pandas", "DataFrame"), ("pandas", "Series")):
        return int(obj.memory_usage(deep=False).sum()) if kind[1] == "DataFrame" else int(obj.memory_usage(deep=False))
    if kind[1] == "EncryptedVector":
        return len(getattr(obj, "data", ())) * 256
    return 0


def _freeze(obj) -> bool:
    """Whether ``obj`` may be referenced by identity from now on (its blob stays its content).

    Numpy arrays are made read-only, with every array they view: a protocol that changed
    one in place would fail loudly instead of leaving a stale blob behind. Data frames and
    encrypted vectors are not changed in place by fedcredit's protocols.
    """
    if not isinstance(obj, np.ndarray):
        return True
    arr = obj
    while isinstance(arr, np.ndarray):
        arr.flags.writeable = False
        arr = arr.base
    return arr is None or isinstance(arr, bytes)


class _HashingSink:
    """A binary file that also hashes and counts what is written to it (pickle writes buffers, too)."""

    def __init__(self, fh):
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += view.nbytes
        return self.fh.write(view)


class CheckpointStore:
    """One run's checkpoints in ``folder`` (``checkpoint`` plus ``blobs/``), signed with the node's secret."""

    def __init__(self, folder: Path, secret: bytes):
        self.folder = Path(folder)
        self.secret = secret
        self.blobs = self.folder / "blobs"
        self._stored: dict[int, tuple[object, str]] = {}  # id(obj) -> (obj, digest): written already
        self.last: SaveStats | None = None

    @property
    def path(self) -> Path:
        return self.folder / "checkpoint"

    def exists(self) -> bool:
        return self.path.exists()

    def generation(self) -> bytes | None:
        """The signature of the checkpoint on disk (changes with every save): tells a cached agent it is stale."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(MAGIC) + 4 + 32)
        except FileNotFoundError:
            return None
        return head[len(MAGIC) + 4:]

    # -- saving ---------------------------------------------------------------
    def save(self, cp: Checkpoint) -> SaveStats:
        started = time.perf_counter()
        self.blobs.mkdir(parents=True, exist_ok=True, mode=0o700)
        referenced: dict[int, tuple[object, str]] = {}
        written = [0, 0]
        replies, returned = cp.replies, set()  # every digest this checkpoint names: never pruned

        def persistent_id(obj):
            digest = _persistent_id(obj)
            if digest is not None:
                returned.add(digest)
            return digest

        def _persistent_id(obj):
            if obj is cp or (obj is not replies and _size(obj) < LARGE_BYTES):
                return None
            known = referenced.get(id(obj)) or self._stored.get(id(obj))
            if known is not None and known[0] is obj:
                referenced[id(obj)] = known
                return known[1]
            # frozen before it is pickled: numpy pickles a read-only array differently, and the digest
            # must not change between this save and the next
            cacheable = obj is not replies and _freeze(obj)
            digest, size, new = self._write_blob(obj)
            if new and obj is not replies:
                written[0] += 1
                written[1] += size
            if cacheable:  # the next delivery has new replies
                referenced[id(obj)] = (obj, digest)
            return digest

        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=5)
        pickler.persistent_id = persistent_id
        pickler.dump(cp)
        body = buf.getvalue()
        atomic_write_bytes(self.path, self._sign(body), mode=0o600)
        self._stored = referenced
        self._prune(returned)
        self.last = SaveStats(len(body), sum(map(len, replies)), written[1], written[0], time.perf_counter() - started)
        return self.last

    def _write_blob(self, obj) -> tuple[str, int, bool]:
        """Pickle ``obj`` straight into a temporary file while hashing it (no copy of a large object in memory),
        then keep it as ``blobs/<sha256>`` unless that blob exists. Returns (digest, bytes, whether it is new)."""
        fd, tmp = tempfile.mkstemp(prefix=".blob.", suffix=".tmp", dir=self.blobs)
        try:
            with os.fdopen(fd, "wb") as fh:
                sink = _HashingSink(fh)
                pickle.dump(obj, sink, protocol=5)  # the same bytes as pickle.dumps
                fh.flush()
                os.fsync(fh.fileno())
            digest = sink.hash.hexdigest()
            path = self.blobs / digest
            if path.exists():
                os.unlink(tmp)
                return digest, sink.size, False
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            return digest, sink.size, True
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _prune(self, keep: set[str]) -> None:
        """Blobs no longer referenced (an earlier tree's gradients, a crashed attempt's objects) go."""
        for path in self.blobs.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def _sign(self, body: bytes) -> bytes:
        header = MAGIC + struct.pack(">I", FORMAT)
        return header + hmac.new(self.secret, header + body, hashlib.sha256).digest() + body

    # -- loading --------------------------------------------------------------
    def load(self) -> Checkpoint | None:
        """The checkpoint on disk, or None; refuses one this node did not write, or damaged, or of another format."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        body = self._verify(raw)
        loaded: dict[int, tuple[object, str]] = {}
        by_digest: dict[str, object] = {}

        def persistent_load(digest):
            digest = str(digest)
            if digest not in by_digest:  # an object referenced twice is one object again
                obj = by_digest[digest] = pickle.loads(self._blob(digest))
                if _freeze(obj):
                    loaded[id(obj)] = (obj, digest)
            return by_digest[digest]

        unpickler = pickle.Unpickler(io.BytesIO(body))
        unpickler.persistent_load = persistent_load
        try:
            cp = unpickler.load()
        except FedCreditError:
            raise
        except Exception as exc:  # signed by this node yet unreadable: written by an incompatible fedcredit
            raise FedCreditError(f"node checkpoint {self.path} cannot be read by this fedcredit release "
                                 f"({type(exc).__name__}: {exc}); the node cannot resume this run") from None
        if not isinstance(cp, Checkpoint):
            raise FedCreditError(f"node checkpoint {self.path} does not hold a fedcredit checkpoint")
        self._stored = loaded
        return cp

    def _verify(self, raw: bytes) -> bytes:
        cut = len(MAGIC) + 4
        if not raw.startswith(MAGIC) or len(raw) < cut + 32:
            raise FedCreditError(f"node checkpoint {self.path} is unreadable (not a fedcredit checkpoint); "
                                 "the node cannot resume this run")
        (version,) = struct.unpack(">I", raw[len(MAGIC):cut])
        if version != FORMAT:
            raise FedCreditError(f"node checkpoint {self.path} has format {version}, this node reads format {FORMAT}; "
                                 "restart the run")
        mac, body = raw[cut:cut + 32], raw[cut + 32:]
        if not hmac.compare_digest(mac, hmac.new(self.secret, raw[:cut] + body, hashlib.sha256).digest()):
            raise FedCreditError(f"node checkpoint {self.path} was not written by this node (its signature does not "
                                 "match the node's secret); it is not loaded")
        return body

    def _blob(self, digest: str) -> bytes:
        path = self.blobs / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FedCreditError(f"node checkpoint {self.path} refers to {path}, which is missing; "
                                 "the node cannot resume this run") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise FedCreditError(f"checkpoint blob {path} is damaged (its content does not match its name)")
        return data

    def delete(self) -> None:
        """The run is over at this node (finished or aborted): its state goes."""
        self.path.unlink(missing_ok=True)
        if self.blobs.exists():
            for path in self.blobs.iterdir():
                path.unlink(missing_ok=True)
            self.blobs.rmdir()
        for leftover in self.folder.glob("*"):
            if leftover.name.startswith(".") or leftover.name.endswith(".lock"):
                leftover.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass
