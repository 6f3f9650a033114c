"""Submit a job to a running federation with ``flwr run``, stream its progress, and fail when the run fails.

``flwr run --stream`` exits 0 on a failed run (1.41, 1.42), so the verdict comes from
the coordinator's ``status.json`` in the output folder (written last by the ServerApp,
see ``fedcredit.flower.deployment``) and, when that folder is not readable here, from
``flwr ls --run-id``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import tomllib
from queue import Empty, Queue
from pathlib import Path

from fedcredit.deploy.processes import FEDERATION, flower_bin, flower_env, flwr_cli, write_cli_config
from fedcredit.common.errors import FedCreditError
from fedcredit.flower.deployment import STATUS
from fedcredit.flower.serverapp_gate import REFUSED

RUN_ID_RE = re.compile(r"run\s+(?:id\s+)?(\d{3,})", re.IGNORECASE)


def app_dir() -> Path:
    """The Flower app to submit: the fedcredit project folder (its pyproject.toml has [tool.flwr.app])."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.exists() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FedCreditError(f"no Flower app at {root}: run from a fedcredit source checkout "
                             "(pyproject.toml with [tool.flwr.app])")
    return root


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def app_defaults(app: Path) -> dict:
    """The app's run-config keys and their defaults (``[tool.flwr.app.config]`` of its pyproject.toml)."""
    return tomllib.loads((Path(app) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def signed_run_config(overrides: dict, app: Path, submitter_key: Path | None) -> str:
    """The run-config file's text: every key of the app (defaults filled in, so the signature covers the whole
    config the coordinator and the nodes see) and, with ``submitter_key``, the submitter's signature."""
    from fedcredit.crypto import CryptoError, Identity
    from fedcredit.flower.trust import SIGNATURE_KEY, fab_hash, sign_run_config

    defaults = app_defaults(app)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise FedCreditError(f"run-config key(s) {unknown} are not in the app's [tool.flwr.app.config] "
                             "(Flower would drop them)")
    full = {k: v for k, v in {**defaults, **overrides}.items() if k != SIGNATURE_KEY}
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in full.items())
    if submitter_key is None:
        return text
    try:
        identity = Identity.load(Path(submitter_key))
    except (CryptoError, OSError) as exc:
        raise FedCreditError(f"submitter key {submitter_key}: {exc}") from None
    signature = sign_run_config(tomllib.loads(text), fab_hash(app), identity)
    return text + f"{SIGNATURE_KEY} = {_toml_value(signature)}\n"


def submit(superlink: str, certs: Path, out: Path, run_config: dict | None = None, *, home: Path | None = None,
           timeout: float = 3600.0, echo=print, coordinator_out: str | None = None,
           submitter_key: Path | None = None, app: Path | None = None) -> dict:
    """Run the job on the federation at ``superlink``; returns the coordinator's status (``ok`` true) or raises.

    ``out`` is the submitter's folder (Flower CLI home); the coordinator writes into
    ``coordinator_out`` (a path on the SuperLink's machine), by default ``out`` itself.
    The run config is signed with ``submitter_key`` (a registered submitter's identity
    file); an unsigned job is refused by the coordinator and every node. ``app`` is the
    Flower app folder to send (default: this fedcredit's, ``app_dir()``).
    """
    app = Path(app) if app else app_dir()
    out = Path(out).resolve()
    home = Path(home).resolve() if home else out / ".flwr-home"
    out.mkdir(parents=True, exist_ok=True)
    target = Path(coordinator_out) if coordinator_out else out
    try:
        (target / STATUS).unlink(missing_ok=True)  # never read a previous run's verdict
    except OSError:
        pass
    write_cli_config(home, superlink, Path(certs) / "ca.pem")
    overrides = {"out": str(target), **(run_config or {})}
    cfg_file = home / "run-config.toml"
    cfg_file.write_text(signed_run_config(overrides, app, submitter_key))
    cmd = [flower_bin("flwr"), "run", str(app), FEDERATION, "--stream", "--run-config", str(cfg_file)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=flower_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=home, start_new_session=True)
    run_id = None
    lines: list[str] = []
    try:
        for line in _lines(proc, started + timeout):
            lines.append(line)
            echo(line)
            if run_id is None and (m := RUN_ID_RE.search(line)):
                run_id = int(m.group(1))
        code = proc.wait(timeout=30)
    except (TimeoutError, KeyboardInterrupt) as exc:
        # the run would go on at the coordinator without anyone watching: stop it there too
        why = f"the run did not finish within {timeout:.0f} s" if isinstance(exc, TimeoutError) else "interrupted"
        raise FedCreditError(f"{why}; {_stop(run_id, home)}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = _status(target, home, run_id)
    refused = next((line[line.index(REFUSED):] for line in lines if REFUSED in line), None)
    if refused and not status.get("ok"):
        status["error"] = refused
    status.setdefault("flwr_run_exit_code", code)
    status["submit_seconds"] = round(time.monotonic() - started, 1)
    if not status.get("ok"):
        tail = "\n".join(lines[-15:])
        raise FedCreditError(f"the federated run failed: {status.get('error', 'no result')}"
                             + (f" (Flower run {run_id})" if run_id else "") + (f"\n{tail}" if not status.get('error') else ""))
    return status


def _lines(proc: subprocess.Popen, deadline: float):
    """The process's output lines; raises TimeoutError at ``deadline`` even while it prints nothing."""
    queue: Queue = Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            queue.put(line.rstrip("\n"))
        queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = queue.get(timeout=max(deadline - time.monotonic(), 0.0))
        except Empty:
            raise TimeoutError from None
        if line is None:
            return
        yield line


def _stop(run_id: int | None, home: Path) -> str:
    """Ask the SuperLink to stop the run; says what happened (for the error message)."""
    if run_id is None:
        return "it had not started"
    try:
        res = flwr_cli(["stop", str(run_id), FEDERATION], home, timeout=30)
    except subprocess.TimeoutExpired:
        return f"stopping Flower run {run_id} timed out: stop it with 'flwr stop {run_id}'"
    if res.returncode != 0:
        return f"stopping Flower run {run_id} failed: {(res.stdout + res.stderr).strip()[-300:]}"
    return f"Flower run {run_id} stopped"


def _status(out: Path, home: Path, run_id: int | None) -> dict:
    path = out / STATUS
    if path.exists():
        return json.loads(path.read_text())
    if run_id is None:
        return {"ok": False, "error": "the run never started (see the output above)"}
    res = flwr_cli(["ls", FEDERATION, "--run-id", str(run_id), "--format", "json"], home)
    try:
        runs = json.loads(res.stdout).get("runs", [])
        state = str(runs[0].get("status", "")) if runs else "unknown"
    except (json.JSONDecodeError, AttributeError):
        state = "unknown"
    ok = state.endswith("completed")
    return {"ok": ok, "flower_status": state, "flower_run_id": run_id,
            **({} if ok else {"error": f"Flower reports run {run_id} as {state!r} and no {STATUS} was written"})}


if __name__ == "__main__":  # pragma: no cover - manual use
    print(submit(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
