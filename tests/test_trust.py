"""Which app bundles and submissions a node trusts (``fedcredit.flower.trust``), and the gates around them.

Bundles are built the way ``flwr run`` builds them (``flwr.cli.build.build_fab_from_disk``)
from a copy of this fedcredit's app folder, so the installed-release check is tested on
the real thing: the copy matches, one changed line does not, an added file does not; a
publisher's signature covers exactly the signed files. Run configs: signed, unsigned,
unknown key, altered, another bundle, stale. The SuperLink's peer gate and the node
launcher's refusals are checked without starting Flower.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity, PublicIdentity
from fedcredit.flower import trust
from fedcredit.flower.submit import app_dir

ROOT = app_dir()


def _copy_app(dest: Path) -> Path:
    """The app folder as ``flwr run`` sees it: pyproject.toml and the fedcredit package (no caches)."""
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(ROOT / "fedcredit", dest / "fedcredit", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _fab(app: Path) -> bytes:
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(app)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    return _copy_app(tmp_path_factory.mktemp("app") / "app")


@pytest.fixture(scope="module")
def publisher(tmp_path_factory) -> tuple[Identity, PublicIdentity]:
    private, public = trust.make_key(tmp_path_factory.mktemp("keys"), "acme")
    return Identity.load(private), PublicIdentity.load(public)


def _tamper(app: Path, tmp: Path, name: str = "tampered") -> Path:
    copy = tmp / name
    shutil.copytree(app, copy)
    relay = copy / "fedcredit" / "flower" / "relay_app.py"
    relay.write_text(relay.read_text().replace("SERVICE_WAIT_S = 60.0", "SERVICE_WAIT_S = 61.0"))
    return copy


def test_the_installed_release_is_trusted(app):
    verdict = trust.verify_bundle(_fab(app))
    assert verdict.trusted, verdict.reason
    assert "installed fedcredit" in verdict.reason


def test_a_changed_line_is_refused_naming_the_file(app, tmp_path):
    verdict = trust.verify_bundle(_fab(_tamper(app, tmp_path)))
    assert not verdict.trusted
    assert "fedcredit/flower/relay_app.py differs from this node's fedcredit" in verdict.reason
    assert "sha256" in verdict.reason


def test_an_extra_or_missing_file_and_other_components_are_refused(app, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(app, extra)
    (extra / "fedcredit" / "payload.py").write_text("import os\n")
    assert "fedcredit/payload.py is not part of" in trust.verify_bundle(_fab(extra)).reason
    missing = tmp_path / "missing"
    shutil.copytree(app, missing)
    (missing / "fedcredit" / "flower" / "simulation.py").unlink()
    assert "simulation.py of this node's fedcredit" in trust.verify_bundle(_fab(missing)).reason
    other = tmp_path / "other"
    shutil.copytree(app, other)
    py = other / "pyproject.toml"
    py.write_text(py.read_text().replace("fedcredit.flower.relay_app:app", "fedcredit.flower.client_app:app"))
    assert "names the apps" in trust.verify_bundle(_fab(other)).reason


def test_a_signed_bundle_is_trusted_with_the_pinned_key_only(app, tmp_path, publisher):
    private, public = publisher
    signed = _tamper(app, tmp_path, "signed")  # a publisher's release: different code, signed
    trust.sign_app(signed, private)
    fab = _fab(signed)
    assert trust.SIGNATURE_FILE in trust.bundle_files(fab)
    verdict = trust.verify_bundle(fab, [public])
    assert verdict.trusted and "acme" in verdict.reason, verdict.reason
    stranger = Identity.generate("acme").public  # same name, another key
    assert "a publisher this party does not pin" in trust.verify_bundle(fab, [stranger]).reason
    assert not trust.verify_bundle(fab, []).trusted
    # one more change after signing: refused, naming the file
    relay = signed / "fedcredit" / "flower" / "relay_app.py"
    relay.write_text(relay.read_text() + "# after signing\n")
    late = trust.verify_bundle(_fab(signed), [public])
    assert not late.trusted and "fedcredit/flower/relay_app.py is not as 'acme' signed it" in late.reason


def test_a_forged_signature_is_refused(app, tmp_path, publisher):
    import json

    private, public = publisher
    signed = _copy_app(tmp_path / "forged")
    sig = trust.sign_app(signed, private)
    doc = json.loads(sig.read_text())
    doc["files"]["fedcredit/flower/relay_app.py"] = "0" * 64  # claims another file under the same signature
    sig.write_text(json.dumps(doc))
    verdict = trust.verify_bundle(_fab(signed), [public])
    assert not verdict.trusted and "does not verify" in verdict.reason


# ---- the submitter's signature ----------------------------------------------------------------

CFG = {"roles": "bank,tax,utilities", "seed": 42, "l2": 0.001, "bank-only-baseline": True, "out": "/srv/run-1"}
FAB = "ab" * 32


@pytest.fixture(scope="module")
def operator() -> Identity:
    return Identity.generate("operator")


def _signed(identity: Identity, cfg: dict = CFG, fab: str = FAB, now: float | None = None) -> dict:
    return {**cfg, trust.SIGNATURE_KEY: trust.sign_run_config(cfg, fab, identity, now=now)}


def test_a_signed_run_config_names_its_submitter(operator):
    who = trust.verify_run_config(_signed(operator), FAB, [Identity.generate("bank").public, operator.public])
    assert who["name"] == "operator" and who["fingerprint"] == operator.fingerprint


def test_unsigned_unknown_altered_other_bundle_and_stale_are_refused(operator):
    keys = [operator.public]
    with pytest.raises(trust.Refused, match="unauthenticated submission refused"):
        trust.verify_run_config(dict(CFG), FAB, keys)
    with pytest.raises(trust.Refused, match="not a submitter registered here"):
        trust.verify_run_config(_signed(Identity.generate("operator")), FAB, keys)
    altered = {**_signed(operator), "out": "/tmp/elsewhere"}
    with pytest.raises(trust.Refused, match="not what 'operator' signed"):
        trust.verify_run_config(altered, FAB, keys)
    added = {**_signed(operator), "policy": "x"}
    with pytest.raises(trust.Refused, match="not what 'operator' signed"):
        trust.verify_run_config(added, FAB, keys)
    with pytest.raises(trust.Refused, match="signed it for app bundle"):
        trust.verify_run_config(_signed(operator), "cd" * 32, keys)
    with pytest.raises(trust.Refused, match="h ago"):
        trust.verify_run_config(_signed(operator, now=time.time() - 2 * trust.MAX_AGE_S), FAB, keys)
    with pytest.raises(trust.Refused, match="not a fedcredit submitter signature"):
        trust.verify_run_config({**CFG, trust.SIGNATURE_KEY: "{}"}, FAB, keys)


def test_submit_signs_every_key_of_the_app(tmp_path, app):
    import tomllib

    from fedcredit.flower.submit import app_defaults, signed_run_config

    key, pub = trust.make_key(tmp_path, "operator")
    text = signed_run_config({"seed": 7, "out": "/srv/x"}, app, key)
    cfg = tomllib.loads(text)
    assert set(cfg) == set(app_defaults(app)) and cfg["seed"] == 7
    who = trust.verify_run_config(cfg, trust.fab_hash(app), [PublicIdentity.load(pub)])
    assert who["name"] == "operator"
    assert trust.SIGNATURE_KEY not in tomllib.loads(signed_run_config({"seed": 7}, app, None))
    with pytest.raises(FedCreditError, match="not in the app's"):
        signed_run_config({"no-such-key": 1}, app, None)


# ---- the gates ---------------------------------------------------------------------------------

def test_the_control_gate_answers_nodes_on_the_fleet_api_only():
    from fedcredit.deploy.superlink import ControlGate, parse_networks

    seen, logged = [], []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    gate = ControlGate(app, parse_networks("127.0.0.0/8,::1,10.213.5.10"), log=logged.append)

    def request(path: str, peer: str) -> list:
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(gate({"type": "http", "path": path, "method": "POST", "client": (peer, 4242)}, None, send))
        return sent

    assert request("/v1/fleet/pull-messages", "10.213.5.11") == [] and request("/health", "10.213.5.11") == []
    refused = request("/v1/control/start-run", "10.213.5.11")
    assert refused[0]["status"] == 403 and "10.213.5.11" in logged[-1]
    assert request("/v1/runtime/pull-task-input", "10.213.5.12")[0]["status"] == 403
    assert request("/v1/control/start-run", "127.0.0.1") == [] and request("/v1/runtime/x", "10.213.5.10") == []
    assert request("/v1/control/x", "::ffff:127.0.0.1") == []
    assert seen == ["/v1/fleet/pull-messages", "/health", "/v1/control/start-run", "/v1/runtime/x", "/v1/control/x"]
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks("10.0.0.0/8,somewhere")


def test_the_node_launcher_never_runs_flowers_own_clientapp(capsys):
    from fedcredit.deploy.clientapp import main

    with pytest.raises(SystemExit) as exit_:
        main(["--fedcredit-node-work", "/nonexistent", "--runtime-api-address", "127.0.0.1:1", "--token", "ab" * 8,
              "--allow-runtime-dependency-installation"])
    assert exit_.value.code == 2 and "refusing the task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--runtime-api-address", "127.0.0.1:1", "--token", "ab" * 8])  # no node service named
    assert exit_.value.code == 2


def test_a_deployed_serverapp_needs_the_gate():
    from fedcredit.flower.serverapp_gate import verified_submitter

    with pytest.raises(FedCreditError, match="flwr-serverapp gate"):
        verified_submitter()
