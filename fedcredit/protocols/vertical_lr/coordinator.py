"""The coordinator's side of vertical LR: it holds the Paillier key, runs the line search and L-BFGS."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.crypto import generate_keypair
from fedcredit.crypto import masking, pairwise
from fedcredit.protocols.lbfgs import directional_derivative, two_loop
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.protocols.vertical_lr import shares
from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, PAIR, READY, SCORE, SCORE_SHARE, SCORE_UNMASK, SCORED,
    SETUP, SHARE, SIGMOID, UNMASK, LrConfig)
from fedcredit.protocols.parts import packed_part, to_part, vector_part


class LrCoordinator(ScriptedCoordinator):
    """The coordinator's side: holds the Paillier key, runs the line search and L-BFGS on pooled Gram matrices."""

    name = "vertical LR"

    def __init__(self, run_id: str, parties: list[str], config: LrConfig | None = None, *, pool=None,
                 on_progress=None, score: bool = True, deployment: bool | None = None, train: bool = True,
                 keypair=None):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties):
            raise ProtocolError(f"vertical LR needs the bank first and distinct parties; got {parties!r}")
        self.run_id, self.parties, self.hosts = run_id, list(parties), list(parties[1:])
        self.cfg = config or LrConfig()
        self.pool, self.on_progress, self.score, self.deployment, self.train = pool, on_progress, score, deployment, train
        self.history: list[dict] = []
        self.evaluations = 0
        self.regularization: list[dict] = []  # per fit: l2, the bank's last validation AUC, iterations
        self.l2, self.chosen_fit = self.cfg.l2, 0
        self.keypair = None
        self._given_keypair = keypair  # a resumed coordinator's journaled key (else one is generated)
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

    def _relayed(self, replies: list[Message]) -> list[Message]:
        """The setup's node-to-node messages (pair seeds; with training, the bank's encrypted labels),
        forwarded with the next round: one pair seed per pair of parties, labels from the bank to each host."""
        relay = [m for m in replies if m.receiver != COORDINATOR]
        pairs = sorted((m.sender, m.receiver) for m in relay if m.kind == PAIR)
        labels = sorted((m.sender, m.receiver) for m in relay if m.kind == LABELS)
        want_pairs = sorted((a, b) for a in self.parties for b in self.parties if a < b)
        want_labels = [(BANK, h) for h in sorted(self.hosts)] if self.train else []
        if pairs != want_pairs or labels != want_labels or len(relay) != len(pairs) + len(labels):
            raise ProtocolError(f"vertical LR setup: expected pair seeds {want_pairs} and labels {want_labels}, "
                                f"got {[(m.kind, m.sender, m.receiver) for m in relay]}")
        return relay

    def _sum_shares(self, replies: list[Message], kind: str) -> tuple[dict[str, Message], np.ndarray, dict[str, dict]]:
        """Every party's masked share added up (pair masks cancel): the total as int64, and each reply's parts."""
        got = self._take(replies, kind, self.parties)
        parts = {p: unbundle(m, ["z", "yz"] if kind == SHARE else ["z"]) for p, m in got.items()}
        words = [shares.words_of(parts[p]["z"], m) for p, m in got.items()]
        if len({len(w) for w in words}) != 1:
            raise ProtocolError(f"vertical LR step {self._step}: {kind} shares of different lengths "
                                f"{ {p: len(w) for p, w in zip(got, words)} }")
        return got, pairwise.unmask_sum(words), parts

    def _yz(self, got: dict[str, Message], parts: dict[str, dict]) -> float:
        """``yᵀz``: the bank's masked word plus each host's decrypted masked word, modulo 2^64."""
        yz_scale = self.cfg.scale_bits + shares.YZ_SCALE_EXTRA
        words = []
        for party, m in got.items():
            if party == BANK:
                words.append(shares.words_of(parts[party]["yz"], m, 1))
            else:
                vec = vector_part(self.keypair.public_key, parts[party]["yz"], 1, m, scale_bits=yz_scale)
                words.append(np.array([self.keypair.decrypt_ints(vec)[0] % shares.WORD], dtype=np.uint64))
        return math.ldexp(float(pairwise.unmask_sum(words)[0]), -yz_scale)

    def _run(self):
        cfg = self.cfg
        self.keypair = self._given_keypair or generate_keypair(cfg.key_bits, backend=cfg.backend,
                                                               deployment=self.deployment)
        key = self.keypair.public_key
        setup = {"config": asdict(cfg), "key_n": format(key.n, "x"), "parties": self.parties}
        replies = yield [self._send(SETUP, p, setup) for p in self.parties]
        ready = self._take(replies, READY, self.parties)
        relay = self._relayed(replies)  # forwarded with the next round
        if not self.train:  # saved model: straight to scoring
            yield from self._finish_and_score(relay, finish=False)
            return
        n = int(ready[BANK].meta["train_rows"])
        self.regularization, best = [], 0
        for fit, l2 in enumerate(cfg.l2_values()):  # each fit starts where the last one stopped
            relay = yield from self._fit(n, fit, l2, relay)
            aucs = [r["val_auc"] for r in self.history if r.get("fit", 0) == fit and r.get("val_auc") is not None]
            self.regularization.append({"l2": l2, "val_auc": aucs[-1] if aucs else None,
                                        "iterations": sum(1 for r in self.history if r.get("fit", 0) == fit and "grad_norm" in r)})
            if aucs and (self.regularization[best]["val_auc"] is None or aucs[-1] > self.regularization[best]["val_auc"]):
                best = fit
        self.l2 = self.regularization[best]["l2"]
        self.chosen_fit = best
        yield from self._finish_and_score([], finish=True, fit=self.chosen_fit if len(cfg.l2_values()) > 1 else None)

    def _fit(self, n: int, fit: int, l2: float, relay: list[Message]):
        """One L-BFGS fit at penalty ``l2`` from the parties' current weights (a new fit resets their memory)."""
        cfg, scale = self.cfg, self.cfg.scale_bits
        evaluation, alpha, direction = self.evaluations, 0.0, None
        base_loss, gtp, gnorm0, halvings, iterations = None, 0.0, None, 0, 0
        while True:
            self._step += 1
            meta = {"evaluation": evaluation, "alpha": alpha, "direction": direction,
                    **({"fit": fit, "l2": l2} if base_loss is None and fit else {})}
            replies = yield relay + [self._send(EVAL, p, meta) for p in self.parties]
            relay = []
            got, total, parts = self._sum_shares(replies, SHARE)
            if len(total) < n:
                raise ProtocolError(f"vertical LR step {self._step}: shares of {len(total)} rows, expected at least {n}")
            z = np.ldexp(total[:n].astype(float), -scale)
            yz = self._yz(got, parts)
            loss = (float(np.logaddexp(0.0, z).sum()) - yz) / n + 0.5 * l2 * sum(float(m.meta["sq"]) for m in got.values())
            accepted = base_loss is None or loss <= base_loss + cfg.armijo * alpha * gtp
            record = {"evaluation": evaluation, "iteration": iterations, "loss": loss, "alpha": alpha, "accepted": accepted,
                      **({"fit": fit, "l2": l2} if len(cfg.l2_values()) > 1 else {})}
            evaluation += 1
            self.evaluations = evaluation
            if not accepted:  # the line search halves the step at once: no gradient is needed here
                self._record(record)
                halvings += 1
                # a rejected step whose loss differs from the base by less than the fixed-point
                # noise means the optimum is reached at this precision
                if halvings > cfg.max_halvings or loss - base_loss < 2.0 ** -(scale + 2):
                    break
                alpha, direction = alpha * 0.5, None
                continue
            gram, progress = yield from self._gradient_rounds(z, total[n:].astype(np.uint64), loss)
            record = {**progress, **record}
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
        return relay

    def _gradient_rounds(self, z: np.ndarray, val_masked: np.ndarray, loss: float):
        """An accepted point's two rounds: ``[[σ(z)]]`` to every party (the bank also gets its masked
        validation scores and the loss) → masked gradients; decrypted masked gradients → Gram blocks."""
        sigma = to_part(self.keypair.encrypt(1.0 / (1.0 + np.exp(-z)), self.cfg.scale_bits, pool=self.pool))
        out = []
        for party in self.parties:
            named = {"sigma": sigma, **({"val": shares.word_part(val_masked)} if party == BANK else {})}
            payload, bmeta = bundle(named)
            out.append(self._send(SIGMOID, party, {**bmeta, **({"loss": loss} if party == BANK else {})}, payload))
        self._step += 1
        replies = yield out
        gradients = self._take(replies, GRADIENT, self.parties)
        out = []
        for party, m in gradients.items():
            part = unbundle(m, ["g"])["g"]
            payload, bmeta = bundle({"g": self._masked_part(self._open(part, int(part[1].get("count", 0)), m))})
            out.append(self._send(UNMASK, party, bmeta, payload))
        self._step += 1
        replies = yield out
        grams = self._take(replies, GRAM, self.parties)
        gram = sum(np.array(m.meta["gram"], dtype=float) for m in grams.values())
        return gram, gradients[BANK].meta.get("progress", {})

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.on_progress is not None:
            self.on_progress(record)

    def _finish_and_score(self, relay: list[Message], finish: bool, fit: int | None = None):
        """The end in at most two rounds: ``lr.finish`` with ``lr.score`` (masked shares of every aligned
        row's score), then the masked total to the bank, the only party that learns scores."""
        self._step += 1
        out = relay + ([self._send(FINISH, p, {} if fit is None else {"fit": fit}) for p in self.parties] if finish else [])
        if self.score:
            out += [self._send(SCORE, p) for p in self.parties]
        self.closing = not self.score
        replies = yield out
        if finish:
            self._take(replies, DONE, self.parties)
        if not self.score:
            return
        _, total, _ = self._sum_shares(replies, SCORE_SHARE)
        payload, bmeta = bundle({"z": shares.word_part(total.astype(np.uint64))})
        self._step += 1
        self.closing = True
        replies = yield [self._send(SCORE_UNMASK, BANK, bmeta, payload)]
        self._take(replies, SCORED, [BANK])
