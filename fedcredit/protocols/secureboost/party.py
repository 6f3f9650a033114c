"""What the bank and a host share: their common state, the setup and saved-part fronts, dispatch, feature names.

``SbBank`` (bank.py) and ``SbHost`` (host.py) answer the rest; ``sb_party`` picks one by role.
"""

from __future__ import annotations

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, expect
from fedcredit.crypto import PaillierPublicKey
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.secureboost import shares
from fedcredit.protocols.secureboost.config import BANK, KINDS, READY, SEED, SETUP, SbConfig, TreePartyData


class SbParty(ProtocolParty):
    """A data holder in vertical SecureBoost (``SbBank``, ``SbHost``: ``sb_party`` makes one); driven by ``handle``."""

    KINDS, SETUP = KINDS, SETUP
    HOLDS_LABELS = False  # the bank's data has labels, a host's has none (a saved model needs none)

    def __init__(self, role: str, data: TreePartyData, pool=None, model: dict | None = None):
        if self.HOLDS_LABELS != (data.labels is not None) and model is None:
            raise ProtocolError(f"{role}: only the bank holds labels, and it needs them")
        self.role, self.data, self.pool = role, data, pool
        self.cfg: SbConfig | None = None
        self.run_id, self.hosts = "", []
        self.seeds: dict[str, bytes] = {}  # party -> the pair seed shared with it (membership shares, shares.py)
        self.key: PaillierPublicKey | None = None  # the bank's public key (a host's: from the bank's gradients)
        # the bank's alone, None at a host (the job reads them of any party)
        self.keypair = None
        self.scores: np.ndarray | None = None  # bank: probability of default of every aligned row
        self.model_id: str | None = None  # the training run a saved part comes from
        self.loaded = model is not None  # a saved model: predicts, is not trained further

    # -- the model: the bank's trees (leaf weights, own splits, hosts' record numbers) or a host's lookup table
    @property
    def has_model(self) -> bool:
        """A model to predict with: the bank's trees, a host's part in them (set up for a run)."""
        raise NotImplementedError

    def importance(self) -> dict:
        """Feature importance this party may see: its own features only (never sent)."""
        raise NotImplementedError

    def model_part(self) -> dict:
        """What this party keeps of the model."""
        return {"role": self.role, "model_id": self.model_id or self.run_id, **self._part()}

    def _part(self) -> dict:
        raise NotImplementedError

    def _load(self, doc: dict) -> None:
        """A saved model part (``model_part``); malformed parts are refused naming what is wrong."""
        try:
            if doc.get("role") != self.role:
                raise ValueError(f"the part belongs to {doc.get('role')!r}")
            if not isinstance(doc.get("model_id"), str) or not doc["model_id"]:
                raise ValueError("no model id (the training run it comes from)")
            self.model_id = doc["model_id"]
            self._load_part(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{self.role}: saved SecureBoost model part is malformed ({exc})") from None

    def _load_part(self, doc: dict) -> None:
        """This party's own fields of a saved part (raising KeyError, TypeError or ValueError when malformed)."""
        raise NotImplementedError

    def _specs(self):
        return getattr(self.data.prep, "specs", None)

    def _named(self, j: int) -> dict:
        """``{"name": ...}`` of own feature ``j`` for an importance entry, when the party's prep names it."""
        specs = self._specs()
        return {"name": specs[j].name} if specs is not None else {}

    def _names(self) -> list[str]:
        specs = self._specs()
        return [s.name for s in specs] if specs is not None else [f"feature {j}" for j in range(len(self.data.n_bins))]

    # -- dispatch -----------------------------------------------------------
    def _is_set_up(self) -> bool:
        return self.cfg is not None

    def _setup(self, msg: Message) -> list[Message]:
        expect(msg, SETUP, sender=COORDINATOR)
        if self.cfg is not None:
            raise ProtocolError(f"{msg.describe()}: {self.role} is already set up")
        try:
            cfg = SbConfig(**msg.meta["config"])
            parties = [str(p) for p in msg.meta["parties"]]
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed setup ({exc})") from None
        if not parties or parties[0] != BANK or self.role not in parties or len(set(parties)) != len(parties):
            raise ProtocolError(f"{msg.describe()}: parties must start with the bank and include {self.role}")
        self.cfg, self.run_id, self.hosts = cfg, msg.run_id, parties[1:]
        meta = {}
        if self.loaded:
            meta["model_id"] = self.model_id
        self._set_up(msg, meta)
        out = [self._reply(READY, COORDINATOR, msg.step + 1, meta)]
        if not self.loaded and shares.needs_seeds(self.hosts):  # relayed with the round that starts training
            for peer in shares.seed_peers(self.role, parties):
                self.seeds[peer] = shares.new_seed()
                out.append(self._reply(SEED, peer, msg.step + 1, {}, self.seeds[peer]))
        return out

    def _seed(self, msg: Message) -> list[Message]:
        """A pair seed drawn by a party before this one in the party list (once per run)."""
        expect(msg, SEED)
        parties = [BANK, *self.hosts]
        if msg.sender not in parties or self.role not in shares.seed_peers(msg.sender, parties) or msg.sender in self.seeds:
            raise ProtocolError(f"{msg.describe()}: {self.role} takes one pair seed from each party before it")
        self.seeds[msg.sender] = shares.check_seed(msg.payload, msg.sender)
        return []

    def _set_up(self, msg: Message, meta: dict) -> None:
        """What this party prepares once set up; adds what the coordinator learns to ``sb.ready``'s ``meta``."""
