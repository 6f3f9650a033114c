"""The default job on Flower's simulation engine versus the deployment engine in network namespaces.

Three runs on the same data and seed: (1) simulation (``fedcredit demo``'s engine),
(2) deployment: SuperLink and three SuperNodes, each in its own network namespace
(``fedcredit_netlab.namespaces``), TLS and node authentication, bytes counted on every
party's link, (3) the same with delay and loss on each node's link (``Lab.impair``:
``tc netem`` where the kernel has it, otherwise nftables/iptables random drop plus a
delay relay; the JSON says which). Full mode is the demo job (20,000 enterprises,
2048-bit keys, 30 iterations, bank-only baseline); ``--quick`` is the smallest job the
deployment allows (1,500 enterprises, 1024-bit, 1 iteration, 24 message rounds), which
still takes minutes: a deployment round costs seconds (docs/deployment.md, "Speed").
``--model secureboost`` runs the SecureBoost demo job instead (``--quick``: 2 trees of
depth 2). Needs root; may install Debian's ``nftables`` for the loss.

JSON keys: simulation_s, deployment_s, rounds, per_round_s (the median wall time of one
message round on the deployment engine, as the coordinator timed it), load_avg (1-minute
load average at start and end of each run), machine_core_s (CPU seconds the whole machine
spent during each run, all processes: the runs' core-seconds when nothing else runs), bytes_per_party, netem_s, plus impairment,
slowdown, the AUCs of the three runs and the settings. ``--trees N`` sets the SecureBoost
job's trees (full default: 5); ``--no-impairment`` skips the third run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, machine_cpu_seconds, parser  # noqa: E402

from fedcredit_netlab import namespaces as netlab  # noqa: E402
from fedcredit.deploy import processes as P  # noqa: E402
from fedcredit_netlab.capture import Capture  # noqa: E402
from fedcredit.deploy.certs import make_certs  # noqa: E402
from fedcredit.flower.trust import make_key  # noqa: E402
from fedcredit.flower.deployment import run_config_from_settings  # noqa: E402
from fedcredit.protocols.job import ModelSettings, NodeConfig  # noqa: E402

ROLES = ("bank", "tax", "utilities")


def _ensure_loss_tool() -> None:
    """Random drop needs nft or iptables when the kernel has no netem; install Debian's nftables if neither is here."""
    if shutil.which("nft") or shutil.which("iptables") or not shutil.which("apt-get"):
        return
    print("installing nftables (packet loss without sch_netem)", flush=True)
    cmd = ["apt-get", "install", "-y", "-qq", "nftables"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True, capture_output=True)


def simulate(paths: dict, settings: ModelSettings, out: Path) -> tuple[float, dict]:
    from rich.console import Console

    from fedcredit.jobs import runner

    nodes = [NodeConfig(role, str(paths[role])) for role in ROLES]
    started = time.perf_counter()
    metrics = runner.run(nodes, settings, out, engine="simulation", console=Console(quiet=True))
    return time.perf_counter() - started, metrics


