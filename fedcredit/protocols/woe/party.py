"""A data holder's side of federated WoE/IV binning: the bank (labels, its own Paillier key) or a host.

The bank encrypts its training labels once under a key of its own; each host merges bins
below the minimum share first (label-free), then returns, per bin of each feature, its row
count and the encrypted sum of labels (the events), packed. Only the bank decrypts: it
decides monotone merges, WoE and IV per host bin, knowing bins by index, never
thresholds, and tells each host the result for its own bins. Each host then selects its
features (IV, correlation of its WoE values, top-k) and tells the bank what it allows:
names, or feature numbers only.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.crypto import Packer, PaillierPublicKey, generate_keypair
from fedcredit.data.binning import FeaturePrep
from fedcredit.protocols.parts import packed_part, to_part, vector_part
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.woe.config import BANK, BINS, EVENT_SLOT_BITS, KINDS, LABELS, SELECTED, START, SUMS, WoeConfig
from fedcredit.scoring.woe_binning import BinDecision, NodeBinning, decide


class WoeParty(ProtocolParty):
    """Common to both ends: the node's binning of its training rows, and its outcome (``prep``, tables)."""

    KINDS, SETUP = KINDS, START

    def __init__(self, role: str, prep: FeaturePrep, train_frame: pd.DataFrame, pool=None):
        self.role, self.pool = role, pool
        self._prep, self._train_frame = prep, train_frame
        self.binning: NodeBinning | None = None
        self.cfg: WoeConfig | None = None
        self.run_id = ""
        self.hosts: list[str] = []
        self.prep: FeaturePrep | None = None  # the selected features' preparation, once decided

    @property
    def decided(self) -> bool:
        """Bins, WoE and selection of this node's own features are final (its model may be set up)."""
        return self.prep is not None

    def _is_set_up(self) -> bool:
        return self.cfg is not None

    def _start(self, msg: Message) -> list[Message]:
        expect(msg, START, sender=COORDINATOR)
        if self.cfg is not None:
            raise ProtocolError(f"{msg.describe()}: {self.role} has already started binning")
        self.cfg = WoeConfig.from_meta(msg.meta.get("config", {}))
        hosts = msg.meta.get("hosts")
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ProtocolError(f"{msg.describe()}: meta field 'hosts' must list the hosts")
        self.run_id, self.hosts = msg.run_id, hosts
        self.binning = NodeBinning(self._prep, self._train_frame, self.cfg.settings)
        self._train_frame = None
        return []

    def _finish(self) -> None:
        self.prep = self.binning.select()


