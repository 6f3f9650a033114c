"""Online limit queries on the deployment engine in network namespaces with TLS: latency and batch throughput.

A SuperLink and three SuperNodes (bank, tax, utilities), each in its own network namespace
(``fedcredit_netlab.namespaces``), TLS and node authentication on, jobs signed by the
platform operator. A small scorecard model is trained on the federation, then a serving run
(``task = query``, ``fedcredit.flower.serving``) answers HTTPS requests from this process
(the root namespace, as a bank app would call it): single-enterprise queries one after the
other (latency p50/p95), then batches of 100 and of 10,000 enterprises (``--quick``: 2,000)
for throughput. Beside the wall times: the CPU seconds of the whole process tree (this
process and every Flower/fedcredit process it started) and of the whole machine, and the
load average, and the process tree's CPU by kind of process (SuperLink, SuperExec, SuperNode,
node service, ServerApp ...) for each phase, including an idle one (the serving run up, nothing
asked). Unless ``--no-scoring``, ``measure_scoring`` times a scoring run of the same population
deployed (``fedcredit score --federation``'s submission) and ``measure_simulated_scoring`` one on
the simulation engine, after the lab is gone. Needs root.

JSON keys: p50_s, p95_s, batch100_per_s, batch10000_per_s (the big batch: 10,000, ``--quick`` 2,000),
score_deployed_s, score_simulation_s, plus latencies_s, batch100_s, batch_big_s, server_seconds (the
coordinator's own time per request, from requests.jsonl), setup_s, train_s, cpu (per phase: wall, process
tree and machine core-seconds, tree CPU by kind of process, load average), scoring CPU, rows, key_bits,
machine, quick.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, machine_cpu_seconds, parser  # noqa: E402

import httpx  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from fedcredit_netlab import namespaces as netlab  # noqa: E402
from fedcredit.deploy import processes as P  # noqa: E402
from fedcredit.deploy.certs import make_certs  # noqa: E402
from fedcredit.flower.trust import make_key  # noqa: E402
from fedcredit.protocols.job import ModelSettings  # noqa: E402

ROLES = ("bank", "tax", "utilities")
QUERY_PORT = 9443
NODE_POLICY = """[policy]
allowed_tasks = ["train", "score", "query"]
min_key_bits = 1024
min_population = 100
max_jobs_per_day = 1000
max_scored_per_day = 10000000
max_queries_per_day = 10000000
"""


KINDS = (("fedcredit.flower.serverapp_gate", "serverapp"), ("flwr-serverapp", "serverapp"),
         ("fedcredit.deploy.superlink", "superlink"), ("flower-superlink", "superlink"),
         ("flower-superexec", "superexec"), ("fedcredit.deploy.supernode", "supernode"),
         ("flower-supernode", "supernode"), ("fedcredit.node", "node service"), ("flwr run", "flwr run"),
         ("fedcredit.deploy.clientapp", "clientapp launcher"), ("flwr-clientapp", "clientapp launcher"))


def kind_of(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    return next((kind for marker, kind in KINDS if marker in line), "other")


def tree_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (kind, user + system CPU seconds) of this process's live descendants (the lab's Flower and
    fedcredit processes are its children, in their namespaces)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            found[child.pid] = (kind_of(child.cmdline()), t.user + t.system)
        except psutil.Error:
            pass
    return found


def own_cpu_seconds() -> float:
    """This process, and its children that ended (reaped), user + system seconds."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Wall time, process-tree CPU seconds (by kind of process) and machine CPU seconds, load average."""

    def __enter__(self):
        self.t, self.own, self.tree, self.machine, self.load = time.perf_counter(), own_cpu_seconds(), tree_cpu(), \
            machine_cpu_seconds(), os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t
        by_kind: dict[str, float] = {"bench (this process)": own_cpu_seconds() - self.own}
        for pid, (kind, cpu) in tree_cpu().items():
            start = self.tree.get(pid, (kind, 0.0))[1]
            by_kind[kind] = by_kind.get(kind, 0.0) + cpu - start
        self.figures = {"wall_s": round(self.seconds, 2), "tree_cpu_s": round(sum(by_kind.values()), 2),
                        "machine_cpu_s": round(machine_cpu_seconds() - self.machine, 2),
                        "load_avg": (round(self.load, 2), round(os.getloadavg()[0], 2)),
                        "tree_cpu_by_kind_s": {k: round(v, 2) for k, v in sorted(by_kind.items())}}


