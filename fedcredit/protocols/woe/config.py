"""What every party of federated WoE/IV binning shares: the message kinds and the settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.scoring.woe_binning import WoeSettings

BANK = "bank"
START, LABELS, SUMS, BINS, SELECTED = "woe.start", "woe.labels", "woe.sums", "woe.bins", "woe.selected"
KINDS = (START, LABELS, SUMS, BINS, SELECTED)
EVENT_SLOT_BITS = 48  # a bin's event count (< 2^40 rows) in a packed slot, with room for the sign


@dataclass(frozen=True)
class WoeConfig:
    """Binning and selection settings (``WoeSettings``) plus the bank's Paillier key size (sent in ``woe.start``)."""

    settings: WoeSettings = WoeSettings()
    key_bits: int = 2048
    backend: str = "paillier"

    def __post_init__(self) -> None:
        if not isinstance(self.key_bits, int) or self.key_bits < 1024:
            raise ProtocolError("invalid WoE setting: key_bits must be an int ≥ 1024")

    def to_meta(self) -> dict:
        return {"settings": asdict(self.settings), "key_bits": self.key_bits, "backend": self.backend}

    @classmethod
    def from_meta(cls, doc: dict) -> "WoeConfig":
        try:
            return cls(WoeSettings(**doc["settings"]), int(doc["key_bits"]), str(doc["backend"]))
        except (KeyError, TypeError, ValueError, FedCreditError) as exc:
            raise ProtocolError(f"malformed WoE settings ({exc})") from None