class WoeBank(WoeParty):
    """The label holder: decides every node's bins from counts and (decrypted) label sums."""

    def __init__(self, role: str, prep: FeaturePrep, train_frame: pd.DataFrame, labels: np.ndarray, pool=None,
                 deployment: bool | None = None):
        super().__init__(role, prep, train_frame, pool)
        self.labels, self.deployment = np.asarray(labels, dtype=np.int64), deployment
        self.keypair = None
        self.host_decisions: dict[str, list[BinDecision]] = {}
        self.host_tables: dict[str, pd.DataFrame] = {}  # each host's selection as it allowed the bank to see it

    def _handlers(self):
        return {START: self._start, SUMS: self._sums, SELECTED: self._selected}

    def _start(self, msg: Message) -> list[Message]:
        super()._start(msg)
        self.binning.adopt(self.binning.decide_own(self.labels))
        self._finish()
        self.keypair = generate_keypair(self.cfg.key_bits, backend=self.cfg.backend, deployment=self.deployment)
        key = self.keypair.public_key
        enc = self.keypair.encrypt_ints(self.labels.tolist(), 0, pool=self.pool)
        payload, meta = bundle({"y": to_part(enc)})
        return [self._reply(LABELS, h, msg.step + 1, {**meta, "key_n": format(key.n, "x")}, payload) for h in self.hosts]

    def _sums(self, msg: Message) -> list[Message]:
        """A host's counts and encrypted event sums -> its bins' merges, WoE and IV terms."""
        expect(msg, SUMS)
        host = msg.sender
        if host not in self.hosts or host in self.host_decisions or self.keypair is None:
            raise ProtocolError(f"{msg.describe()}: label sums come once from each host")
        parts = unbundle(msg, ["events", "bins"])
        doc = _json_of(parts["bins"], msg)
        counts, ordered = (doc.get("counts"), doc.get("ordered")) if isinstance(doc, dict) else (None, None)
        if not (isinstance(counts, list) and isinstance(ordered, list) and len(counts) == len(ordered)
                and all(isinstance(c, list) and c and all(isinstance(v, int) and v >= 0 for v in c) for c in counts)
                and all(isinstance(o, int) and 0 <= o <= len(c) for o, c in zip(ordered, counts))):
            raise ProtocolError(f"{msg.describe()}: counts must list each feature's bin counts, ordered its value bins")
        try:
            self.binning.check_counts(counts, msg.describe())
        except FedCreditError as exc:
            raise ProtocolError(str(exc)) from None
        total = sum(len(c) for c in counts)
        events = self._open(parts["events"], total, msg) if total else []
        decisions, at = [], 0
        for j, (c, o) in enumerate(zip(counts, ordered)):
            e = np.asarray(events[at:at + len(c)], dtype=np.int64)
            at += len(c)
            if np.any(e < 0) or np.any(e > np.asarray(c)) or e.sum() != self.labels.sum():
                raise ProtocolError(f"{msg.describe()}: feature {j}: label sums {e.tolist()} do not fit counts {c}")
            decisions.append(decide(e, c, o, self.binning.settings))
        self.host_decisions[host] = decisions
        doc = [{"map": d.bin_map, "woe": d.woe, "iv": d.iv_terms, "trend": d.trend} for d in decisions]
        if len(self.host_decisions) == len(self.hosts):
            self.keypair = None  # every host is answered: the key has no further use
        payload, meta = bundle({"features": _json_part(doc)})
        return [self._reply(BINS, host, msg.step + 1, meta, payload)]

    def _open(self, part: tuple[bytes, dict], total: int, msg: Message) -> list[int]:
        packed = packed_part(self.keypair.public_key, part, total, msg, key_owner="the bank")
        return packed.packer.unpack_ints(self.keypair.decrypt_ints(packed.inner, pool=self.pool), total)

    def _selected(self, msg: Message) -> list[Message]:
        expect(msg, SELECTED)
        host = msg.sender
        rows = _json_of(unbundle(msg, ["features"])["features"], msg)
        decided = self.host_decisions.get(host)
        if decided is None or host in self.host_tables:
            raise ProtocolError(f"{msg.describe()}: a host's selection comes once, after its bins")
        if not isinstance(rows, list) or len(rows) != len(decided) or not all(
                isinstance(r, dict) and set(r) == {"feature", "kept", "reason"} and isinstance(r["kept"], bool)
                and isinstance(r["feature"], str) and isinstance(r["reason"], str) for r in rows):
            raise ProtocolError(f"{msg.describe()}: selection must give feature, kept and reason for each of "
                                f"{len(decided)} features")
        self.host_tables[host] = pd.DataFrame(
            [{"feature": r["feature"], "iv": d.iv, "bins": len(d.woe), "trend": d.trend, "kept": r["kept"],
              "reason": r["reason"]} for r, d in zip(rows, decided)],
            columns=["feature", "iv", "bins", "trend", "kept", "reason"])
        return []