class Serving:
    """The serving run, submitted in a thread (``submit`` streams until the run stops); ``stop`` ends it."""

    def __init__(self, superlink: str, certs: Path, out: Path, cfg: dict, coordinator_out: Path):
        from fedcredit.flower.submit import submit

        self.lines: list[str] = []
        self.home, self.status, self.error, self.out = out / ".flwr-home", None, None, coordinator_out

        def run() -> None:
            try:
                self.status = submit(superlink, certs, out, cfg, echo=self.lines.append, timeout=4 * 3600,
                                     coordinator_out=str(coordinator_out),
                                     submitter_key=certs / "submitters" / "operator.key")
            except Exception as exc:  # noqa: BLE001 — reported by wait_ready/stop
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_ready(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not any("serving bank" in line for line in self.lines):
            if self.error is not None or not self.thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"the serving run did not start: {self.error}\n" + "\n".join(self.lines[-20:]))
            time.sleep(0.1)

    def stop(self) -> None:
        from fedcredit.flower.submit import RUN_ID_RE

        run_id = next((m.group(1) for line in self.lines if (m := RUN_ID_RE.search(line))), None)
        if run_id is not None:
            P.flwr_cli(["stop", run_id, P.FEDERATION], self.home, timeout=60)
        self.thread.join(120)
        deadline = time.monotonic() + 60  # the ServerApp notices the stop, closes its log, writes status.json
        while not (self.out / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def post(client: httpx.Client, url: str, token: str, ids: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    reply = client.post(url + "/v1/limits", json={"uscc": ids}, headers={"Authorization": f"Bearer {token}"})
    seconds = time.perf_counter() - started
    if reply.status_code != 200:
        raise SystemExit(f"query of {len(ids)} id(s) answered {reply.status_code}: {reply.text[:500]}")
    return seconds, reply.json()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure_scoring(fed_superlink: str, certs: Path, registry: Path, keys: Path, coordinator_out: Path, model: str,
                    work: Path) -> dict:
    """Wall time of a scoring run of the population the nodes hold, deployed: ``fedcredit score --federation``'s
    submission of the saved model ``model`` (``score_deployed_s``)."""
    from fedcredit.deploy.federations import Federation
    from fedcredit.jobs import submission

    fed = Federation("bench", fed_superlink, certs, "bench_query", registry=str(registry), out=str(coordinator_out),
                     keys=str(keys), submitter=str(certs / "submitters" / "operator.key"))
    sub = submission.plan_scoring(fed, model, "bank", "credit-scoring", work / "score-deployed")
    with Meter() as deployed:
        submission.run(sub, work / "score-deployed", echo=lambda line: None, timeout=4 * 3600)
    return {"score_deployed_s": round(deployed.seconds, 1), "scoring_cpu": {"deployed": deployed.figures}}


def measure_simulated_scoring(paths: dict, settings: ModelSettings, work: Path) -> dict:
    """The same population scored on the simulation engine by a model trained there (untimed), after the lab is
    gone so that its idle processes do not share the cores (``score_simulation_s``)."""
    from fedcredit.jobs import runner
    from fedcredit.protocols.job import NodeConfig

    nodes = [NodeConfig(role=r, data=str(paths[r]), label="default_12m" if r == "bank" else None) for r in ROLES]
    runner.run(nodes, settings, work / "sim-train", engine="simulation")
    with Meter() as simulated:
        runner.run(nodes, settings, work / "sim-score", engine="simulation", model=work / "sim-train")
    return {"score_simulation_s": round(simulated.seconds, 1), "simulation_scoring_cpu": simulated.figures}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--rows", type=int, help="enterprises (default 3,000 quick, 12,000 full)")
    p.add_argument("--singles", type=int, help="single-enterprise queries (default 20 quick, 50 full)")
    p.add_argument("--no-scoring", action="store_true", help="skip measure_scoring (score_*_s are null)")
    p.add_argument("--key-bits", type=int, default=1024, help="Paillier key size of the trained model (the demo: 2048)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the finally blocks stop the lab
    why_not = netlab.unavailable_reason()
    if why_not:
        sys.exit(f"bench_query needs network namespaces: {why_not}")
    from fedcredit.data import synth
    from fedcredit.flower.deployment import run_config_from_settings
    from fedcredit.flower.submit import submit
    from fedcredit.serving.tokens import new_token

    rows = args.rows or (3000 if args.quick else 12_000)
    big = 2000 if args.quick else 10_000
    singles = args.singles or (20 if args.quick else 50)
    settings = ModelSettings(seed=42, key_bits=args.key_bits, max_iter=2 if args.quick else 10, bank_only_baseline=False)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-query-"))
    paths = synth.write_nodes(synth.generate(rows, 42), root / "data")
    (root / "node-policy.toml").write_text(NODE_POLICY)
    print(f"{rows:,} enterprises, scorecard LR, {settings.key_bits}-bit, max {settings.max_iter} iterations; in {root}",
          flush=True)
    figures: dict = {"p50_s": None, "p95_s": None, "batch100_per_s": None, "batch10000_per_s": None,
                     "score_deployed_s": None, "score_simulation_s": None}
    with netlab.Lab(["coordinator", *ROLES]) as lab:
        host, port = lab.address("coordinator"), 9092
        certs, state, keys = root / "certs", root / "state", root / "coordinator-keys"
        coordinator_out = root / "coordinator-out"
        make_certs(certs, host, list(ROLES))
        make_key(certs / "submitters", "operator")
        procs, serving = [], None
        try:
            link, _ = P.start_coordinator(certs, host, port, state, netns=lab.ns("coordinator"),
                                          control_from=[lab.root_address])
            procs.append(link)
            for role in ROLES:
                cfg = {"policy": str(root / "node-policy.toml"), **({"label": "default_12m"} if role == "bank" else {})}
                procs.append(P.start_node(role, paths[role], f"{host}:{port}", certs, root / "work" / role,
                                          out=root / "nodes-out" / role, idle_poll=0.1, netns=lab.ns(role),
                                          node_config=cfg))
            common = {"registry": str(state / "registry.json"), "keys": str(keys)}
            with Meter() as trained:
                submit(f"{host}:{port}", certs, root / "train", {**run_config_from_settings(settings, list(ROLES)),
                                                                  **common},
                       echo=lambda line: None, timeout=4 * 3600, coordinator_out=str(coordinator_out / "bank" / "train"),
                       submitter_key=certs / "submitters" / "operator.key")
            model = json.loads((coordinator_out / "bank" / "train" / "run.json").read_text())["run_id"]
            print(f"trained model {model} in {trained.seconds:.1f} s", flush=True)
            token, _, _ = new_token("bank", state)
            cfg = {"task": "query", "model-run": model, "bank": "bank", "query-listen": f"{host}:{QUERY_PORT}",
                   "query-tokens": str(state / "query-tokens.json"), **common}
            with Meter() as setup:
                serving = Serving(f"{host}:{port}", certs, root / "serve", cfg, coordinator_out / "bank" / "serve")
                serving.wait_ready()
            print(f"serving run ready in {setup.seconds:.1f} s (submission, node discovery, setup rounds)", flush=True)
            url = f"https://{host}:{QUERY_PORT}"
            ids = pd.read_parquet(paths["bank"])["uscc"].astype(str).tolist()
            with Meter() as idle:  # nothing asked: what the serving federation burns waiting
                time.sleep(5 if args.quick else 15)
            with httpx.Client(verify=ssl.create_default_context(cafile=str(certs / "ca.pem")), timeout=600) as client:
                post(client, url, token, ids[:1])  # warm: the first query reads each node's data file
                with Meter() as single:
                    latencies = [post(client, url, token, [ids[1 + k]])[0] for k in range(singles)]
                with Meter() as hundred:
                    hundreds = [post(client, url, token, ids[k * 100:(k + 1) * 100])[0] for k in range(5)]
                with Meter() as large:
                    big_s, answer = post(client, url, token, ids[:big])
            ok = sum(r["status"] == "ok" for r in answer["rows"])
            server = [r["seconds"] for r in map(json.loads, (coordinator_out / "bank" / "serve" / "requests.jsonl")
                                                .read_text().splitlines())]
            figures.update({
                "p50_s": round(percentile(latencies, 0.5), 3), "p95_s": round(percentile(latencies, 0.95), 3),
                "batch100_per_s": round(100 / statistics.median(hundreds), 1),
                "batch10000_per_s": round(big / big_s, 1), "big_batch": big, "big_batch_ok_rows": ok,
                "latencies_s": [round(x, 3) for x in latencies], "batch100_s": [round(x, 3) for x in hundreds],
                "batch_big_s": round(big_s, 3), "server_seconds": server,
                "setup_s": round(setup.seconds, 1), "train_s": round(trained.seconds, 1),
                "cpu": {"train": trained.figures, "setup": setup.figures, "idle": idle.figures, "singles": single.figures,
                        "batch100": hundred.figures, "batch_big": large.figures},
            })
            serving.stop()
            serving = None
            if not args.no_scoring:
                figures.update(measure_scoring(f"{host}:{port}", certs, state / "registry.json", keys,
                                               coordinator_out, model, root))
        finally:
            if serving is not None:
                serving.stop()
            for proc in reversed(procs):
                proc.stop()
    if not args.no_scoring:
        figures.update(measure_simulated_scoring(paths, settings, root))
    figures.update({"rows": rows, "singles": singles, "key_bits": settings.key_bits, "max_iter": settings.max_iter,
                    "quick": args.quick, "machine": machine(),
                    "note": None if not args.no_scoring else "score_*_s not measured (--no-scoring)"})
    print(f"\n{'measure':<34}{'value':>12}\n" + "\n".join(
        f"{k:<34}{v!s:>12}" for k, v in figures.items() if k in (
            "p50_s", "p95_s", "batch100_per_s", "batch10000_per_s", "big_batch", "setup_s", "train_s",
            "score_deployed_s", "score_simulation_s")), flush=True)
    for phase, f in figures.get("cpu", {}).items():
        print(f"  {phase:<10} wall {f['wall_s']:>7} s  process tree {f['tree_cpu_s']:>7} core-s  machine "
              f"{f['machine_cpu_s']:>7} core-s  load {f['load_avg'][0]} -> {f['load_avg'][1]}", flush=True)
        print("             " + ", ".join(f"{k} {v}" for k, v in f["tree_cpu_by_kind_s"].items()), flush=True)
    emit(figures, args.json)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
