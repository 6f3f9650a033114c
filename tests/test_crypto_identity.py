"""Signing identities: sign/verify, failures, key files with 0600 permissions."""

import json
import os
import stat

import pytest

from fedcredit.crypto import CryptoError, Identity, KeyFileError, PublicIdentity, SignatureError


@pytest.fixture(scope="module")
def coord():
    return Identity.generate("coordinator")


def test_sign_verify(coord):
    sig = coord.sign(b"limits v1")
    coord.public.verify(b"limits v1", sig)
    with pytest.raises(SignatureError, match="'coordinator'"):
        coord.public.verify(b"limits v2", sig)
    with pytest.raises(SignatureError, match="does not verify"):
        Identity.generate("coordinator").public.verify(b"limits v1", sig)
    with pytest.raises(SignatureError, match="malformed"):
        coord.public.verify(b"limits v1", sig[:-1])
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(SignatureError):
        coord.public.verify(b"limits v1", bad, what="published limits")


def test_files_roundtrip_0600(coord, tmp_path):
    priv, pub = tmp_path / "id" / "coordinator.key", tmp_path / "id" / "coordinator.pub.json"
    coord.save(priv, public_path=pub)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    loaded, public = Identity.load(priv), PublicIdentity.load(pub)
    assert loaded.fingerprint == coord.fingerprint == public.fingerprint
    assert public == coord.public
    public.verify(b"m", loaded.sign(b"m"))
    assert "ed25519" in json.loads(pub.read_text()) and len(coord.fingerprint) == 64


def test_key_file_checks(coord, tmp_path):
    priv = tmp_path / "c.key"
    coord.save(priv)
    os.chmod(priv, 0o640)
    with pytest.raises(KeyFileError, match="readable by others"):
        Identity.load(priv)
    pub = tmp_path / "c.json"
    coord.public.save(pub)
    doc = json.loads(pub.read_text())
    doc["name"] = "bank"
    pub.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="fingerprint"):
        PublicIdentity.load(pub)
    doc["ed25519"] = "AAAA"
    pub.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="32 bytes"):
        PublicIdentity.load(pub)


def test_names_validated():
    for bad in ["", "Bank", "a b", "x" * 64, "../etc"]:
        with pytest.raises(CryptoError, match="identity name"):
            Identity.generate(bad)