class WoeHost(WoeParty):
    """A feature holder: counts and encrypted label sums per bin out, the bank's merges and WoE in."""

    def __init__(self, role: str, prep: FeaturePrep, train_frame: pd.DataFrame, publish_names: bool = False, pool=None):
        super().__init__(role, prep, train_frame, pool)
        self.publish_names = publish_names
        self._sent = False

    def _handlers(self):
        return {START: self._start, LABELS: self._labels, BINS: self._bins}

    def _labels(self, msg: Message) -> list[Message]:
        expect(msg, LABELS, sender=BANK)
        if self._sent:
            raise ProtocolError(f"{msg.describe()}: labels come once")
        try:
            key = PaillierPublicKey(int(msg.meta["key_n"], 16), backend=self.cfg.backend)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed key ({exc})") from None
        if key.bits < self.cfg.key_bits:
            raise ProtocolError(f"{msg.describe()}: a {key.bits}-bit key, the job asks for {self.cfg.key_bits} bits")
        b = self.binning
        enc_y = vector_part(key, unbundle(msg, ["y"])["y"], b.rows, msg, scale_bits=0)
        n_bins = [s.n_bins() for s in b.prep.specs]
        if n_bins:
            sums = enc_y.grouped_sum(b.bins, n_bins, pool=self.pool)
            width = sums.shape[1]
            events = sums.take([j * width + k for j, nb in enumerate(n_bins) for k in range(nb)])
            part = to_part(Packer(key, EVENT_SLOT_BITS).pack(events, pool=self.pool))
        else:
            part = (b"", {})
        payload, meta = bundle({"events": part, "bins": _json_part({"counts": b.counts(), "ordered": b.ordered()})})
        self._sent = True
        return [self._reply(SUMS, BANK, msg.step + 1, meta, payload)]

    def _bins(self, msg: Message) -> list[Message]:
        expect(msg, BINS, sender=BANK)
        if not self._sent or self.decided:
            raise ProtocolError(f"{msg.describe()}: bins come once, after this host's label sums")
        docs = _json_of(unbundle(msg, ["features"])["features"], msg)
        try:
            decisions = [BinDecision([int(v) for v in d["map"]], [float(v) for v in d["woe"]],
                                     [float(v) for v in d["iv"]], str(d["trend"])) for d in docs]
            self.binning.adopt(decisions)
        except (KeyError, TypeError, ValueError, FedCreditError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed bin decisions ({exc})") from None
        self._finish()
        table = self.binning.selection_table()
        rows = [{"feature": name if self.publish_names else f"feature {j}", "kept": bool(kept), "reason": reason}
                for j, (name, kept, reason) in enumerate(zip(table.feature, table.kept, table.reason))]
        if not self.publish_names:  # a reason may quote another feature's name
            rows = [{**r, "reason": _anonymous(r["reason"], list(table.feature))} for r in rows]
        payload, meta = bundle({"features": _json_part(rows)})
        return [self._reply(SELECTED, BANK, msg.step + 1, meta, payload)]


def _json_part(obj) -> tuple[bytes, dict]:
    """Per-feature tables travel in the (sealed) payload: hundreds of features outgrow a message header."""
    return json.dumps(obj, separators=(",", ":")).encode(), {}


def _json_of(part: tuple[bytes, dict], msg: Message):
    try:
        return json.loads(part[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{msg.describe()}: per-feature table is not valid JSON ({exc})") from None


def _anonymous(reason: str, names: list[str]) -> str:
    for j, name in sorted(enumerate(names), key=lambda x: -len(x[1])):
        reason = reason.replace(name, f"feature {j}")
    return reason


def woe_party(role: str, prep: FeaturePrep, train_frame: pd.DataFrame, labels=None, publish_names: bool = False,
              pool=None, deployment: bool | None = None) -> WoeParty:
    """The bank's or a host's end, with the same refusals for both."""
    if (role == BANK) != (labels is not None):
        raise ProtocolError(f"{role}: only the bank holds labels, and it needs them for WoE")
    if role == BANK:
        return WoeBank(role, prep, train_frame, labels, pool=pool, deployment=deployment)
    return WoeHost(role, prep, train_frame, publish_names, pool=pool)
