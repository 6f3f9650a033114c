"""Which app bundles and which job submitters a node (or the coordinator) trusts.

Whoever reaches a SuperLink's Control API can submit a Flower app bundle (FAB). A
fedcredit node answers every task with the fedcredit it has installed, never with the
bundle's code, and it takes part in a run only when the run is trusted twice over:

* **The bundle.** It is trusted when every file in it equals the node's installed
  fedcredit release (``installed_release``: a SHA-256 per ``fedcredit/**/*.py`` file; the
  bundle's ``pyproject.toml``, which Flower rewrites when it builds the bundle, must name
  fedcredit's own ServerApp and ClientApp; no file may be added or left out), or when it
  carries ``fedcredit-app.sig.json``: an Ed25519 signature, by a publisher key the node
  pins, over the exact list of the bundle's files and their hashes (``sign_app``).
  Flower's own check (``flower-supernode --trusted-entities``) accepts only bundles whose
  verifications the SuperLink got from Flower's platform (``valid_license``), so a bundle
  submitted with ``flwr run DIR`` is always refused under it: fedcredit checks instead.
* **The submitter.** The run config carries ``submitter-signature``: a registered
  submitter's Ed25519 signature over the whole run config, the bundle's SHA-256, the time
  and a nonce (``sign_run_config``); the coordinator and every node verify it against the
  submitter keys they hold (``verify_run_config``) before the job starts, and know the
  job's submitter (name and key fingerprint) from it.

Keys are fedcredit identities (``fedcredit.crypto.identity``: Ed25519 signing key, JSON
files, the fingerprint operators compare out of band).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import threading
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fedcredit
from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import CryptoError, Identity, PublicIdentity

COMPONENTS = {"serverapp": "fedcredit.flower.deployment:server_app", "clientapp": "fedcredit.flower.relay_app:app"}
SIGNATURE_FILE = "fedcredit-app.sig.json"
SIGNATURE_KEY = "submitter-signature"  # the run-config key that carries the submitter's signature
CONTENT = ".info/CONTENT"  # Flower's own file list inside a bundle (rewritten by every build)
MAX_AGE_S = 24 * 3600.0  # a submission signed longer ago than this is refused (clock skew: 5 minutes ahead)
_APP_DOMAIN = b"fedcredit app bundle v1\n"
_RUN_DOMAIN = b"fedcredit run config v1\n"


class Refused(FedCreditError):
    """A bundle or a submission this party does not trust; the message says why."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def bundle_files(fab: bytes) -> dict[str, bytes]:
    """The files of a bundle (a zip) by path, Flower's own ``.info/CONTENT`` left out."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as z:
            files = {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise Refused(f"app bundle refused: not a readable bundle ({exc})") from None
    files.pop(CONTENT, None)
    return files


def _is_release_file(rel: str) -> bool:
    """What Flower puts into a bundle from ``fedcredit/**/*.py`` (it leaves out tests and caches)."""
    name = rel.rsplit("/", 1)[-1]
    return not (name.startswith("test_") or name.endswith("_test.py") or "/__pycache__/" in rel)


_RELEASE: dict[str, tuple[str, dict[str, str]]] = {}


def installed_release(package_dir: Path | None = None) -> tuple[str, dict[str, str]]:
    """This machine's fedcredit: its version and the SHA-256 of every ``fedcredit/**/*.py`` file."""
    root = Path(package_dir or Path(fedcredit.__file__).parent).resolve()
    if str(root) not in _RELEASE:
        files = {f"fedcredit/{p.relative_to(root).as_posix()}": _sha(p.read_bytes()) for p in sorted(root.rglob("*.py"))}
        _RELEASE[str(root)] = (fedcredit.__version__, {k: v for k, v in files.items() if _is_release_file(k)})
    return _RELEASE[str(root)]


def _components(files: dict[str, bytes]) -> dict:
    try:
        doc = tomllib.loads(files["pyproject.toml"].decode())
        return doc["tool"]["flwr"]["app"]["components"]
    except (KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError):
        return {}


