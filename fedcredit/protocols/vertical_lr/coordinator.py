"""The coordinator's side of vertical LR: it holds the Paillier key, runs the line search and L-BFGS."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.crypto import EncryptedVector, generate_keypair
from fedcredit.crypto import masking
from fedcredit.protocols.lbfgs import directional_derivative, two_loop
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, NORM, PARTIAL, READY, RESIDUAL, SCORE, SCORE_MASKED,
    SCORE_PARTIAL, SCORE_UNMASK, SCORED, SCORES, SETUP, SIGMOID, UNMASK, LrConfig)
from fedcredit.protocols.parts import packed_part, to_part, vector_part


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
        vec = packed_part(self.keypair.public_key, part, count, msg)
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
            yz_vec = vector_part(key, parts["yz"], 1, scores)
            yz = float(self.keypair.decrypt(yz_vec)[0])
            val_count = int(parts["val"][1].get("count", 0))
            val_masked = self._open(parts["val"], val_count, scores)
            loss = (float(np.logaddexp(0.0, z).sum()) - yz) / n + 0.5 * cfg.l2 * sum(float(m.meta["sq"]) for m in norms.values())
            sigma = EncryptedVector.encrypt(key, 1.0 / (1.0 + np.exp(-z)), scale, pool=self.pool)
            payload, bmeta = bundle({"sigma": to_part(sigma), "val": self._masked_part(val_masked)})
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
