"""The coordinator's side of vertical SecureBoost: starts each tree and the prediction, relays node-to-node messages."""

from __future__ import annotations

import re
from dataclasses import asdict

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, expect
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.protocols.secureboost.config import (
    BANK, HOST_TO_HOST, KINDS, PREDICT, READY, SCORED, SEED, SETUP, TO_BANK, TO_HOST, TREE, TREE_DONE, SbConfig)


class SbCoordinator(ScriptedCoordinator):
    """The coordinator's side: starts each tree and the prediction, relays node-to-node messages."""

    name = "vertical SecureBoost"

    def __init__(self, run_id: str, parties: list[str], config: SbConfig | None = None, *, score: bool = True,
                 on_progress=None, train: bool = True):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties):
            raise ProtocolError(f"vertical SecureBoost needs the bank first and distinct parties; got {parties!r}")
        self.run_id, self.parties, self.hosts = run_id, list(parties), list(parties[1:])
        self.cfg = config or SbConfig()
        self.score, self.on_progress, self.train = score, on_progress, train
        self.history: list[dict] = []
        self.key_fingerprint: str | None = None  # the bank's Paillier key (public; from its sb.ready)
        self.trees = 0  # trees in the final model
        self._step = 0

    @property
    def evaluations(self) -> int:
        """Trees grown (the job reports it like vertical LR's loss evaluations)."""
        return len(self.history)

    def _check(self, replies: list[Message]) -> None:
        for m in replies:
            expect(m, KINDS, run_id=self.run_id)
            if m.relayed:
                ok = ((m.kind in TO_HOST and m.sender == BANK and m.receiver in self.hosts)
                      or (m.kind in TO_BANK and m.sender in self.hosts and m.receiver == BANK)
                      or (m.kind in HOST_TO_HOST and m.sender in self.hosts and m.receiver in self.hosts
                          and m.sender != m.receiver))
                if not ok:
                    raise ProtocolError(f"vertical SecureBoost: cannot relay {m.describe()}")
            elif m.receiver != COORDINATOR:
                raise ProtocolError(f"vertical SecureBoost: {m.describe()} is not addressed to the coordinator")

    def _send(self, kind: str, receiver: str, meta=None) -> Message:
        return Message(kind, COORDINATOR, receiver, self.run_id, self._step, meta or {})

    def _relay_until(self, replies: list[Message], final: str, then: str | None = None):
        """Forward node-to-node messages until the bank reports ``final``; returns the reports and the rest.

        The bank may report ``final`` together with node-to-node messages (a finished tree and
        the next tree's gradients, or the first routing of the prediction) and its report of
        the step after (``then``: the prediction's ``sb.scored``); those are returned for the
        caller to go on with.
        """
        while True:
            done = [m for m in replies if m.kind == final]
            relay = [m for m in replies if m.relayed or (then is not None and m.kind == then)]
            stray = [m for m in replies if m not in done and m not in relay]
            if stray or any(m.sender != BANK for m in done):
                raise ProtocolError(f"vertical SecureBoost step {self._step}: unexpected "
                                    f"{[m.describe() for m in stray + relay + done]} while waiting for {final}")
            if done:
                return done, relay
            if any(not m.relayed for m in relay):
                raise ProtocolError(f"vertical SecureBoost step {self._step}: the bank sent {then} before {final}")
            if not relay:
                raise ProtocolError(f"vertical SecureBoost step {self._step}: nothing to relay and no {final} from the bank")
            self._step += 1
            replies = yield relay

    def _train(self, seeds: list[Message]):
        """One ``sb.tree`` starts training; the bank starts each next tree itself, in the reply that reports the last.

        With ``score``, ``sb.predict`` travels with it: the bank scores once training ends, in
        the reply that reports the last tree. Returns what that reply holds besides the report.
        """
        self._step += 1
        replies = yield [self._send(TREE, BANK, {"tree": 0}), *([self._send(PREDICT, BANK)] if self.score else []),
                         *seeds]
        t = 0
        while True:
            done, relay = yield from self._relay_until(replies, TREE_DONE, SCORED if self.score else None)
            for m in done:
                stop = self._tree_done(m, t)
                t += 1
                if stop or t == self.cfg.n_trees:
                    if m is not done[-1] or (relay and not self.score):
                        raise ProtocolError(f"vertical SecureBoost: {m.describe()} ends training, yet the bank sent "
                                            f"{[x.describe() for x in done[done.index(m) + 1:] + relay]}")
                    return relay
            if any(m.kind == SCORED for m in relay):
                raise ProtocolError(f"vertical SecureBoost step {self._step}: sb.scored before the last tree")
            if not relay:
                raise ProtocolError(f"vertical SecureBoost step {self._step}: the bank reported tree {t - 1} "
                                    f"but did not start tree {t}")
            self._step += 1
            replies = yield relay

    def _tree_done(self, done: Message, t: int) -> bool:
        """Check and record the bank's report of tree ``t``; returns whether early stopping ends training."""
        if done.meta.get("tree") != t:
            raise ProtocolError(f"{done.describe()}: reports tree {done.meta.get('tree')!r}, expected {t}")
        stop = done.meta.get("stop", False)
        if not isinstance(stop, bool):
            raise ProtocolError(f"{done.describe()}: meta field 'stop' must be a bool")
        entry = {"tree": t + 1, "stop": stop}
        for key, name in (("loss", "loss"), ("valid_auc", "val_auc")):  # aggregates, like vertical LR's
            if isinstance(done.meta.get(key), float):
                entry[name] = done.meta[key]
        trees = done.meta.get("trees")
        if not isinstance(trees, int) or isinstance(trees, bool) or not 0 <= trees <= t + 1:
            raise ProtocolError(f"{done.describe()}: meta field 'trees' must count the model's trees (≤ {t + 1})")
        self.trees = trees
        self.history.append(entry)
        if self.on_progress is not None:
            self.on_progress(dict(entry))
        return stop

    def _run(self):
        setup = {"config": asdict(self.cfg), "parties": self.parties}
        replies = yield [self._send(SETUP, p, setup) for p in self.parties]
        seeds = [m for m in replies if m.kind == SEED]  # pair seeds (sealed), relayed with the start of training
        replies = [m for m in replies if m.kind != SEED]
        ready = {m.sender: m for m in replies if m.kind == READY}
        if len(replies) != len(self.parties) or set(ready) != set(self.parties):
            raise ProtocolError(f"vertical SecureBoost setup: expected sb.ready from each of {self.parties}")
        fingerprint = ready[BANK].meta.get("key_fingerprint")
        if fingerprint is not None and not (isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{64}", fingerprint)):
            raise ProtocolError(f"{ready[BANK].describe()}: key fingerprint must be 64 hex digits")
        self.key_fingerprint = fingerprint
        if not self.train:  # a saved model: every part must come from the same training run
            ids = {p: m.meta.get("model_id") for p, m in ready.items()}
            if len(set(ids.values())) != 1 or not isinstance(ids[BANK], str):
                raise ProtocolError("vertical SecureBoost: the nodes' saved parts come from different training runs: "
                                    + ", ".join(f"{p} {i!r}" for p, i in ids.items()))
            trees = ready[BANK].meta.get("trees")
            if not isinstance(trees, int) or isinstance(trees, bool) or trees < 1:
                raise ProtocolError(f"{ready[BANK].describe()}: meta field 'trees' must be a positive int")
            self.trees = trees
        if seeds and not self.train:
            raise ProtocolError("vertical SecureBoost: pair seeds sent for a run that does not train")
        if self.train and self.cfg.n_trees:
            replies = yield from self._train(seeds)
        elif self.score:
            self._step += 1
            replies = yield [self._send(PREDICT, BANK)]
        if self.score:
            done, relay = yield from self._relay_until(replies, SCORED)
            if len(done) > 1 or relay:
                raise ProtocolError(f"vertical SecureBoost: unexpected {[m.describe() for m in done[1:] + relay]} "
                                    "with the bank's sb.scored")