def check_installed(files: dict[str, bytes], release: tuple[str, dict[str, str]] | None = None) -> None:
    """Raise ``Refused`` (naming the first file that differs) unless the bundle is this node's release."""
    version, manifest = release or installed_release()
    mine = f"this node's fedcredit {version}"
    if "pyproject.toml" not in files:
        raise Refused("app bundle refused: it has no pyproject.toml")
    if _components(files) != COMPONENTS:
        raise Refused(f"app bundle refused: pyproject.toml names the apps {_components(files)}, not fedcredit's "
                      f"{COMPONENTS}")
    for path in sorted(set(files) - {"pyproject.toml"}):
        if path not in manifest:
            raise Refused(f"app bundle refused: {path} is not part of {mine}")
        digest = _sha(files[path])
        if digest != manifest[path]:
            raise Refused(f"app bundle refused: {path} differs from {mine} (sha256 {digest[:16]}…, "
                          f"expected {manifest[path][:16]}…)")
    missing = sorted(set(manifest) - set(files))
    if missing:
        raise Refused(f"app bundle refused: {missing[0]} of {mine} is missing from it"
                      + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _signed_manifest(files: dict[str, bytes]) -> dict[str, str]:
    return {path: _sha(data) for path, data in sorted(files.items()) if path != SIGNATURE_FILE}


def _signature_body(doc: dict) -> bytes:
    return _APP_DOMAIN + _canonical({k: v for k, v in doc.items() if k != "signature"})


def _signed(raw, keys: list[PublicIdentity], field: str, malformed: str) -> tuple[dict, bytes, PublicIdentity | None]:
    """A signature document (JSON with ``fingerprint``, ``signature`` and ``field``), its signature bytes and the
    key among ``keys`` it names (None when it names none of them); raises ``Refused(malformed)`` when unreadable."""
    try:
        doc = json.loads(raw)
        signature = base64.b64decode(doc["signature"], validate=True)
        if not isinstance(doc["fingerprint"], str) or doc[field] is None:
            raise ValueError(field)
        if field == "signed_at":
            doc[field] = float(doc[field])
    except (KeyError, ValueError, TypeError):
        raise Refused(malformed) from None
    return doc, signature, next((k for k in keys if k.fingerprint == doc["fingerprint"]), None)


def check_signed(files: dict[str, bytes], publishers: list[PublicIdentity]) -> PublicIdentity:
    """The pinned publisher whose signature covers exactly this bundle's files; raises ``Refused`` otherwise."""
    doc, signature, publisher = _signed(files[SIGNATURE_FILE], publishers, "files",
                                        f"app bundle refused: {SIGNATURE_FILE} is not a fedcredit app signature")
    listed, fingerprint = doc["files"], str(doc["fingerprint"])
    if publisher is None:
        raise Refused(f"app bundle refused: signed by {doc.get('publisher')!r} (key {fingerprint[:16]}…), "
                      f"a publisher this party does not pin ({len(publishers)} pinned)")
    try:
        publisher.verify(_signature_body(doc), signature, what="the app bundle's file list")
    except CryptoError as exc:
        raise Refused(f"app bundle refused: {exc}") from None
    actual = _signed_manifest(files)
    if listed != actual:
        changed = sorted(p for p in set(listed) | set(actual) if listed.get(p) != actual.get(p))
        raise Refused(f"app bundle refused: {changed[0]} is not as {publisher.name!r} signed it"
                      + (f" (and {len(changed) - 1} more files)" if len(changed) > 1 else ""))
    return publisher


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    reason: str  # why it is trusted ("the installed fedcredit 0.1.0", "signed by acme") or why not


_VERDICTS: dict[tuple[str, tuple[str, ...]], Verdict] = {}
_VERDICTS_LOCK = threading.Lock()


def verify_bundle(fab: bytes, publishers: list[PublicIdentity] = ()) -> Verdict:
    """Whether this party trusts the bundle (its own release, or signed by a pinned publisher); cached per
    bundle hash and pinned keys."""
    key = (_sha(fab), tuple(sorted(p.fingerprint for p in publishers)))
    with _VERDICTS_LOCK:
        if key in _VERDICTS:
            return _VERDICTS[key]
    try:
        files = bundle_files(fab)
        if SIGNATURE_FILE in files:
            verdict = Verdict(True, f"signed by publisher {check_signed(files, list(publishers)).name!r}")
        else:
            check_installed(files)
            verdict = Verdict(True, f"the installed fedcredit {installed_release()[0]}")
    except Refused as exc:
        verdict = Verdict(False, str(exc))
    with _VERDICTS_LOCK:
        _VERDICTS[key] = verdict
    return verdict


def load_keys(paths, what: str) -> list[PublicIdentity]:
    """Public identities from files (a list, or a comma-separated string as in a node config)."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p.strip()]
    keys = []
    for path in paths or []:
        try:
            keys.append(PublicIdentity.load(Path(path)))
        except (CryptoError, OSError, ValueError) as exc:
            raise FedCreditError(f"{what} key {path}: {exc}") from None
    return keys


def make_key(folder: Path, name: str, overwrite: bool = False) -> tuple[Path, Path]:
    """A submitter's or publisher's key pair: ``folder/NAME.key`` (private, 0600) and ``folder/NAME.pub``."""
    folder = Path(folder)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if private.exists() and not overwrite:
        raise FedCreditError(f"{private} already exists; choose another name or remove it first")
    try:
        Identity.generate(name).save(private, public)
    except CryptoError as exc:
        raise FedCreditError(f"key {name!r}: {exc}") from None
    return private, public


def key_files(folder: Path) -> list[Path]:
    """The public keys in a folder (``NAME.pub``), e.g. ``CERTS/submitters``."""
    return sorted(Path(folder).glob("*.pub"))


# ---- publishing a signed app ------------------------------------------------------------------

def _ensure_included(pyproject: Path) -> None:
    """Make the app's ``fab-include`` list the signature file, so that ``flwr run`` sends it."""
    text = pyproject.read_text()
    if SIGNATURE_FILE in text:
        return
    match = re.search(r"^fab-include\s*=\s*\[(.*?)\]", text, re.MULTILINE | re.DOTALL)
    if match is None:
        raise FedCreditError(f"{pyproject}: [tool.flwr.app] needs a fab-include list (fedcredit's lists "
                             "\"fedcredit/**/*.py\")")
    inner = match.group(1).rstrip().rstrip(",")
    pyproject.write_text(text[:match.start(1)] + f'{inner}, "{SIGNATURE_FILE}"' + text[match.end(1):])


def sign_app(app_dir: Path, publisher: Identity) -> Path:
    """Sign the app in ``app_dir`` as ``publisher``: ``fedcredit-app.sig.json`` lists every file of the bundle
    ``flwr run`` builds from it (hash per file) under an Ed25519 signature. Re-sign after any change."""
    from flwr.cli.build import build_fab_from_disk

    app_dir = Path(app_dir).resolve()
    _ensure_included(app_dir / "pyproject.toml")
    sig = app_dir / SIGNATURE_FILE
    sig.write_text("{}\n")  # the pattern must match a file while the bundle is built
    try:
        files = bundle_files(build_fab_from_disk(app_dir))
    except ValueError as exc:
        raise FedCreditError(f"{app_dir}: Flower cannot build an app bundle from it ({exc})") from None
    doc = {"format": "fedcredit-app-signature", "version": 1, "publisher": publisher.name,
           "fingerprint": publisher.fingerprint, "files": _signed_manifest(files)}
    doc["signature"] = base64.b64encode(publisher.sign(_signature_body(doc))).decode()
    sig.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return sig


def fab_hash(app_dir: Path) -> str:
    """The SHA-256 of the bundle ``flwr run APP_DIR`` submits (Flower builds it deterministically)."""
    from flwr.cli.build import build_fab_from_disk

    return _sha(build_fab_from_disk(Path(app_dir).resolve()))


# ---- the submitter's signature over a run --------------------------------------------------------

def _run_body(doc: dict, cfg: dict) -> bytes:
    config = {k: v for k, v in cfg.items() if k != SIGNATURE_KEY}
    return _RUN_DOMAIN + _canonical({**{k: v for k, v in doc.items() if k != "signature"},
                                     "config_sha256": _sha(_canonical(config))})


def sign_run_config(cfg: dict, bundle_sha256: str, submitter: Identity, now: float | None = None) -> str:
    """The ``submitter-signature`` value for the run config ``cfg`` (every key but this one) and the bundle."""
    doc = {"submitter": submitter.name, "fingerprint": submitter.fingerprint, "fab_sha256": bundle_sha256,
           "signed_at": round(time.time() if now is None else now, 3), "nonce": secrets.token_hex(16)}
    doc["signature"] = base64.b64encode(submitter.sign(_run_body(doc, cfg))).decode()
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def verify_run_config(cfg: dict, bundle_sha256: str, submitters: list[PublicIdentity], now: float | None = None,
                      max_age: float = MAX_AGE_S) -> dict:
    """The verified submitter ``{name, fingerprint, nonce, signed_at}`` of a run; raises ``Refused`` when the
    run config is unsigned, signed by a key not registered here, altered, for another bundle, or stale."""
    raw = cfg.get(SIGNATURE_KEY)
    if not raw:
        raise Refused("unauthenticated submission refused: the run config carries no submitter signature "
                      "(submit with a registered submitter key: fedcredit train --federation, docs/deployment.md)")
    doc, signature, key = _signed(str(raw), submitters, "signed_at",
                                  f"submission refused: {SIGNATURE_KEY} is not a fedcredit submitter signature")
    fingerprint, signed_at = str(doc["fingerprint"]), doc["signed_at"]
    if key is None:
        raise Refused(f"submission refused: signed by {doc.get('submitter')!r} (key {fingerprint[:16]}…), not a "
                      f"submitter registered here ({', '.join(k.name for k in submitters) or 'none registered'})")
    try:
        key.verify(_run_body(doc, cfg), signature, what="the run config")
    except CryptoError:
        raise Refused(f"submission refused: the run config is not what {key.name!r} signed (altered on the way, or "
                      "signed for another run)") from None
    if doc.get("fab_sha256") != bundle_sha256:
        raise Refused(f"submission refused: {key.name!r} signed it for app bundle {str(doc.get('fab_sha256'))[:16]}…, "
                      f"this run carries {bundle_sha256[:16]}…")
    age = (time.time() if now is None else now) - signed_at
    if not -300 <= age <= max_age:
        raise Refused(f"submission refused: signed {age / 3600:.1f} h ago (at most {max_age / 3600:.0f} h allowed)")
    return {"name": key.name, "fingerprint": key.fingerprint, "nonce": str(doc.get("nonce", "")),
            "signed_at": signed_at}
