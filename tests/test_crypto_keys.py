"""Paillier key files: 0600 private keys, fingerprints, corrupted files rejected."""

import json
import os
import stat

import numpy as np
import pytest

from fedcredit.crypto import KeyFileError, MockBackendRefused, PaillierKeypair, PaillierPublicKey, generate_keypair


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(1024)


def test_private_key_file_is_0600_and_roundtrips(kp, tmp_path):
    priv, pub = tmp_path / "keys" / "paillier.key", tmp_path / "keys" / "paillier.pub.json"
    kp.save(priv, public_path=pub)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    loaded = PaillierKeypair.load(priv)
    pk = PaillierPublicKey.load(pub)
    assert pk == kp.public_key and pk.fingerprint == kp.public_key.fingerprint
    assert "p" not in json.loads(pub.read_text())
    v = pk.encrypt(np.array([1.25, -3.0]))
    np.testing.assert_array_equal(loaded.decrypt(v), [1.25, -3.0])


def test_fingerprint_is_sha256_hex_and_distinguishes_keys(kp):
    fp = kp.public_key.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert generate_keypair(1024).public_key.fingerprint != fp
    assert PaillierPublicKey(kp.public_key.n, backend="mock").fingerprint != fp


def test_world_readable_private_key_refused(kp, tmp_path):
    path = tmp_path / "k.key"
    kp.save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        PaillierKeypair.load(path)


def test_corrupted_key_files_rejected(kp, tmp_path):
    pub = tmp_path / "p.json"
    kp.public_key.save(pub)
    doc = json.loads(pub.read_text())
    doc["n"] = format(kp.public_key.n + 2, "x")
    pub.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="fingerprint"):
        PaillierPublicKey.load(pub)
    pub.write_text("{not json")
    with pytest.raises(KeyFileError, match="JSON"):
        PaillierPublicKey.load(pub)
    pub.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(KeyFileError, match="expected format"):
        PaillierPublicKey.load(pub)
    with pytest.raises(KeyFileError, match="cannot read"):
        PaillierPublicKey.load(tmp_path / "missing.json")
    priv = tmp_path / "k.key"
    kp.save(priv)
    doc = json.loads(priv.read_text())
    doc["p"] = format(kp.p + 2, "x")
    priv.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="do not match"):
        PaillierKeypair.load(priv)


def test_mock_key_file_refused_in_deployment(tmp_path):
    kp = generate_keypair(512, backend="mock")
    kp.save(tmp_path / "m.key", public_path=tmp_path / "m.json")
    with pytest.raises(MockBackendRefused):
        PaillierPublicKey.load(tmp_path / "m.json", deployment=True)
    with pytest.raises(MockBackendRefused):
        PaillierKeypair.load(tmp_path / "m.key", deployment=True)
    assert PaillierPublicKey.load(tmp_path / "m.json", deployment=False).backend == "mock"
