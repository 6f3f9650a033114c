"""Test certificates for a federation: a CA, the SuperLink's TLS certificate, one authentication key per node.

Layout of the certificate folder (``fedcredit certs make --out DIR``)::

    DIR/ca.pem, ca.key                 test CA (ca.key 0600; keep it off the nodes)
    DIR/superlink.pem, superlink.key   the SuperLink's TLS certificate (SAN = host) and key (0600)
    DIR/nodes/<role>.key               the node's SuperNode authentication key (EC P-384, OpenSSH, 0600)
    DIR/nodes/<role>.pub               its public key (OpenSSH), registered at the SuperLink

Flower 1.41 reads the node keys with ``load_ssh_private_key``/``load_ssh_public_key`` and
accepts NIST curves only (``flwr supernode register``), hence EC P-384 in OpenSSH format.
Each node only needs ``ca.pem`` and its own ``nodes/<role>.key``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError

ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VALID_DAYS = 365


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcredit test federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_node_key(out: Path, role: str) -> tuple[Path, Path]:
    """A SuperNode authentication key pair for ``role``: ``nodes/<role>.key`` (0600) and ``.pub``."""
    if not ROLE_RE.match(role):
        raise FedCreditError(f"node name {role!r} must be lower-case letters, digits, '-' or '_' (at most 32)")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    priv_path = atomic_write_bytes(Path(out) / "nodes" / f"{role}.key", private, mode=0o600)
    pub_path = atomic_write_bytes(Path(out) / "nodes" / f"{role}.pub", public + f" fedcredit-{role}\n".encode(),
                                  mode=0o644)
    return priv_path, pub_path


def make_certs(out: Path, host: str = "127.0.0.1", nodes: list[str] | None = None, *, days: int = VALID_DAYS,
               overwrite: bool = False) -> dict[str, Path]:
    """Write a test CA, the SuperLink certificate for ``host`` and one key pair per node into ``out``."""
    out = Path(out)
    nodes = list(nodes if nodes is not None else ["bank", "tax", "utilities"])
    if len(set(nodes)) != len(nodes):
        raise FedCreditError(f"node names must be unique, got {nodes}")
    if (out / "ca.key").exists() and not overwrite:
        raise FedCreditError(f"{out} already holds a CA (ca.key); choose another folder or remove it first")
    now = dt.datetime.now(dt.timezone.utc)
    before, after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("fedcredit test CA")).issuer_name(_name("fedcredit test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(before).not_valid_after(after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA384()))

    srv_key = ec.generate_private_key(ec.SECP384R1())
    srv_cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
                .public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(before).not_valid_after(after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA384()))

    paths = {
        "ca_key": atomic_write_bytes(out / "ca.key", _pem_key(ca_key), mode=0o600),
        "ca": atomic_write_bytes(out / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644),
        "superlink_key": atomic_write_bytes(out / "superlink.key", _pem_key(srv_key), mode=0o600),
        "superlink": atomic_write_bytes(out / "superlink.pem", srv_cert.public_bytes(serialization.Encoding.PEM),
                                        mode=0o644),
    }
    for role in nodes:
        paths[f"{role}_key"], paths[f"{role}_pub"] = make_node_key(out, role)
    return paths


def add_node_keys(out: Path, nodes: list[str]) -> dict[str, Path]:
    """Key pairs for nodes joining an existing federation (a second bank, a new host): ``out`` must hold the
    federation's CA (``certs make``); an existing node's key is never replaced."""
    out = Path(out)
    if not (out / "ca.pem").is_file():
        raise FedCreditError(f"{out} holds no ca.pem: make the federation's certificates first (fedcredit certs make)")
    taken = sorted(n for n in nodes if (out / "nodes" / f"{n}.key").exists() or (out / "nodes" / f"{n}.pub").exists())
    if taken or len(set(nodes)) != len(nodes) or not nodes:
        raise FedCreditError(f"node names must be new and unique; already in {out / 'nodes'}: {taken}, given {nodes}")
    paths = {}
    for name in nodes:
        paths[f"{name}_key"], paths[f"{name}_pub"] = make_node_key(out, name)
    return paths


def node_public_keys(certs: Path) -> dict[str, Path]:
    """The node public keys in a certificate folder, by node name."""
    return {p.stem: p for p in sorted((Path(certs) / "nodes").glob("*.pub"))}
