"""Vertical (hetero) logistic regression: bank with labels, any number of hosts, coordinator with the key.

Exact logistic loss, not a Taylor approximation. Per evaluation of the model at a
trial point (5 sequential message rounds):

1. ``lr.eval``: every party moves to the trial point; each host sends the bank, sealed,
   its partial predictions ``u_j`` packed and encrypted under the coordinator's key —
   the training rows in a fresh secret permutation ``π`` shared by bank and hosts,
   the validation rows in the agreed order — and ``[[yᵀu_j]]`` (against labels the
   bank encrypted once). Every party reports ``‖w_p‖²`` for the L2 term.
2. ``lr.scores``: the bank adds its own part: ``[[z_π]]``, ``[[yᵀz]]``, and masked
   validation scores ``[[z_val + m]]``, to the coordinator.
3. ``lr.sigmoid``: the coordinator decrypts ``z_π`` — scores it cannot link to any row —
   computes the loss and ``σ(z_π)``, and returns ``[[σ(z_π)]]``; the bank undoes ``π`` and
   forms the residual ``[[d]] = [[σ(z)]] − y``, sends it sealed to the hosts, and sends
   its own masked gradient ``[[X_bᵀd + r]]`` (plus validation AUC/KS) to the coordinator.
4. ``lr.gradient``: hosts send masked ``[[X_jᵀd + r_j]]`` (grouped sums over bins).
5. ``lr.unmask``: the coordinator decrypts the masked gradients and returns them; each
   party removes its mask and reports its block of the L-BFGS Gram matrix (see
   ``lbfgs.py``); the coordinator runs the line search and picks the next direction.

Parameters and gradients stay with their owners, in coordinates preconditioned by
each party's own diagonal curvature (Jacobi). What every message reveals is in
docs/leakage.md.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

from fedcredit.crypto import EncryptedVector, PackedVector, Packer, PaillierPublicKey, generate_keypair
from fedcredit.crypto import masking
from fedcredit.protocols.design import Design
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.lbfgs import LbfgsBlock, directional_derivative, two_loop
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.scoring import metrics

BANK = "bank"
SETUP, LABELS, READY, EVAL, NORM, PARTIAL, SCORES, SIGMOID, RESIDUAL, GRADIENT, UNMASK, GRAM, FINISH, DONE = (
    "lr.setup", "lr.labels", "lr.ready", "lr.eval", "lr.norm", "lr.partial", "lr.scores", "lr.sigmoid",
    "lr.residual", "lr.gradient", "lr.unmask", "lr.gram", "lr.finish", "lr.done",
)
SCORE, SCORE_PARTIAL, SCORE_MASKED, SCORE_UNMASK, SCORED = (
    "lr.score", "lr.score_partial", "lr.score_masked", "lr.score_unmask", "lr.scored",
)
KINDS = (SETUP, LABELS, READY, EVAL, NORM, PARTIAL, SCORES, SIGMOID, RESIDUAL, GRADIENT, UNMASK, GRAM, FINISH, DONE,
         SCORE, SCORE_PARTIAL, SCORE_MASKED, SCORE_UNMASK, SCORED)

Z_SLOT_BITS = 48  # packed partial predictions: |z|·2^scale < 2^46 with room for the sum over parties


@dataclass(frozen=True)
class LrConfig:
    """Model and optimizer settings shared by every party (sent in ``lr.setup``)."""

    l2: float = 1e-3
    max_iter: int = 30
    gtol: float = 1e-4  # stop when ‖g‖ falls below gtol·‖g₀‖ (preconditioned norm)
    ftol: float = 1e-4  # or when an accepted step lowers the loss by less than ftol (relative)
    memory: int = 6
    scale_bits: int = 16
    key_bits: int = 2048
    backend: str = "paillier"
    armijo: float = 1e-4
    max_halvings: int = 8

    def __post_init__(self) -> None:
        checks = [(self.l2 > 0, "l2 must be > 0"), (self.max_iter >= 1, "max_iter must be ≥ 1"),
                  (0 < self.gtol < 1, "gtol must be in (0, 1)"), (self.memory >= 1, "memory must be ≥ 1"),
                  (8 <= self.scale_bits <= 24, "scale_bits must be in [8, 24]"),
                  (self.key_bits >= 1024, "key_bits must be ≥ 1024")]
        for ok, text in checks:
            if not ok:
                raise ProtocolError(f"invalid LR setting: {text}")


@dataclass
class PartyData:
    """A party's prepared rows: designs for training and for all aligned rows, and (bank) labels.

    For scoring with a saved model, ``train`` is None and the party starts from its weights.
    """

    train: Design | None
    every: Design  # all aligned rows in the agreed order (scoring)
    train_rows: np.ndarray  # indices into the aligned rows
    val_rows: np.ndarray
    labels: np.ndarray | None = None  # bank only: labels of all aligned rows


def _permutation(seed: bytes, evaluation: int, n: int) -> np.ndarray:
    """The evaluation's secret row permutation, derived by bank and hosts from a shared seed."""
    digest = hashlib.sha256(seed + evaluation.to_bytes(8, "big")).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint64)).permutation(n)


