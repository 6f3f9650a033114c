"""``flwr-serverapp`` for fedcredit's SuperLink: the job's ServerApp, from the installed fedcredit, for signed jobs only.

Flower 1.41's SuperLink starts ``flwr-serverapp --runtime-api-address … --token …`` (from
PATH) for every run; Flower's own runner installs the run's app bundle and imports its
ServerApp, so whoever submits a bundle runs code on the coordinator's machine.
``fedcredit coordinator start`` puts a launcher for this module first on the SuperLink's
PATH. It runs Flower's runner with four of its steps replaced:

* the bundle is not installed: its trust verdict (``fedcredit.flower.trust``: this
  machine's release, or signed by a publisher in ``FEDCREDIT_PUBLISHERS``) is printed for
  whoever watches the run, and the nodes decide for themselves;
* the ServerApp is fedcredit's installed one (``fedcredit.flower.deployment``), whatever
  the bundle's pyproject names;
* before it starts, the run config must carry a valid signature by a submitter registered
  here (``FEDCREDIT_SUBMITTERS``: a folder of ``NAME.pub`` files, normally
  ``CERTS/submitters``), for this bundle, recent, and not a replay of another run's
  signature (``FEDCREDIT_STATE/submissions.jsonl`` remembers each nonce's run);
  otherwise the run fails with "fedcredit refused this job: …" before any job code runs;
* runtime dependency installation is refused.

It patches private details of flwr 1.41 (``flwr.superlink.runtime.run_serverapp``) and
refuses to run on any other Flower version (fail closed).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.flower import trust

SUBMITTERS_ENV, PUBLISHERS_ENV, STATE_ENV = "FEDCREDIT_SUBMITTERS", "FEDCREDIT_PUBLISHERS", "FEDCREDIT_STATE"
REFUSED = "fedcredit refused this job: "
_PATCHED = ("install_from_fab", "get_project_dir", "get_project_config", "get_fused_config_from_dir")
_verified: dict = {}


def verified_submitter() -> dict:
    """The submitter ``{name, fingerprint}`` this process verified for its run; raises when the ServerApp was not
    started through this gate (so no job runs unauthenticated)."""
    if not _verified:
        raise FedCreditError("this ServerApp runs only under fedcredit's flwr-serverapp gate, which checks the "
                             "submitter's signature ('fedcredit coordinator start' installs it)")
    return {"name": _verified["name"], "fingerprint": _verified["fingerprint"]}


def _remember_nonce(state: Path | None, nonce: str, run_id: int) -> None:
    """Refuse a signature already used for another run (a replayed submission); a restarted run may reuse its own."""
    if state is None:
        return
    path = Path(state) / "submissions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        for line in fh:
            seen = json.loads(line)
            if seen.get("nonce") == nonce and seen.get("run_id") != run_id:
                raise trust.Refused(f"submission refused: this signature was already used for Flower run "
                                    f"{seen.get('run_id')} (a replayed submission)")
        fh.write(json.dumps({"nonce": nonce, "run_id": run_id}) + "\n")


def install(runner, submitters: list, publishers: list, state: Path | None = None) -> None:
    """Replace the steps of Flower's ServerApp runner module ``runner`` (see the module docstring)."""
    from flwr.common.config import flatten_dict, fuse_dicts, get_fab_config

    seen: dict = {}

    def install_from_fab(content: bytes, *args, **kwargs):
        seen["fab"] = content
        verdict = trust.verify_bundle(content, publishers)
        print(f"fedcredit: app bundle {hashlib.sha256(content).hexdigest()[:16]}…: "
              + (f"trusted ({verdict.reason})" if verdict.trusted else
                 f"not trusted here ({verdict.reason}); the coordinator runs its installed fedcredit and each node "
                 "decides for itself"), flush=True)

    def get_project_dir(*_args, **_kwargs) -> Path:
        import fedcredit

        return Path(fedcredit.__file__).resolve().parents[1]

    def get_project_config(_path) -> dict:
        return {"tool": {"flwr": {"app": {"components": dict(trust.COMPONENTS)}}}}

    def get_fused_config_from_dir(_path, override_config) -> dict:
        defaults = flatten_dict(get_fab_config(seen["fab"])["tool"]["flwr"]["app"].get("config", {}))
        cfg = fuse_dicts(defaults, override_config)
        try:
            fab_sha = hashlib.sha256(seen["fab"]).hexdigest()
            who = trust.verify_run_config(dict(cfg), fab_sha, submitters)
            _remember_nonce(state, who["nonce"], int(seen.get("run_id", -1)))
        except trust.Refused as exc:
            print(REFUSED + str(exc), flush=True)
            raise FedCreditError(REFUSED + str(exc)) from None
        _verified.update(who)
        print(f"fedcredit: job submitted by {who['name']} (key {who['fingerprint'][:16]}…), signature verified",
              flush=True)
        return cfg

    original_run_from_proto = runner.run_from_proto

    def run_from_proto(proto):
        run = original_run_from_proto(proto)
        seen["run_id"] = run.run_id
        return run

    for name, value in (("install_from_fab", install_from_fab), ("get_project_dir", get_project_dir),
                        ("get_project_config", get_project_config),
                        ("get_fused_config_from_dir", get_fused_config_from_dir), ("run_from_proto", run_from_proto)):
        setattr(runner, name, value)


def _fail(text: str) -> int:
    """Refuse the run before Flower's runner starts: on stderr and in ``FEDCREDIT_STATE/serverapp-gate.log`` (the
    SuperExec discards a ServerApp process's own output)."""
    line = f"fedcredit flwr-serverapp: refusing the run: {text}"
    print(line, file=sys.stderr, flush=True)
    if os.environ.get(STATE_ENV):
        with open(Path(os.environ[STATE_ENV]) / "serverapp-gate.log", "a") as fh:
            fh.write(line + "\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    from fedcredit.deploy.supernode import flwr_141

    argv = list(sys.argv[1:] if argv is None else argv)
    if not flwr_141():
        return _fail("this gate supports flwr 1.41 only")
    if "--allow-runtime-dependency-installation" in argv:
        return _fail("runtime dependency installation is off in fedcredit")
    import importlib

    runner = importlib.import_module("flwr.superlink.runtime.run_serverapp")  # the package exports a function of that name
    if not all(hasattr(runner, name) for name in (*_PATCHED, "run_from_proto")):
        return _fail("Flower's ServerApp runner is not laid out as in 1.41")
    try:
        folder = os.environ.get(SUBMITTERS_ENV, "")
        submitters = trust.load_keys(trust.key_files(Path(folder)) if folder else [], "submitter")
        publishers = trust.load_keys(os.environ.get(PUBLISHERS_ENV, ""), "publisher")
    except FedCreditError as exc:
        return _fail(str(exc))
    install(runner, submitters, publishers, Path(os.environ[STATE_ENV]) if os.environ.get(STATE_ENV) else None)
    import fedcredit.flower.deployment  # noqa: F401 — loaded here, so Flower's loader takes the installed module

    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    sys.argv = ["flwr-serverapp", *argv]
    flwr_serverapp()
    return 0


def write_shim(folder: Path) -> Path:
    """An executable ``flwr-serverapp`` in ``folder`` that runs this gate with this Python."""
    import shlex

    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "flwr-serverapp"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fedcredit.flower.serverapp_gate \"$@\"\n")
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":  # run as the imported module, so the ServerApp sees the submitter verified here
    from fedcredit.flower import serverapp_gate

    sys.exit(serverapp_gate.main())
