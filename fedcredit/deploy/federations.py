"""Named federations: where a running federation is and which coordinator-side files a job uses.

A risk team submits many jobs to the same few federations, so the connection (SuperLink
address, CA folder) and the coordinator-side paths (node registry, output base, limit
policy, signing keys) and the submitter's own key (``submitter``: the identity file that
signs every job sent to this federation, on the submitter's machine) get a name: in the job file (``[federations.NAME]``, travelling
with the job) or in the user's federations file (``fedcredit federation add``). The job
file wins when both define a name. Relative paths are relative to the file that holds
them. See docs/deployment.md.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError

HOME_ENV = "FEDCREDIT_HOME"
FILE_NAME = "federations.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
QUERY_URL = re.compile(r"^https://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}/?$")
# paths the coordinator's ServerApp opens on the SuperLink's machine (run-config keys of the same name)
COORDINATOR_PATHS = ("registry", "out", "policy", "keys")
# a bank's online queries (docs/query.md): the endpoint's URL, the bank's token file (here), and on the
# coordinator's machine its token digests (default STATE/query-tokens.json beside the registry)
QUERY_KEYS = ("query", "query_token", "query_tokens")
KEYS = ("superlink", "certs", "submitter") + COORDINATOR_PATHS + QUERY_KEYS


@dataclass(frozen=True)
class Federation:
    """One named federation; ``source`` is the file that defines it (for messages)."""

    name: str
    superlink: str
    certs: Path
    source: str
    registry: str | None = None
    out: str | None = None
    policy: str | None = None
    keys: str | None = None
    submitter: str | None = None  # the submitter's private key file (fedcredit certs make --submitters)
    query: str | None = None         # https://HOST:PORT of the coordinator's query endpoint (fedcredit serve)
    query_token: str | None = None   # the bank's query token file, here (fedcredit coordinator query-token)
    query_tokens: str | None = None  # on the coordinator's machine: its token digests (STATE/query-tokens.json)

    def ca(self) -> Path:
        """The CA certificate that verifies the SuperLink; it must exist here, where the job is submitted."""
        ca = self.certs / "ca.pem"
        if not ca.is_file():
            raise FedCreditError(f"{self.source}: [federations.{self.name}] certs: {ca} is missing "
                                 "(copy the coordinator's ca.pem there)")
        return ca

    def coordinator_out(self, local_out: Path, bank: str = "bank") -> str:
        """The coordinator's output folder for a run of ``bank``'s whose local folder is ``local_out``: one folder
        per bank under the federation's ``out`` (``OUT/<bank>/<run>``), so banks' runs never share files."""
        name = Path(local_out).resolve().name
        return str(Path(self.out) / bank / name) if self.out else str(Path(local_out).resolve())

    def as_table(self) -> dict[str, str]:
        row = {"superlink": self.superlink, "certs": str(self.certs)}
        row.update({k: getattr(self, k) for k in ("submitter", *COORDINATOR_PATHS, *QUERY_KEYS) if getattr(self, k)})
        return row


def home() -> Path:
    """fedcredit's per-user folder: ``$FEDCREDIT_HOME``, else ``$XDG_CONFIG_HOME/fedcredit``, else ``~/.config/fedcredit``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "fedcredit"


def user_file() -> Path:
    return home() / FILE_NAME


def _split_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, got {address!r}")


def parse(name: str, table, source: str, base: Path) -> Federation:
    """Check one ``[federations.NAME]`` table; relative paths are resolved against ``base``."""
    where = f"{source}: [federations.{name}]"
    if not NAME_RE.match(name):
        raise FedCreditError(f"{where}: a federation name is letters, digits, '.', '_' or '-' (at most 64)")
    if not isinstance(table, dict):
        raise FedCreditError(f"{where} must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise FedCreditError(f"{where}: unknown key(s) {unknown}; allowed: {list(KEYS)}")
    for key in KEYS:
        if key in table and not (isinstance(table[key], str) and table[key].strip()):
            raise FedCreditError(f"{where}: '{key}' must be a non-empty string")
    for key in ("superlink", "certs"):
        if key not in table:
            raise FedCreditError(f"{where}: '{key}' is required")
    try:
        _split_address(table["superlink"])
    except ValueError as exc:
        raise FedCreditError(f"{where}: 'superlink' {exc}") from None
    if "query" in table and not QUERY_URL.match(table["query"]):
        raise FedCreditError(f"{where}: 'query' must be https://HOST:PORT (the coordinator's query endpoint), "
                             f"got {table['query']!r}")
    paths = {k: str(_absolute(table[k], base)) for k in ("submitter", *COORDINATOR_PATHS, "query_token", "query_tokens")
             if k in table}
    return Federation(name=name, superlink=table["superlink"], certs=_absolute(table["certs"], base), source=source,
                      query=table.get("query"), **paths)


def _absolute(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(base) / path).resolve()


def parse_section(doc_section, source: str, base: Path) -> dict[str, Federation]:
    """Every federation of a file's ``federations`` section."""
    if not isinstance(doc_section, dict):
        raise FedCreditError(f"{source}: 'federations' must hold [federations.NAME] tables")
    return {name: parse(name, table, source, base) for name, table in doc_section.items()}


def load_file(path: Path | None = None) -> dict[str, Federation]:
    """The federations of the user's file (none when it does not exist yet)."""
    path = Path(path) if path else user_file()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"federations"})
    if unknown:
        raise FedCreditError(f"{path}: unknown section(s) {unknown}; expected [federations.NAME]")
    return parse_section(doc.get("federations", {}), str(path), path.parent)


def save_file(federations: dict[str, Federation], path: Path | None = None) -> Path:
    """Write the user's file atomically (0600: it names the coordinator's files); paths are stored absolute."""
    path = Path(path) if path else user_file()
    lines = ["# fedcredit federations (fedcredit federation add/list/remove); see docs/deployment.md\n"]
    for name in sorted(federations):
        lines.append(f"\n[federations.{name}]\n")
        lines += [f"{k} = {json.dumps(v)}\n" for k, v in federations[name].as_table().items()]
    return atomic_write_bytes(path, "".join(lines).encode(), mode=0o600)


def add(fed: Federation, path: Path | None = None, replace: bool = False) -> Path:
    """Add (or, with ``replace``, overwrite) a federation in the user's file."""
    known = load_file(path)
    if fed.name in known and not replace:
        raise FedCreditError(f"federation {fed.name!r} already exists in {path or user_file()} "
                             "(use --replace to overwrite it)")
    known[fed.name] = fed
    return save_file(known, path)


def remove(name: str, path: Path | None = None) -> Path:
    known = load_file(path)
    if name not in known:
        raise FedCreditError(f"no federation {name!r} in {path or user_file()}; known: {sorted(known) or 'none'}")
    del known[name]
    return save_file(known, path)


def resolve(name: str, from_job: dict[str, Federation] | None = None, path: Path | None = None) -> Federation:
    """The federation called ``name``: the job file's definition first, then the user's file."""
    from_job = from_job or {}
    if name in from_job:
        return from_job[name]
    known = load_file(path)
    if name in known:
        return known[name]
    listed = [f"{n} ({f.source})" for n, f in sorted({**known, **from_job}.items())]
    raise FedCreditError(f"unknown federation {name!r}; known: {', '.join(listed) if listed else 'none'} "
                         f"(define it with 'fedcredit federation add {name} --superlink HOST:PORT --certs DIR' "
                         "or in the job file as [federations." + name + "])")
