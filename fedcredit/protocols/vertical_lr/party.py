"""A data holder's side of vertical LR (the bank, or a host): partial predictions, residuals, masked gradients."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.crypto import EncryptedVector, PackedVector, Packer, PaillierPublicKey
from fedcredit.crypto import masking
from fedcredit.protocols.lbfgs import LbfgsBlock
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, NORM, PARTIAL, READY, RESIDUAL, SCORE, SCORE_MASKED,
    SCORE_PARTIAL, SCORE_UNMASK, SCORED, SCORES, SETUP, SIGMOID, UNMASK, LrConfig, PartyData)
from fedcredit.protocols.parts import packed_part, to_part, vector_part
from fedcredit.protocols.vertical_lr.wire import MASKED_SLOT_BITS, Z_SLOT_BITS, masked_ints, meta_first
from fedcredit.scoring import metrics


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
        payload, meta = bundle({"z": to_part(z), "val": to_part(val), "yu": to_part(yu)})
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
            z = z + packed_part(self.key, parts["z"], len(u_train), m)
            hosts_val.append(packed_part(self.key, parts["val"], len(u_val), m))
            yz = yz + vector_part(self.key, parts["yu"], 1, m)
        val = self._masked_scores(u_val, hosts_val)
        payload, meta = bundle({"z": to_part(z), "yz": to_part(yz), "val": to_part(val)})
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
        masked = masked_ints(part, count, msg)
        return np.array([m - r for m, r in zip(masked, self._val_masks)], dtype=float) / (1 << self.cfg.scale_bits)

    def _sigmoid(self, msg: Message) -> list[Message]:
        """Bank: residual [[d]] = [[σ(z)]] − y, to the hosts and into its own gradient."""
        expect(msg, SIGMOID, sender=COORDINATOR)
        if self.role != BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank receives σ(z)")
        parts = unbundle(msg, ["sigma", "val"])
        n = len(self.data.train_rows)
        sigma_perm = vector_part(self.key, parts["sigma"], n, msg)
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
        out = [self._reply(RESIDUAL, h, msg.step + 1, *meta_first(bundle({"d": to_part(d)}))) for h in self.hosts]
        out.append(self._gradient(d, msg.step + 1, progress))
        return out

    def _residual(self, msg: Message) -> list[Message]:
        expect(msg, RESIDUAL, sender=BANK)
        d = vector_part(self.key, unbundle(msg, ["d"])["d"], len(self.data.train_rows), msg)
        return [self._gradient(d, msg.step + 1, {})]

    def _gradient(self, d: EncryptedVector, step: int, meta: dict) -> Message:
        """Masked, packed [[X_pᵀ d + r]] for the coordinator to decrypt."""
        g = self.data.train.backward_encrypted(d, pool=self.pool)
        self._masks = masking.random_masks(len(g), g.bound)
        packed = Packer(self.key, MASKED_SLOT_BITS).pack(g.add_plain_ints(self._masks), pool=self.pool)
        self._gradient_scale = g.scale_bits
        payload, bmeta = bundle({"g": to_part(packed)})
        return self._reply(GRADIENT, COORDINATOR, step, {**bmeta, "progress": meta}, payload)

    def _unmask(self, msg: Message) -> list[Message]:
        """Remove the mask, take the step if accepted, report this block of the Gram matrix."""
        expect(msg, UNMASK, sender=COORDINATOR)
        masked = masked_ints(unbundle(msg, ["g"])["g"], self.data.train.n_params, msg)
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
        payload, meta = bundle({"u": to_part(packed)})
        return [self._reply(SCORE_PARTIAL, BANK, msg.step + 1, meta, payload)]

    def _score_masked(self, inbox: dict[str, Message], step: int) -> list[Message]:
        n = len(self._own_scores)
        hosts = [packed_part(self.key, unbundle(m, ["u"])["u"], n, m) for m in inbox.values()]
        total = self._masked_scores(self._own_scores, hosts)
        payload, meta = bundle({"z": to_part(total)})
        return [self._reply(SCORE_MASKED, COORDINATOR, step, meta, payload)]

    def _score_unmask(self, msg: Message) -> list[Message]:
        expect(msg, SCORE_UNMASK, sender=COORDINATOR)
        if self.role != BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank learns scores")
        z = self._unmask_scores(unbundle(msg, ["z"])["z"], len(self._own_scores), msg)
        self.scores = 1.0 / (1.0 + np.exp(-z))
        return [self._reply(SCORED, COORDINATOR, msg.step + 1, {"rows": len(z)})]