def _ints(values: np.ndarray, scale_bits: int) -> list[int]:
    return np.rint(np.ldexp(np.asarray(values, dtype=float), scale_bits)).astype(np.int64).tolist()


class LrParty(ProtocolParty):
    """A data holder in vertical LR (the bank, or a host); driven by ``handle``."""

    KINDS, SETUP = KINDS, SETUP

    def __init__(self, role: str, data: PartyData, pool=None, weights: np.ndarray | None = None):
        if data.train is not None and (role == BANK) != (data.labels is not None):
            raise ProtocolError(f"{role}: only the bank holds labels, and it needs them to train")
        if data.train is None and (weights is None or len(weights) != data.every.n_params):
            raise ProtocolError(f"{role}: scoring without training needs this party's saved weights "
                                f"({data.every.n_params} parameters)")
        self.role, self.data, self.pool = role, data, pool
        self.key: PaillierPublicKey | None = None
        self.cfg: LrConfig | None = None
        self.run_id = ""
        self.hosts: list[str] = []
        self._seed = b""
        self._enc_y: EncryptedVector | None = None
        self._inbox: dict[str, Message] = {}
        self._masks: list[int] = []
        self._val_masks: list[int] = []
        self.weights: np.ndarray | None = weights  # the model: this party's parameters in its own design columns
        self.history: list[dict] = []
        self.scores: np.ndarray | None = None
        self.test_metrics: dict | None = None

    @property
    def has_model(self) -> bool:
        """Weights to score with (trained, or loaded from a saved part)."""
        return self.weights is not None

    # -- message dispatch -------------------------------------------------
    def _is_set_up(self) -> bool:
        return self.key is not None

    def _handlers(self):
        return {
            SETUP: self._setup, LABELS: self._labels, EVAL: self._eval, PARTIAL: self._partial,
            SIGMOID: self._sigmoid, RESIDUAL: self._residual, UNMASK: self._unmask, FINISH: self._finish,
            SCORE: self._score, SCORE_PARTIAL: self._partial, SCORE_UNMASK: self._score_unmask,
        }

    # -- setup --------------------------------------------------------------
    def _setup(self, msg: Message) -> list[Message]:
        expect(msg, SETUP, sender=COORDINATOR)
        if self.key is not None:
            raise ProtocolError(f"{msg.describe()}: {self.role} is already set up")
        try:
            self.cfg = LrConfig(**msg.meta["config"])
            self.key = PaillierPublicKey(int(msg.meta["key_n"], 16), backend=self.cfg.backend)
            parties = list(msg.meta["parties"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed setup ({exc})") from None
        if parties[0] != BANK or self.role not in parties:
            raise ProtocolError(f"{msg.describe()}: parties must start with the bank and include {self.role}")
        self.run_id, self.hosts = msg.run_id, parties[1:]
        d = self.data.train
        if d is None:  # scoring with a saved model: nothing to train
            return [self._reply(READY, COORDINATOR, msg.step + 1, {"n_params": len(self.weights), "train_rows": 0})]
        reg = np.full(d.n_params, self.cfg.l2)
        if d.intercept:
            reg[-1] = 0.0
        self._precond = np.sqrt(d.curvature() / 4.0 + reg)  # Jacobi: the Hessian's diagonal is at most this
        w0 = np.zeros(d.n_params)
        out = [self._reply(READY, COORDINATOR, msg.step + 1, {"n_params": d.n_params, "train_rows": len(self.data.train_rows)})]
        if self.role == BANK:
            y = self.data.labels[self.data.train_rows]
            rate = min(max(float(y.mean()), 1e-4), 1 - 1e-4)
            w0[-1] = math.log(rate / (1 - rate))
            self._seed = np.random.default_rng().bytes(32)
            self._enc_y = EncryptedVector.encrypt_ints(self.key, y.astype(int).tolist(), 0, pool=self.pool)
            payload, meta = bundle({"seed": (self._seed, {}), "y": (self._enc_y.to_bytes(), self._enc_y.meta())})
            out += [self._reply(LABELS, h, msg.step + 1, meta, payload) for h in self.hosts]
        self._base_v = w0 * self._precond
        self._trial_v = self._base_v.copy()
        self.block = LbfgsBlock(self.cfg.memory)
        self.weights = w0
        return out

    def _labels(self, msg: Message) -> list[Message]:
        expect(msg, LABELS, sender=BANK)
        if self.role == BANK or self._enc_y is not None:
            raise ProtocolError(f"{msg.describe()}: labels are sent once, by the bank, to hosts")
        parts = unbundle(msg, ["seed", "y"])
        self._seed = parts["seed"][0]
        if len(self._seed) != 32:
            raise ProtocolError(f"{msg.describe()}: permutation seed must be 32 bytes")
        self._enc_y = EncryptedVector.from_message(self.key, *parts["y"])
        if len(self._enc_y) != len(self.data.train_rows):
            raise ProtocolError(f"{msg.describe()}: {len(self._enc_y)} encrypted labels for {len(self.data.train_rows)} training rows")
        return []

    # -- one evaluation -----------------------------------------------------
    def _w(self, v: np.ndarray) -> np.ndarray:
        return v / self._precond

    def _eval(self, msg: Message) -> list[Message]:
        expect(msg, EVAL, sender=COORDINATOR)
        meta = msg.meta
        if meta.get("direction") is not None:
            self.block.set_direction(meta["direction"])
        alpha = float(meta.get("alpha", 0.0))
        self._trial_v = self._base_v + (alpha * self.block.direction if self.block.direction is not None else 0.0)
        w = self._w(self._trial_v)
        self._evaluation = int(meta["evaluation"])
        norm = float(w[: self.data.train.width] @ w[: self.data.train.width])
        out = [self._reply(NORM, COORDINATOR, msg.step + 1, {"sq": norm})]
        if self.role != BANK:
            out.append(self._partials(w, msg.step + 1))
        elif not self.hosts:  # the bank alone: nothing to wait for
            out += self._bank_scores({}, msg.step + 1)
        return out

    def _u(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Partial predictions on training rows (permuted) and validation rows (agreed order)."""
        u_all = self.data.every.forward(w)
        perm = _permutation(self._seed, self._evaluation, len(self.data.train_rows))
        return u_all[self.data.train_rows][perm], u_all[self.data.val_rows]

    def _partials(self, w: np.ndarray, step: int) -> Message:
        """A host's encrypted partial predictions for the bank (training permuted, validation in order)."""
        scale = self.cfg.scale_bits
        u_train, u_val = self._u(w)
        z = Packer(self.key, Z_SLOT_BITS).encrypt(u_train, scale, pool=self.pool)
        val = Packer(self.key, MASKED_SLOT_BITS).encrypt(u_val, scale, pool=self.pool)
        u_plain = self.data.every.forward(w)[self.data.train_rows]
        yu = self._enc_y.dot(np.array(_ints(u_plain, scale))[:, None], scale_bits=scale, pool=self.pool)
        payload, meta = bundle({"z": _part(z), "val": _part(val), "yu": _part(yu)})
        return self._reply(PARTIAL, BANK, step, meta, payload)

    def _collect(self, msg: Message) -> dict[str, Message] | None:
        """Buffer a host's message at the bank; all hosts' messages once the last one arrived."""
        if self.role != BANK or msg.sender not in self.hosts:
            raise ProtocolError(f"{msg.describe()}: only the bank collects hosts' partial predictions")
        if msg.sender in self._inbox:
            raise ProtocolError(f"{msg.describe()}: duplicate message from {msg.sender}")
        self._inbox[msg.sender] = msg
        if len(self._inbox) < len(self.hosts):
            return None
        inbox, self._inbox = self._inbox, {}
        return inbox

    def _partial(self, msg: Message) -> list[Message]:
        inbox = self._collect(msg)
        if inbox is None:
            return []
        if msg.kind == SCORE_PARTIAL:
            return self._score_masked(inbox, msg.step + 1)
        return self._bank_scores(inbox, msg.step + 1)

    def _bank_scores(self, inbox: dict[str, Message], step: int) -> list[Message]:
        scale = self.cfg.scale_bits
        w = self._w(self._trial_v)
        u_train, u_val = self._u(w)
        y = self.data.labels[self.data.train_rows]
        z = Packer(self.key, Z_SLOT_BITS).encrypt(u_train, scale, pool=self.pool)
        yz = EncryptedVector.encrypt(self.key, [float(y @ self.data.every.forward(w)[self.data.train_rows])], scale)
        hosts_val = []
        for m in inbox.values():
            parts = unbundle(m, ["z", "val", "yu"])
            z = z + _packed(self.key, parts["z"], len(u_train), m)
            hosts_val.append(_packed(self.key, parts["val"], len(u_val), m))
            yz = yz + _vector(self.key, parts["yu"], 1, m)
        val = self._masked_scores(u_val, hosts_val)
        payload, meta = bundle({"z": _part(z), "yz": _part(yz), "val": _part(val)})
        return [self._reply(SCORES, COORDINATOR, step, meta, payload)]

    def _masked_scores(self, u_own: np.ndarray, hosts: list[PackedVector]) -> PackedVector:
        """[[z + m]] for rows in the agreed order: the coordinator decrypts, only the bank can unmask."""
        ints = _ints(u_own, self.cfg.scale_bits)
        bound = sum(h.slot_bound for h in hosts) + max((abs(v) for v in ints), default=0)
        self._val_masks = masking.random_masks(len(ints), bound)
        packer = Packer(self.key, MASKED_SLOT_BITS)
        total = packer.encrypt_ints([a + b for a, b in zip(ints, self._val_masks)], self.cfg.scale_bits, pool=self.pool)
        for h in hosts:
            total = total + h
        return total

    def _unmask_scores(self, part: tuple[bytes, dict], count: int, msg: Message) -> np.ndarray:
        masked = _masked_ints(part, count, msg)
        return np.array([m - r for m, r in zip(masked, self._val_masks)], dtype=float) / (1 << self.cfg.scale_bits)

    def _sigmoid(self, msg: Message) -> list[Message]:
        """Bank: residual [[d]] = [[σ(z)]] − y, to the hosts and into its own gradient."""
        expect(msg, SIGMOID, sender=COORDINATOR)
        if self.role != BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank receives σ(z)")
        parts = unbundle(msg, ["sigma", "val"])
        n = len(self.data.train_rows)
        sigma_perm = _vector(self.key, parts["sigma"], n, msg)
        perm = _permutation(self._seed, self._evaluation, n)
        order = np.empty(n, dtype=np.int64)
        order[perm] = np.arange(n)
        sigma = sigma_perm.take(order)
        d = sigma.add_plain(-self.data.labels[self.data.train_rows].astype(float))
        z_val = self._unmask_scores(parts["val"], len(self.data.val_rows), msg)
        progress = {"loss": msg.meta.get("loss")}
        y_val = self.data.labels[self.data.val_rows]
        if len(np.unique(y_val)) == 2:
            progress.update(val_auc=metrics.auc(y_val, z_val), val_ks=metrics.ks(y_val, z_val))
        self.history.append(progress)
        out = [self._reply(RESIDUAL, h, msg.step + 1, *_swap(bundle({"d": _part(d)}))) for h in self.hosts]
        out.append(self._gradient(d, msg.step + 1, progress))
        return out

    def _residual(self, msg: Message) -> list[Message]:
        expect(msg, RESIDUAL, sender=BANK)
        d = _vector(self.key, unbundle(msg, ["d"])["d"], len(self.data.train_rows), msg)
        return [self._gradient(d, msg.step + 1, {})]

    def _gradient(self, d: EncryptedVector, step: int, meta: dict) -> Message:
        """Masked, packed [[X_pᵀ d + r]] for the coordinator to decrypt."""
        g = self.data.train.backward_encrypted(d, pool=self.pool)
        self._masks = masking.random_masks(len(g), g.bound)
        packed = Packer(self.key, MASKED_SLOT_BITS).pack(g.add_plain_ints(self._masks), pool=self.pool)
        self._gradient_scale = g.scale_bits
        payload, bmeta = bundle({"g": _part(packed)})
        return self._reply(GRADIENT, COORDINATOR, step, {**bmeta, "progress": meta}, payload)

    def _unmask(self, msg: Message) -> list[Message]:
        """Remove the mask, take the step if accepted, report this block of the Gram matrix."""
        expect(msg, UNMASK, sender=COORDINATOR)
        masked = _masked_ints(unbundle(msg, ["g"])["g"], self.data.train.n_params, msg)
        raw = np.array([m - r for m, r in zip(masked, self._masks)], dtype=float) / (1 << self._gradient_scale)
        w = self._w(self._trial_v)
        grad_w = raw / len(self.data.train_rows)
        reg = w * self.cfg.l2
        if self.data.train.intercept:
            reg[-1] = 0.0
        grad_v = (grad_w + reg) / self._precond
        if not msg.meta.get("accepted"):
            return [self._reply(GRAM, COORDINATOR, msg.step + 1, {"gram": None})]
        self.block.accept(self._trial_v - self._base_v, grad_v)
        self._base_v = self._trial_v.copy()
        self.weights = w
        return [self._reply(GRAM, COORDINATOR, msg.step + 1, {"gram": self.block.gram().tolist()})]

    def _finish(self, msg: Message) -> list[Message]:
        expect(msg, FINISH, sender=COORDINATOR)
        self.weights = self._w(self._base_v)
        return [self._reply(DONE, COORDINATOR, msg.step + 1, {"n_params": len(self.weights)})]

    # -- scoring of every aligned row -------------------------------------------
    def _score(self, msg: Message) -> list[Message]:
        expect(msg, SCORE, sender=COORDINATOR)
        u = self.data.every.forward(self.weights)
        if self.role == BANK:
            self._own_scores = u
            return [] if self.hosts else self._score_masked({}, msg.step + 1)
        packed = Packer(self.key, MASKED_SLOT_BITS).encrypt(u, self.cfg.scale_bits, pool=self.pool)
        payload, meta = bundle({"u": _part(packed)})
        return [self._reply(SCORE_PARTIAL, BANK, msg.step + 1, meta, payload)]

    def _score_masked(self, inbox: dict[str, Message], step: int) -> list[Message]:
        n = len(self._own_scores)
        hosts = [_packed(self.key, unbundle(m, ["u"])["u"], n, m) for m in inbox.values()]
        total = self._masked_scores(self._own_scores, hosts)
        payload, meta = bundle({"z": _part(total)})
        return [self._reply(SCORE_MASKED, COORDINATOR, step, meta, payload)]

    def _score_unmask(self, msg: Message) -> list[Message]:
        expect(msg, SCORE_UNMASK, sender=COORDINATOR)
        if self.role != BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank learns scores")
        z = self._unmask_scores(unbundle(msg, ["z"])["z"], len(self._own_scores), msg)
        self.scores = 1.0 / (1.0 + np.exp(-z))
        return [self._reply(SCORED, COORDINATOR, msg.step + 1, {"rows": len(z)})]


MASKED_SLOT_BITS = 104  # masked values: |value| < 2^56 plus a 2^40-times larger mask, signed


def _part(vector) -> tuple[bytes, dict]:
    return vector.to_bytes(), vector.meta()


def _masked_ints(part: tuple[bytes, dict], count: int, msg: Message) -> list[int]:
    """Decrypted masked integers as the coordinator returns them (fixed width, signed)."""
    data, meta = part
    try:
        return masking.ints_from_bytes(data, int(meta["width"]), count)
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed masked values ({exc})") from None


def _swap(pair: tuple[bytes, dict]) -> tuple[dict, bytes]:
    return pair[1], pair[0]


def _vector(key, part: tuple[bytes, dict], count: int, msg: Message) -> EncryptedVector:
    try:
        vec = EncryptedVector.from_message(key, part[0], part[1])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed ciphertexts ({exc})") from None
    if len(vec) != count:
        raise ProtocolError(f"{msg.describe()}: {len(vec)} ciphertexts, expected {count}")
    return vec


def _packed(key, part: tuple[bytes, dict], count: int, msg: Message) -> PackedVector:
    data, meta = part
    try:
        vec = PackedVector.from_bytes(key, data, scale_bits=int(meta["scale_bits"]), slot_bits=int(meta["slot_bits"]),
                                      count=int(meta["count"]), slot_bound=int(meta["slot_bound"], 16), shape=meta["shape"])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed packed ciphertexts ({exc})") from None
    if meta.get("key") != key.fingerprint or vec.count != count:
        raise ProtocolError(f"{msg.describe()}: packed vector of {vec.count} values under key {meta.get('key')}, expected {count}")
    return vec


class LrCoordinator(ScriptedCoordinator):
    """The coordinator's side: holds the Paillier key, runs the line search and L-BFGS on pooled Gram matrices."""

    name = "vertical LR"

    def __init__(self, run_id: str, parties: list[str], config: LrConfig | None = None, *, pool=None,
                 on_progress=None, score: bool = True, deployment: bool | None = None, train: bool = True):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties):
            raise ProtocolError(f"vertical LR needs the bank first and distinct parties; got {parties!r}")
        self.run_id, self.parties, self.hosts = run_id, list(parties), list(parties[1:])
        self.cfg = config or LrConfig()
        self.pool, self.on_progress, self.score, self.deployment, self.train = pool, on_progress, score, deployment, train
        self.history: list[dict] = []
        self.evaluations = 0
        self.keypair = None
        self._step = 0

    def _check(self, replies: list[Message]) -> None:
        for m in replies:
            expect(m, KINDS, run_id=self.run_id)

    def _send(self, kind: str, receiver: str, meta=None, payload=b"") -> Message:
        return Message(kind, COORDINATOR, receiver, self.run_id, self._step, meta or {}, payload)

    def _take(self, replies: list[Message], kind: str, senders: list[str], receiver: str = COORDINATOR) -> dict[str, Message]:
        got = [m for m in replies if m.kind == kind]
        by_sender = {m.sender: m for m in got}
        if len(got) != len(senders) or set(by_sender) != set(senders) or any(m.receiver != receiver for m in got):
            raise ProtocolError(f"vertical LR step {self._step}: expected one {kind} to {receiver} from each of {senders}, "
                                f"got {[(m.sender, m.receiver) for m in got]}")
        return by_sender

    def _open(self, part: tuple[bytes, dict], count: int, msg: Message) -> list[int]:
        vec = _packed(self.keypair.public_key, part, count, msg)
        return vec.packer.unpack_ints(self.keypair.decrypt_ints(vec.inner, pool=self.pool), count)

    def _masked_part(self, ints: list[int]) -> tuple[bytes, dict]:
        width = masking.int_width(max((abs(v) for v in ints), default=1).bit_length() + 1)
        return masking.ints_to_bytes(ints, width), {"width": width}

    def _run(self):
        cfg, scale = self.cfg, self.cfg.scale_bits
        self.keypair = generate_keypair(cfg.key_bits, backend=cfg.backend, deployment=self.deployment)
        key = self.keypair.public_key
        setup = {"config": asdict(cfg), "key_n": format(key.n, "x"), "parties": self.parties}
        replies = yield [self._send(SETUP, p, setup) for p in self.parties]
        ready = self._take(replies, READY, self.parties)
        if not self.train:  # saved model: straight to scoring
            yield from self._score_all()
            return
        labels = [m for m in replies if m.kind == LABELS]  # forwarded with the first evaluation
        if sorted(m.receiver for m in labels) != sorted(self.hosts) or any(m.sender != BANK for m in labels):
            raise ProtocolError("vertical LR setup: the bank must send encrypted labels to every host")
        n = int(ready[BANK].meta["train_rows"])
        evaluation, alpha, direction = 0, 0.0, None
        base_loss, gtp, gnorm0, halvings, iterations = None, 0.0, None, 0, 0
        while True:
            self._step += 1
            meta = {"evaluation": evaluation, "alpha": alpha, "direction": direction}
            replies = yield labels + [self._send(EVAL, p, meta) for p in self.parties]
            labels = []
            norms = self._take(replies, NORM, self.parties)
            if self.hosts:
                relay = list(self._take(replies, PARTIAL, self.hosts, receiver=BANK).values())
                self._step += 1
                replies = yield relay
            scores = self._take(replies, SCORES, [BANK])[BANK]
            parts = unbundle(scores, ["z", "yz", "val"])
            z = np.array(self._open(parts["z"], n, scores), dtype=float) / (1 << scale)
            yz_vec = _vector(key, parts["yz"], 1, scores)
            yz = float(self.keypair.decrypt(yz_vec)[0])
            val_count = int(parts["val"][1].get("count", 0))
            val_masked = self._open(parts["val"], val_count, scores)
            loss = (float(np.logaddexp(0.0, z).sum()) - yz) / n + 0.5 * cfg.l2 * sum(float(m.meta["sq"]) for m in norms.values())
            sigma = EncryptedVector.encrypt(key, 1.0 / (1.0 + np.exp(-z)), scale, pool=self.pool)
            payload, bmeta = bundle({"sigma": _part(sigma), "val": self._masked_part(val_masked)})
            self._step += 1
            replies = yield [self._send(SIGMOID, BANK, {**bmeta, "loss": loss}, payload)]
            gradients = self._take(replies, GRADIENT, [BANK])
            if self.hosts:
                relay = [m for m in replies if m.kind == RESIDUAL]
                if sorted(m.receiver for m in relay) != sorted(self.hosts):
                    raise ProtocolError("vertical LR: the bank must send the residual to every host")
                self._step += 1
                replies = yield relay
                gradients.update(self._take(replies, GRADIENT, self.hosts))
            accepted = evaluation == 0 or loss <= base_loss + cfg.armijo * alpha * gtp
            out = []
            for party, m in gradients.items():
                part = unbundle(m, ["g"])["g"]
                masked = self._open(part, int(part[1].get("count", 0)), m)
                data, pmeta = self._masked_part(masked)
                payload, bmeta = bundle({"g": (data, pmeta)})
                out.append(self._send(UNMASK, party, {**bmeta, "accepted": accepted}, payload))
            self._step += 1
            replies = yield out
            grams = self._take(replies, GRAM, self.parties)
            record = {**gradients[BANK].meta.get("progress", {}), "evaluation": evaluation, "iteration": iterations,
                      "loss": loss, "alpha": alpha, "accepted": accepted}
            evaluation += 1
            self.evaluations = evaluation
            if accepted:
                gram = sum(np.array(m.meta["gram"], dtype=float) for m in grams.values())
                pairs = (gram.shape[0] - 1) // 2
                gnorm = math.sqrt(max(gram[-1, -1], 0.0))
                gnorm0 = gnorm if gnorm0 is None else gnorm0
                record["grad_norm"] = gnorm
                improvement = None if base_loss is None else (base_loss - loss) / max(1.0, abs(loss))
                base_loss = loss
                iterations += 1
                self._record(record)
                if gnorm <= cfg.gtol * gnorm0 or (improvement is not None and improvement <= cfg.ftol) or iterations > cfg.max_iter:
                    break
                coeffs = two_loop(gram, pairs)
                gtp = directional_derivative(gram, coeffs)
                if gtp >= 0:  # not a descent direction (numerical trouble): fall back to steepest descent
                    coeffs = np.zeros(gram.shape[0])
                    coeffs[-1] = -1.0
                    gtp = -gram[-1, -1]
                direction, alpha, halvings = coeffs.tolist(), 1.0, 0
            else:
                self._record(record)
                halvings += 1
                # a rejected step whose loss differs from the base by less than the fixed-point
                # noise means the optimum is reached at this precision
                if halvings > cfg.max_halvings or loss - base_loss < 2.0 ** -(scale + 2):
                    break
                alpha, direction = alpha * 0.5, None
        self._step += 1
        replies = yield [self._send(FINISH, p) for p in self.parties]
        self._take(replies, DONE, self.parties)
        if self.score:
            yield from self._score_all()

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.on_progress is not None:
            self.on_progress(record)

    def _score_all(self):
        self._step += 1
        replies = yield [self._send(SCORE, p) for p in self.parties]
        if self.hosts:
            relay = list(self._take(replies, SCORE_PARTIAL, self.hosts, receiver=BANK).values())
            self._step += 1
            replies = yield relay
        masked = self._take(replies, SCORE_MASKED, [BANK])[BANK]
        part = unbundle(masked, ["z"])["z"]
        ints = self._open(part, int(part[1].get("count", 0)), masked)
        payload, bmeta = bundle({"z": self._masked_part(ints)})
        self._step += 1
        replies = yield [self._send(SCORE_UNMASK, BANK, bmeta, payload)]
        self._take(replies, SCORED, [BANK])