def deploy(paths: dict, settings: ModelSettings, work: Path, impair: tuple[float, float] | None = None) -> dict:
    """One job on a fresh lab; ``impair`` = (delay ms, loss %) on every node's link. Returns its figures."""
    from fedcredit.flower.submit import submit

    with netlab.Lab(["coordinator", *ROLES]) as lab:
        host = lab.address("coordinator")
        certs = work / "certs"
        make_certs(certs, host, list(ROLES))
        make_key(certs / "submitters", "operator")  # jobs are signed; the coordinator and the nodes check it
        port = 9092
        procs = []
        try:
            link, _ = P.start_coordinator(certs, host, port, work / "state", netns=lab.ns("coordinator"),
                                          control_from=[lab.root_address])
            procs.append(link)
            impairments = {}
            for role in ROLES:
                address = f"{host}:{port}"
                if impair is not None:
                    impairments[role] = lab.impair(role, impair[0], impair[1], ("coordinator", port))
                    address = impairments[role].address
                procs.append(P.start_node(role, paths[role], address, certs, work / "work" / role,
                                          out=work / "nodes-out" / role, idle_poll=0.1, netns=lab.ns(role)))
            captures = {party: Capture(lab.link(party), limit_bytes=0) for party in lab.parties}
            config = {**run_config_from_settings(settings, list(ROLES)), "registry": str(work / "state" / "registry.json")}
            started, load, cpu = time.perf_counter(), os.getloadavg()[0], machine_cpu_seconds()
            try:
                submit(f"{host}:{port}", certs, work / "out", config, echo=lambda line: None, timeout=4 * 3600,
                       submitter_key=certs / "submitters" / "operator.key")
            finally:
                seconds, cpu = time.perf_counter() - started, machine_cpu_seconds() - cpu
                load = (load, os.getloadavg()[0])
                seen = {party: cap.stop() for party, cap in captures.items()}
        finally:
            for proc in reversed(procs):
                proc.stop()
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    return {"seconds": seconds, "cpu_s": cpu, "metrics": metrics, "bytes": {p: s.bytes_total for p, s in seen.items()},
            "drops": {p: s.kernel_drops for p, s in seen.items()}, "load": load,
            "impairment": ({**next(iter(impairments.values())).describe(), "party": ",".join(impairments)}
                           if impairments else None)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, default=20.0, help="added delay per direction on each node's link")
    p.add_argument("--loss-pct", type=float, default=1.0, help="random packet loss per direction, percent")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--model", choices=("scorecard_lr", "secureboost"), default="scorecard_lr",
                   help="the job's model (secureboost: trees of depth 4; --quick: 2 trees of depth 2)")
    p.add_argument("--trees", type=int, default=5, help="SecureBoost trees in the full run (the demo grows 30)")
    p.add_argument("--no-impairment", action="store_true", help="skip the run with delay and loss")
    args = p.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the lab's SuperLink, nodes and namespaces
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    why_not = netlab.unavailable_reason()
    if why_not:
        sys.exit(f"bench_deployment needs network namespaces: {why_not}")
    if args.loss_pct and not args.no_impairment:
        _ensure_loss_tool()
    from fedcredit.data import synth

    rows = 1500 if args.quick else 20_000
    quick = (dict(key_bits=1024, max_iter=1, trees=2, max_depth=2, bank_only_baseline=False) if args.quick
             else dict(trees=args.trees))
    settings = ModelSettings(seed=42, model=args.model, **quick)  # full: the demo's job
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-deployment-"))
    paths = synth.write_nodes(synth.generate(rows, 42), root / "data")
    steps = f"max {settings.max_iter} iterations" if args.model == "scorecard_lr" else f"{settings.trees} trees"
    print(f"{rows:,} enterprises, {args.model}, {settings.key_bits}-bit, {steps}; in {root}", flush=True)

    load, cpu = os.getloadavg()[0], machine_cpu_seconds()
    sim_s, sim = simulate(paths, settings, root / "simulation")
    load, sim_cpu = (load, os.getloadavg()[0]), machine_cpu_seconds() - cpu
    print(f"simulation: {sim_s:.1f} s, {sim['rounds']} rounds, test AUC {sim['test_auc']:.6f}", flush=True)
    plain = deploy(paths, settings, root / "deployment")
    print(f"deployment: {plain['seconds']:.1f} s, test AUC {plain['metrics']['test_auc']:.6f}", flush=True)
    print(f"  {plain['metrics']['rounds']} rounds, median {plain['metrics'].get('median_round_s')} s per round; "
          f"{plain['seconds'] / sim_s:.2f} × the simulation", flush=True)
    slow = None
    if not args.no_impairment:
        slow = deploy(paths, settings, root / "impaired", impair=(args.delay_ms, args.loss_pct))
        print(f"deployment with delay/loss: {slow['seconds']:.1f} s, test AUC {slow['metrics']['test_auc']:.6f}",
              flush=True)
    slow = slow or {"seconds": None, "impairment": None, "metrics": {"rounds": None, "test_auc": None},
                    "bytes": None, "drops": None, "load": None}
    figures = {
        "simulation_s": round(sim_s, 1), "deployment_s": round(plain["seconds"], 1),
        "rounds": plain["metrics"]["rounds"], "per_round_s": plain["metrics"].get("median_round_s"),
        "load_avg": {"simulation": load, "deployment": plain["load"], "impaired": slow["load"]},
        "machine_core_s": {"simulation": round(sim_cpu, 1), "deployment": round(plain["cpu_s"], 1),
                           "impaired": round(slow["cpu_s"], 1) if slow.get("cpu_s") is not None else None},
        "bytes_per_party": plain["bytes"], "netem_s": round(slow["seconds"], 1) if slow["seconds"] else None,
        "impairment": slow["impairment"],
        "slowdown": round(slow["seconds"] / plain["seconds"], 3) if slow["seconds"] else None,
        "deployment_over_simulation": round(plain["seconds"] / sim_s, 2),
        "seconds_per_round": {"simulation": round(sim_s / sim["rounds"], 3),
                              "deployment": round(plain["seconds"] / plain["metrics"]["rounds"], 3),
                              "impaired": round(slow["seconds"] / slow["metrics"]["rounds"], 3)
                              if slow["seconds"] else None},
        "test_auc": {"simulation": sim["test_auc"], "deployment": plain["metrics"]["test_auc"],
                     "impaired": slow["metrics"]["test_auc"]},
        "bytes_per_party_impaired": slow["bytes"], "capture_kernel_drops": {"deployment": plain["drops"],
                                                                            "impaired": slow["drops"]},
        "rows": rows, "model": args.model, "key_bits": settings.key_bits, "max_iter": settings.max_iter,
        "trees": settings.trees if args.model == "secureboost" else None,
        "bank_only_baseline": settings.bank_only_baseline, "quick": args.quick, "machine": machine(),
    }
    emit(figures, args.json)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
