"""Protection classes: how a message's payload is protected, derived from the message alone.

The class is computed from the wire message (never from what a party claims), and
``ALLOWED`` says which classes each message kind may have. An auditor's verifier
rejects any record whose class is not allowed for its kind — e.g. an unsealed
``lr.labels`` or a plaintext payload where ciphertexts are expected.

Classes (see docs/audit.md):

- ``x25519-aesgcm``: a sealed node-to-node envelope (X25519 + HKDF + AES-GCM).
- ``paillier-<bits>``: every payload part is Paillier ciphertexts under a ``<bits>``-bit key
  (``mock-paillier-<bits>`` for the plaintext test backend, never allowed by default).
- ``paillier-<bits>+masked``: Paillier ciphertexts plus decrypted, statistically masked values.
- ``masked``: only masked values (pair-masked shares ``lr.share``, decrypted masked values ``lr.unmask``).
- ``ecdh-blinded``: X25519-blinded PSI points (32 bytes each).
- ``public-metadata``: no payload; the header's scalars only.
- ``published``: data the job publishes anyway (scores, reasons, limits, capacity caps, report;
  a query's verdicts, reason codes, caps and limits, which its signed answer carries).
- ``queried-ids``: the enterprise IDs of an online query, in the clear to every node of the
  serving run by design (docs/leakage.md: a query tells each node whom a bank looks at).
- ``plaintext``: anything else — never allowed.
"""

from __future__ import annotations

import json

from fedcredit.common.wire import Message

SEALED = "x25519-aesgcm"
MASKED = "masked"
BLINDED = "ecdh-blinded"
PUBLIC = "public-metadata"
PUBLISHED = "published"
QUERIED_IDS = "queried-ids"
PLAINTEXT = "plaintext"
PAILLIER_BITS = (2048, 3072, 4096)  # key sizes allowed by default (verify_audit(min_key_bits=...) widens it)

POINT_BYTES = 32
PUBLISHED_KINDS = frozenset({"job.scores", "job.reasons", "job.limits", "job.capacity", "job.report",
                             "query.reasons", "query.capacity", "query.limits"})
QUERIED_KINDS = frozenset({"query.ask"})
BLINDED_KINDS = frozenset({"psi.full", "psi.hosts", "psi.final"})


def paillier(bits: int, masked: bool = False, backend: str = "paillier") -> str:
    name = f"paillier-{int(bits)}" if backend == "paillier" else f"{backend}-paillier-{int(bits)}"
    return name + ("+masked" if masked else "")


def _paillier_classes(bits=PAILLIER_BITS, masked: bool = False) -> set[str]:
    return {paillier(b, masked) for b in bits}


def allowed_for(kind: str, min_key_bits: int = 2048, allow_mock: bool = False) -> set[str]:
    """The protection classes allowed for ``kind``; paillier classes for key sizes ≥ ``min_key_bits``."""
    bits = sorted({b for b in (1024, 1536, *PAILLIER_BITS) if b >= min_key_bits})
    table = {
        # PSI
        "psi.start": {PUBLIC},
        "psi.blind": {SEALED},
        "psi.full": {BLINDED, PUBLIC},   # the bank's acknowledgement is empty
        "psi.hosts": {BLINDED, PUBLIC},  # empty when nothing is common
        "psi.final": {BLINDED, PUBLIC},
        "psi.done": {PUBLIC},
        # job control
        **{k: {PUBLIC} for k in ("job.hello", "job.info", "job.peers", "job.split", "job.load", "job.prepared",
                                 "job.publish", "job.reported", "job.quality", "job.figures", "job.abort")},
        "job.report": {PUBLIC, PUBLISHED},
        **{k: {PUBLISHED} for k in ("job.scores", "job.reasons", "job.limits", "job.capacity")},
        # vertical LR
        **{k: {PUBLIC} for k in ("lr.setup", "lr.ready", "lr.eval", "lr.gram", "lr.finish", "lr.done", "lr.score",
                                 "lr.scored")},
        **{k: {SEALED} for k in ("lr.labels", "lr.pair")},
        # pair-masked 64-bit words; a host's part of yᵀz is a Paillier ciphertext (of a masked word)
        "lr.share": {MASKED} | _paillier_classes(bits, masked=True),
        "lr.score_share": {MASKED},
        # [[σ(z_π)]]; to the bank also its masked validation scores (none with validation = 0)
        "lr.sigmoid": _paillier_classes(bits, masked=True) | _paillier_classes(bits),
        "lr.gradient": _paillier_classes(bits),
        "lr.unmask": {MASKED},
        "lr.score_unmask": {MASKED},
        # vertical SecureBoost: node-to-node traffic is sealed, the rest carries no payload
        **{k: {PUBLIC} for k in ("sb.setup", "sb.ready", "sb.tree", "sb.tree_done", "sb.predict", "sb.scored")},
        **{k: {SEALED} for k in ("sb.gradients", "sb.histograms", "sb.split", "sb.left", "sb.nodes", "sb.route",
                                 "sb.routed", "sb.prune", "sb.pruned", "sb.seed", "sb.share")},
        # WoE/IV binning: labels, label sums, bin decisions and selections travel sealed bank <-> host
        "woe.start": {PUBLIC},
        **{k: {SEALED} for k in ("woe.labels", "woe.sums", "woe.bins", "woe.selected")},
        # online queries: IDs in the clear to every node, pair-masked partial scores, published answers
        "query.pair": {SEALED},
        "query.ask": {QUERIED_IDS},
        "query.share": {MASKED},
        "query.refused": {PUBLIC},
        **{k: {PUBLISHED} for k in ("query.reasons", "query.capacity", "query.limits")},
    }
    out = set(table.get(kind, set()))
    if allow_mock:
        out |= {c.replace("paillier-", "mock-paillier-", 1) for c in out if c.startswith("paillier-")}
    return out


