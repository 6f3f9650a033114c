"""Per-bank bearer tokens for the query endpoint: the coordinator keeps only their SHA-256 digests.

``fedcredit coordinator query-token BANK --state STATE`` makes a token, writes it once
to a 0600 file for the bank and appends its digest to ``STATE/query-tokens.json``
(``{"tokens": [{"bank", "sha256", "created"}]}``). A bank may hold several tokens
(rotation: make a new one, then remove the old digest from the file). A request's
token is hashed and compared with every digest in constant time, so neither a stolen
digest file nor response timing yields a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError

FILE_NAME = "query-tokens.json"
BANK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # node names (fedcredit.deploy.certs)
TOKEN_BYTES = 32


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenDigests:
    """The known tokens' digests, by bank; ``source`` names the file in messages."""

    entries: tuple[tuple[str, str], ...]  # (bank, sha256 hex)
    source: str

    @classmethod
    def load(cls, path: Path) -> "TokenDigests":
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise FedCreditError(f"{path}: no query tokens yet (make one with: fedcredit coordinator query-token "
                                 f"BANK --state {path.parent})") from None
        except (OSError, ValueError) as exc:
            raise FedCreditError(f"{path}: not a query-token file ({exc})") from None
        rows = doc.get("tokens") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            raise FedCreditError(f"{path}: expected {{\"tokens\": [{{\"bank\", \"sha256\"}}, ...]}}")
        entries = []
        for i, row in enumerate(rows):
            bank, sha = (row.get("bank"), row.get("sha256")) if isinstance(row, dict) else (None, None)
            if not (isinstance(bank, str) and BANK_RE.match(bank) and isinstance(sha, str)
                    and re.fullmatch(r"[0-9a-f]{64}", sha)):
                raise FedCreditError(f"{path}: tokens[{i}] must hold a bank name and a 64-hex-digit sha256")
            entries.append((bank, sha))
        return cls(tuple(entries), str(path))

    def bank_of(self, token: str) -> str | None:
        """The bank a presented token belongs to, or None; every digest is compared (constant time each)."""
        presented = digest(token)
        found = None
        for bank, sha in self.entries:
            if hmac.compare_digest(presented, sha):
                found = bank
        return found

    def banks(self) -> list[str]:
        return sorted({bank for bank, _ in self.entries})


def new_token(bank: str, state: Path, out: Path | None = None) -> tuple[str, Path, Path]:
    """A new token for ``bank``: written once to ``out`` (default ``STATE/query-tokens/BANK.token``, 0600),
    its digest added to ``STATE/query-tokens.json``. Returns (token, token file, digest file)."""
    if not BANK_RE.match(bank):
        raise FedCreditError(f"bank name {bank!r} must be a node name (lower-case letters, digits, '-' or '_')")
    state = Path(state)
    if not state.is_dir():
        raise FedCreditError(f"--state {state} is not a folder (the coordinator's state folder)")
    digests = state / FILE_NAME
    rows = []
    if digests.exists():
        TokenDigests.load(digests)  # refuse to extend a damaged file
        rows = json.loads(digests.read_text())["tokens"]
    out = Path(out) if out else state / "query-tokens" / f"{bank}.token"
    if out.exists():
        raise FedCreditError(f"{out} exists: a token file is written once (choose another --out or remove it)")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    atomic_write_bytes(out, (token + "\n").encode(), mode=0o600)
    rows.append({"bank": bank, "sha256": digest(token), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    atomic_write_bytes(digests, (json.dumps({"tokens": rows}, indent=2) + "\n").encode(), mode=0o600)
    return token, out, digests


def read_token(path: Path) -> str:
    """A bank's token from its token file (the federation's ``query_token``)."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise FedCreditError(f"query token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise FedCreditError(f"query token file {path} does not hold one token")
    return token
