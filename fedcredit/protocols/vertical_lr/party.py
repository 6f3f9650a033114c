"""A data holder's side of vertical LR (the bank, or a host): partial predictions, residuals, masked gradients."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.crypto import EncryptedVector, Packer, PaillierPublicKey
from fedcredit.crypto import masking, pairwise
from fedcredit.protocols.lbfgs import LbfgsBlock
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.vertical_lr import shares
from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, PAIR, READY, SCORE, SCORE_SHARE, SCORE_UNMASK, SCORED,
    SETUP, SHARE, SIGMOID, UNMASK, LrConfig, PartyData)
from fedcredit.protocols.parts import to_part, vector_part
from fedcredit.protocols.vertical_lr.wire import MASKED_SLOT_BITS, masked_ints
from fedcredit.scoring import metrics


def _permutation(seed: bytes, evaluation: int, n: int) -> np.ndarray:
    """The evaluation's secret row permutation, derived by bank and hosts from a shared seed."""
    digest = hashlib.sha256(seed + evaluation.to_bytes(8, "big")).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint64)).permutation(n)


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
        self.parties: list[str] = []
        self._seed = b""  # the permutation seed (the bank's, sent with the labels)
        self._pair_seeds: dict[str, bytes] = {}  # other party -> the seed of our pair masks
        self._neg_xty: EncryptedVector | None = None  # host: -X_pᵀ[[y]] at the residual's scale
        self._xty: EncryptedVector | None = None  # host: X_pᵀ[[y]] (label sums per own bin)
        self._masks: list[int] = []
        self._own_seed = b""  # bank: seed of its private masks on the rows only it may see in total
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
            SETUP: self._setup, LABELS: self._labels, PAIR: self._pair, EVAL: self._eval, SIGMOID: self._sigmoid,
            UNMASK: self._unmask, FINISH: self._finish, SCORE: self._score, SCORE_UNMASK: self._score_unmask,
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
        self.run_id, self.hosts, self.parties = msg.run_id, parties[1:], parties
        self._own_seed = pairwise.new_seed() if self.role == BANK else b""
        seeds = self._offer_pair_seeds(msg.step + 1)
        d = self.data.train
        if d is None:  # scoring with a saved model: nothing to train
            return [self._reply(READY, COORDINATOR, msg.step + 1, {"n_params": len(self.weights), "train_rows": 0})] + seeds
        self._l2, self._fits = self.cfg.l2_values()[0], []
        self._precond = self._preconditioner()
        w0 = np.zeros(d.n_params)
        out = [self._reply(READY, COORDINATOR, msg.step + 1, {"n_params": d.n_params, "train_rows": len(self.data.train_rows)})]
        out += seeds
        if self.role == BANK:
            y = self.data.labels[self.data.train_rows]
            rate = min(max(float(y.mean()), 1e-4), 1 - 1e-4)
            w0[-1] = math.log(rate / (1 - rate))
            self._seed = np.random.default_rng().bytes(32)
            enc_y = EncryptedVector.encrypt_ints(self.key, y.astype(int).tolist(), 0, pool=self.pool)
            payload, meta = bundle({"seed": (self._seed, {}), "y": (enc_y.to_bytes(), enc_y.meta())})
            out += [self._reply(LABELS, h, msg.step + 1, meta, payload) for h in self.hosts]
        self._base_v = w0 * self._precond
        self._trial_v = self._base_v.copy()
        self.block = LbfgsBlock(self.cfg.memory)
        self.weights = w0
        return out

    def _preconditioner(self) -> np.ndarray:
        """Jacobi: the Hessian's diagonal is at most curvature / 4 + l2 (no penalty on the intercept)."""
        d = self.data.train
        reg = np.full(d.n_params, self._l2)
        if d.intercept:
            reg[-1] = 0.0
        return np.sqrt(d.curvature() / 4.0 + reg)

    def _new_fit(self, msg: Message) -> None:
        """The next penalty of the path: keep the fit just finished, restart L-BFGS from its weights."""
        fit, values = msg.meta.get("fit"), self.cfg.l2_values()
        if fit != len(self._fits) + 1 or fit >= len(values) or msg.meta.get("l2") != values[fit]:
            raise ProtocolError(f"{msg.describe()}: fit {fit!r} at l2 {msg.meta.get('l2')!r} does not follow fit "
                                f"{len(self._fits)} of the path {values}")
        w = self._w(self._base_v)
        self._fits.append(w)
        self._l2 = values[fit]
        self._precond = self._preconditioner()
        self._base_v = w * self._precond
        self.block = LbfgsBlock(self.cfg.memory)

    def _offer_pair_seeds(self, step: int) -> list[Message]:
        """A fresh pair seed for every party named after this one (sealed by the node's relay on the way out)."""
        out = []
        for other in self.parties:
            if other > self.role:
                self._pair_seeds[other] = pairwise.new_seed()
                out.append(self._reply(PAIR, other, step, {}, self._pair_seeds[other]))
        return out

    def _pair(self, msg: Message) -> list[Message]:
        expect(msg, PAIR)
        if msg.sender not in self.parties or not msg.sender < self.role or msg.sender in self._pair_seeds:
            raise ProtocolError(f"{msg.describe()}: a pair seed comes once from each party named before {self.role}")
        if len(msg.payload) != pairwise.SEED_BYTES:
            raise ProtocolError(f"{msg.describe()}: a pair seed must be {pairwise.SEED_BYTES} bytes")
        self._pair_seeds[msg.sender] = bytes(msg.payload)
        return []

    def _private_mask(self, purpose: str, count: int) -> np.ndarray:
        """The bank's own mask for this evaluation (or the scoring), re-derived from its seed when it unmasks,
        so it keeps 32 bytes between messages instead of a mask per row."""
        label = f"{self.run_id}/{purpose}" if purpose == "score" else f"{self.run_id}/{self._evaluation}/{purpose}"
        return pairwise.word_mask(self._own_seed, label, count)

    def _seeds(self, msg: Message) -> dict[str, bytes]:
        """The pair seeds shared with every other party (all must have arrived before the first share)."""
        missing = [p for p in self.parties if p != self.role and p not in self._pair_seeds]
        if missing:
            raise ProtocolError(f"{msg.describe()}: {self.role} has no pair seed with {missing}")
        return self._pair_seeds

    def _labels(self, msg: Message) -> list[Message]:
        """Host: keep the permutation seed and ``X_pᵀ[[y]]`` (label sums per own bin; ``[[y]]`` itself is dropped)."""
        expect(msg, LABELS, sender=BANK)
        if self.role == BANK or self._xty is not None:
            raise ProtocolError(f"{msg.describe()}: labels are sent once, by the bank, to hosts")
        parts = unbundle(msg, ["seed", "y"])
        self._seed = parts["seed"][0]
        if len(self._seed) != 32:
            raise ProtocolError(f"{msg.describe()}: permutation seed must be 32 bytes")
        enc_y = vector_part(self.key, parts["y"], len(self.data.train_rows), msg, scale_bits=0)
        self._xty = self.data.train.backward_encrypted(enc_y, pool=self.pool)
        self._neg_xty = self._xty.mul_scalar(-1, scale_bits=self.cfg.scale_bits)
        return []

    # -- one evaluation -----------------------------------------------------
    def _w(self, v: np.ndarray) -> np.ndarray:
        return v / self._precond

    def _eval(self, msg: Message) -> list[Message]:
        """Move to the trial point; send the coordinator this party's masked share of the scores and of ``yᵀz``."""
        expect(msg, EVAL, sender=COORDINATOR)
        meta = msg.meta
        if "fit" in meta:
            self._new_fit(msg)
        if meta.get("direction") is not None:
            self.block.set_direction(meta["direction"])
        alpha = float(meta.get("alpha", 0.0))
        self._trial_v = self._base_v + (alpha * self.block.direction if self.block.direction is not None else 0.0)
        w = self._w(self._trial_v)
        self._evaluation = int(meta["evaluation"])
        norm = float(w[: self.data.train.width] @ w[: self.data.train.width])
        scale, n = self.cfg.scale_bits, len(self.data.train_rows)
        u_all = self.data.every.forward(w)
        u_train = u_all[self.data.train_rows]
        perm = _permutation(self._seed, self._evaluation, n)
        values = shares.fixed(np.concatenate([u_train[perm], u_all[self.data.val_rows]]), scale)
        private = None
        if self.role == BANK:  # validation rows: the coordinator's total stays masked for the bank
            private = np.concatenate([np.zeros(n, dtype=np.uint64), self._private_mask("val", len(self.data.val_rows))])
        label = f"{self.run_id}/{self._evaluation}"
        seeds = self._seeds(msg)
        z = shares.share(values, self.role, seeds, f"{label}/z", private)
        yz_scale = scale + shares.YZ_SCALE_EXTRA
        if self.role == BANK:
            y = self.data.labels[self.data.train_rows]
            yz = shares.word_part(shares.share(shares.fixed([float(y @ u_train)], yz_scale), self.role, seeds, f"{label}/yz"))
        else:  # Σ_k w_k·(X_pᵀy)_k under encryption, plus this host's masks
            if self._xty is None:
                raise ProtocolError(f"{msg.describe()}: {self.role} has not received the encrypted labels")
            w_scale = yz_scale - self._xty.scale_bits  # weights finer than the scores' scale: yᵀu_p stays exact
            weights = shares.fixed(w[: self._xty.shape[0]], w_scale)
            mask = int(shares.share(np.zeros(1, dtype=np.int64), self.role, seeds, f"{label}/yz")[0])
            yu = self._xty.dot(weights[:, None], scale_bits=w_scale, pool=self.pool)
            yz = to_part(yu.add_plain_ints([mask + shares.carry_mask()]))
        payload, bmeta = bundle({"z": shares.word_part(z), "yz": yz})
        return [self._reply(SHARE, COORDINATOR, msg.step + 1, {**bmeta, "sq": norm}, payload)]

    def _sigmoid(self, msg: Message) -> list[Message]:
        """``[[σ(z)]]`` in the agreed order; the residual ``[[σ(z) − y]]`` enters the masked gradient.

        The bank subtracts its labels in plaintext and also gets its validation scores back;
        a host subtracts ``X_pᵀ[[y]]`` (computed once from the encrypted labels) from ``X_pᵀ[[σ(z)]]``.
        """
        expect(msg, SIGMOID, sender=COORDINATOR)
        parts = unbundle(msg, ["sigma", "val"] if self.role == BANK else ["sigma"])
        n = len(self.data.train_rows)
        sigma_perm = vector_part(self.key, parts["sigma"], n, msg)
        perm = _permutation(self._seed, self._evaluation, n)
        order = np.empty(n, dtype=np.int64)
        order[perm] = np.arange(n)
        sigma = sigma_perm.take(order)
        if self.role != BANK:
            if self._neg_xty is None:
                raise ProtocolError(f"{msg.describe()}: {self.role} has not received the encrypted labels")
            return [self._gradient(self.data.train.backward_encrypted(sigma, pool=self.pool) + self._neg_xty, msg.step + 1, {})]
        d = sigma.add_plain(-self.data.labels[self.data.train_rows].astype(float))
        count = len(self.data.val_rows)
        z_val = shares.unmask(shares.words_of(parts["val"], msg, count), self._private_mask("val", count), self.cfg.scale_bits)
        progress = {"loss": msg.meta.get("loss")}
        y_val = self.data.labels[self.data.val_rows]
        if len(np.unique(y_val)) == 2:
            progress.update(val_auc=metrics.auc(y_val, z_val), val_ks=metrics.ks(y_val, z_val))
        self.history.append(progress)
        return [self._gradient(self.data.train.backward_encrypted(d, pool=self.pool), msg.step + 1, progress)]

    def _gradient(self, g: EncryptedVector, step: int, meta: dict) -> Message:
        """Masked, packed [[X_pᵀ d + r]] for the coordinator to decrypt."""
        self._masks = masking.random_masks(len(g), g.bound)
        packed = Packer(self.key, MASKED_SLOT_BITS).pack(g.add_plain_ints(self._masks), pool=self.pool)
        self._gradient_scale = g.scale_bits
        payload, bmeta = bundle({"g": to_part(packed)})
        return self._reply(GRADIENT, COORDINATOR, step, {**bmeta, "progress": meta}, payload)

    def _unmask(self, msg: Message) -> list[Message]:
        """Remove the mask, take the (accepted) step, report this block of the Gram matrix."""
        expect(msg, UNMASK, sender=COORDINATOR)
        masked = masked_ints(unbundle(msg, ["g"])["g"], self.data.train.n_params, msg)
        raw = np.array([m - r for m, r in zip(masked, self._masks)], dtype=float) / (1 << self._gradient_scale)
        w = self._w(self._trial_v)
        grad_w = raw / len(self.data.train_rows)
        reg = w * self._l2
        if self.data.train.intercept:
            reg[-1] = 0.0
        grad_v = (grad_w + reg) / self._precond
        self.block.accept(self._trial_v - self._base_v, grad_v)
        self._base_v = self._trial_v.copy()
        self.weights = w
        return [self._reply(GRAM, COORDINATOR, msg.step + 1, {"gram": self.block.gram().tolist()})]

    def _finish(self, msg: Message) -> list[Message]:
        expect(msg, FINISH, sender=COORDINATOR)
        fits = [*self._fits, self._w(self._base_v)]
        chosen = msg.meta.get("fit", len(fits) - 1)
        if not isinstance(chosen, int) or not 0 <= chosen < len(fits):
            raise ProtocolError(f"{msg.describe()}: fit {chosen!r} is not one of this party's {len(fits)} fits")
        self.weights = fits[chosen]
        return [self._reply(DONE, COORDINATOR, msg.step + 1, {"n_params": len(self.weights)})]

    # -- scoring of every aligned row -------------------------------------------
    def _score(self, msg: Message) -> list[Message]:
        """This party's masked share of every aligned row's score; the bank's carries its private mask."""
        expect(msg, SCORE, sender=COORDINATOR)
        u = self.data.every.fixed_scores(self.weights, self.cfg.scale_bits)  # bin by bin: exact points tables
        private = None
        if self.role == BANK:
            private = self._private_mask("score", len(u))
        words = shares.share(u, self.role, self._seeds(msg), f"{self.run_id}/score", private)
        payload, meta = bundle({"z": shares.word_part(words)})
        return [self._reply(SCORE_SHARE, COORDINATOR, msg.step + 1, meta, payload)]

    def _score_unmask(self, msg: Message) -> list[Message]:
        expect(msg, SCORE_UNMASK, sender=COORDINATOR)
        if self.role != BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank learns scores")
        count = self.data.every.rows
        z = shares.unmask(shares.words_of(unbundle(msg, ["z"])["z"], msg, count), self._private_mask("score", count),
                          self.cfg.scale_bits)
        self.scores = 1.0 / (1.0 + np.exp(-z))
        return [self._reply(SCORED, COORDINATOR, msg.step + 1, {"rows": len(z)})]