_KINDS = (
    "psi.start", "psi.blind", "psi.full", "psi.hosts", "psi.final", "psi.done",
    "job.hello", "job.info", "job.peers", "job.split", "job.load", "job.prepared", "job.publish", "job.reported",
    "job.quality", "job.figures", "job.abort", "job.report", "job.scores", "job.reasons", "job.limits", "job.capacity",
    "lr.setup", "lr.ready", "lr.eval", "lr.gram", "lr.finish", "lr.done", "lr.score", "lr.scored",
    "lr.labels", "lr.pair", "lr.share", "lr.score_share", "lr.sigmoid", "lr.gradient", "lr.unmask", "lr.score_unmask",
    "sb.setup", "sb.ready", "sb.tree", "sb.tree_done", "sb.predict", "sb.scored",
    "sb.gradients", "sb.histograms", "sb.split", "sb.left", "sb.nodes", "sb.route", "sb.routed",
    "sb.prune", "sb.pruned", "sb.seed", "sb.share",
    "woe.start", "woe.labels", "woe.sums", "woe.bins", "woe.selected",
    "query.pair", "query.ask", "query.share", "query.refused", "query.reasons", "query.capacity", "query.limits",
)

#: message kind -> allowed protection classes (default policy: Paillier keys of 2048 bits or more, no mock backend)
ALLOWED: dict[str, set[str]] = {k: allowed_for(k) for k in _KINDS}


def _parts(msg: Message):
    """``[(size, meta)]`` of a bundled payload, or None when the payload is not a well-formed bundle."""
    index = msg.meta.get("parts")
    if not isinstance(index, list) or not index:
        return None
    out, total = [], 0
    for p in index:
        if not isinstance(p, dict) or set(p) != {"name", "size", "meta"}:
            return None
        size = p["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        out.append((size, p["meta"] if isinstance(p["meta"], dict) else {}))
        total += size
    return out if total == len(msg.payload) else None


def _only_ids(payload: bytes) -> bool:
    """A query's payload holds nothing but the queried IDs: ``{"ids": [str, ...]}``."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and set(doc) == {"ids"} and isinstance(doc["ids"], list) \
        and all(isinstance(i, str) for i in doc["ids"])


def protection_class(msg: Message, key_bits: int | None, *, key_fingerprint: str | None = None,
                     backend: str = "paillier") -> tuple[str, int]:
    """``(class, number of ciphertexts)`` of ``msg``, derived from its structure.

    ``key_bits`` is the run's Paillier key size (known from ``lr.setup``); without it a
    Paillier part cannot be told from opaque bytes and the class is ``plaintext``. When
    ``key_fingerprint`` is given, ciphertexts that name another key are ``plaintext`` too
    (not under the run's key, so not protected as the auditor expects).
    """
    if msg.sealed:
        return SEALED, 0
    if not msg.payload:
        return PUBLIC, 0
    if msg.kind in PUBLISHED_KINDS:
        return PUBLISHED, 0
    if msg.kind in QUERIED_KINDS:
        return (QUERIED_IDS, 0) if _only_ids(msg.payload) else (PLAINTEXT, 0)
    if msg.kind in BLINDED_KINDS:
        return (BLINDED, 0) if len(msg.payload) % POINT_BYTES == 0 else (PLAINTEXT, 0)
    parts = _parts(msg)
    if parts is None:
        return PLAINTEXT, 0
    ct_bytes = (2 * key_bits + 7) // 8 if key_bits else None
    n_paillier = n_masked = ciphertexts = 0
    for size, meta in parts:
        if size == 0:
            continue
        key = meta.get("key")
        if isinstance(key, str) and ct_bytes and size % ct_bytes == 0 and key_fingerprint in (None, key):
            n_paillier += 1
            ciphertexts += size // ct_bytes
        elif set(meta) == {"width"} and isinstance(meta["width"], int) and meta["width"] > 0 \
                and size % meta["width"] == 0:
            n_masked += 1
        else:
            return PLAINTEXT, 0
    if n_paillier:
        return paillier(key_bits, masked=bool(n_masked), backend=backend), ciphertexts
    if n_masked:
        return MASKED, 0
    return PLAINTEXT, 0
