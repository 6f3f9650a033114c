"""Several banks on one federation: node names and protocol roles, the job's nodes picked from those connected,
and what a node outside the job sees (nothing).

A stand-in for Flower's Grid serves every node through its real node service handlers
(``fedcredit.node.service.make_app``, called in this process as a Flower task calls them)
and records every message the coordinator sends, so the tests can assert which node was
sent what. The same jobs over a real federation in network namespaces:
tests/test_several_banks.py.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

import fedcredit.node.channel as channel
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message
from fedcredit.crypto import WorkerPool
from fedcredit.deploy.naming import job_nodes, job_nodes_for_roles
from fedcredit.flower.codec import bundle_bytes, bundle_record
from fedcredit.flower.deployment import job_nodes_from_run_config, run_config_from_settings, settings_from_run_config
from fedcredit.flower.server_app import run_job
from fedcredit.jobs.jobfile import read_job
from fedcredit.node.naming import job_node
from fedcredit.node.service import make_app
from fedcredit.protocols import HELLO, ModelSettings, NodeConfig

from bank_helpers import two_banks

SETTINGS = ModelSettings(key_bits=1024, max_iter=1, bank_only_baseline=False, backend="mock")
NAMES = ("bank-a", "bank-b", "tax", "utilities")
REGISTRY = {name: 201 + i for i, name in enumerate(NAMES)}


# -- names and roles ---------------------------------------------------------------------------------------------


def test_the_jobs_bank_plays_the_bank_and_hosts_play_their_names():
    job = job_nodes("bank-a", ["tax", "utilities"])
    assert job.roles == ["bank", "tax", "utilities"] and job.names == ["bank-a", "tax", "utilities"]
    assert job.role_of("bank-a") == "bank" and job.name_of("bank") == "bank-a" and job.role_of("tax") == "tax"
    with pytest.raises(FedCreditError, match="'bank-b' is not in this job"):
        job.role_of("bank-b")
    assert job_nodes("bank", ["tax"]).names == ["bank", "tax"]  # a single-bank federation: names are roles


@pytest.mark.parametrize("bank,hosts,expect", [
    ("bank-a", ["bank", "tax"], "a host may not be named 'bank' while 'bank-a' is the job's bank"),
    ("bank-a", ["tax", "tax"], "each node may appear once"),
    ("tax", ["tax", "utilities"], "each node may appear once"),
    ("bank-a", [], "at least one host"),
    ("bank a", ["tax"], "node name 'bank a' must be"),
])
def test_a_job_refuses_names_it_cannot_map(bank, hosts, expect):
    with pytest.raises(FedCreditError, match=expect):
        job_nodes(bank, hosts)


def test_the_run_config_carries_the_banks_name_and_defaults_to_bank():
    cfg = run_config_from_settings(ModelSettings(), ["bank", "tax", "utilities"], "bank-b")
    settings, roles = settings_from_run_config(cfg)
    assert cfg["bank"] == "bank-b" and roles == ["bank", "tax", "utilities"]
    assert job_nodes_from_run_config(cfg, roles).names == ["bank-b", "tax", "utilities"]
    assert job_nodes_from_run_config({}, roles).bank == "bank"  # a run config from before several banks
    with pytest.raises(FedCreditError, match="roles must list 'bank'"):
        job_nodes_for_roles(["tax", "bank"], "bank-a")


def test_a_job_file_names_its_bank_and_old_files_read_as_before(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[job]\nbank = "bank-b"\n[nodes.tax]\ndata = "t.parquet"\n'
                    '[nodes.bank-b]\ndata = "b.parquet"\nlabel = "defaulted"\n[nodes.utilities]\ndata = "u.parquet"\n')
    job = read_job(path)
    assert job.bank == "bank-b" and list(job.nodes) == ["bank-b", "tax", "utilities"]
    assert job.roles == ["bank", "tax", "utilities"]
    configs = job.node_configs()
    assert [c.role for c in configs] == ["bank", "tax", "utilities"] and configs[0].label == "defaulted"
    assert configs[0].data == str(tmp_path / "b.parquet")
    path.write_text('[job]\nbank = "bank-b"\n[nodes.bank-b]\n[nodes.tax]\nlabel = "y"\n')
    with pytest.raises(FedCreditError, match=r"\[nodes.tax\]: only the bank holds the label"):
        read_job(path)
    path.write_text('[job]\nbank = "bank-b"\n[nodes.bank]\n[nodes.tax]\n')
    with pytest.raises(FedCreditError, match=r"needs a \[nodes.bank-b\] section"):
        read_job(path)
    path.write_text('[job]\nbank = "bank-b"\n[nodes.bank-b]\n[nodes.bank]\n')
    with pytest.raises(FedCreditError, match="a host may not be named 'bank'"):
        read_job(path)
    path.write_text("[nodes.bank]\n[nodes.tax]\n")
    assert read_job(path).bank == "bank" and read_job(path).roles == ["bank", "tax"]


def _hello(receiver: str, bank: str | None) -> Message:
    meta = {"settings": {}} if bank is None else {"settings": {}, "bank": bank}
    return Message(HELLO, "coordinator", receiver, "r1", 0, meta)


def test_a_node_takes_its_role_from_the_jobs_hello_and_refuses_roles_not_its_own():
    bank_a = NodeConfig("bank-a", "a.parquet", label="default_12m")
    assert job_node(bank_a, [_hello("bank", "bank-a")]).role == "bank"
    assert job_node(bank_a, [_hello("bank-a", "bank-b")]) == NodeConfig("bank-a", "a.parquet")  # a host: no label
    with pytest.raises(FedCreditError, match="asked to play the bank of a job whose bank is 'bank-b'"):
        job_node(bank_a, [_hello("bank", "bank-b")])
    with pytest.raises(FedCreditError, match="node tax is named as the job's bank but its node config has no label"):
        job_node(NodeConfig("tax", "t.parquet"), [_hello("bank", "tax")])
    with pytest.raises(FedCreditError, match="node bank was asked to play the bank of a job whose bank is 'bank-a'"):
        job_node(NodeConfig("bank", "b.parquet"), [_hello("bank", "bank-a")])
    with pytest.raises(FedCreditError, match="first message for 'utilities'"):
        job_node(NodeConfig("tax", "t.parquet"), [_hello("utilities", "bank-a")])
    legacy = NodeConfig("bank", "b.parquet")  # a single-bank federation's bank, no label set: the schema's
    assert job_node(legacy, [_hello("bank", None)]) == legacy


# -- the coordinator and the nodes, through the node service's handlers ------------------------------------------


def _reply(mid: str, nid: int, content=None, reason: str | None = None):
    error = SimpleNamespace(code=0, reason=reason) if reason is not None else None
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=nid), content=content,
                           error=error, has_error=lambda: error is not None)


class ServiceGrid:
    """Every node's service in this process; ``sent`` records (node id, message type, Flower run) of every message."""

    def __init__(self, services: dict[str, object], ids: dict[str, int]):
        self.services, self.ids = services, ids
        self.sent: list[tuple[int, str, int]] = []
        self.replies: dict[str, object] = {}
        self.counter = itertools.count()
        self.run = 1

    def get_node_ids(self):
        return list(self.ids.values())

    def push_messages(self, msgs):
        out = []
        for msg in msgs:
            mid, nid = f"m{next(self.counter)}", msg.metadata.dst_node_id
            self.sent.append((nid, msg.metadata.message_type, self.run))
            self.replies[mid] = self._serve(mid, nid, msg.metadata.message_type, msg.content)
            out.append(mid)
        return out

    def pull_messages(self, ids):
        return [self.replies.pop(mid) for mid in list(ids) if mid in self.replies]

    def _serve(self, mid: str, nid: int, kind: str, content: RecordDict):
        call = self.services[next(n for n, i in self.ids.items() if i == nid)].state.call
        if kind == "query.role":
            status, _, body = call("GET", "/role")
            return _reply(mid, nid, RecordDict({"node": ConfigRecord({"role": json.loads(body)["role"]})}))
        data, sizes = bundle_bytes(content)
        headers = {channel.RUN: str(self.run), channel.SIZES: json.dumps(sizes)}
        if kind == "query.step":
            headers[channel.SEQ] = json.dumps(content["delivery"]["seq"])
        status, got, body = call("POST", "/deliver" if kind == "query.step" else "/abort", data, headers)
        if status != 200:
            return _reply(mid, nid, reason=channel.error_text(body))
        record = bundle_record(body, json.loads(got.get(channel.SIZES.lower(), "[]")))
        if channel.HEAD.lower() in got:
            record["audit"] = ConfigRecord({"final_head": got[channel.HEAD.lower()]})
        return _reply(mid, nid, record)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def federation(tmp_path):
    paths = two_banks(1000, 7, tmp_path / "data")
    with WorkerPool(1) as pool:
        services = {}
        for name in NAMES:
            cfg = {"role": name, "data": str(paths[name]), "work-dir": str(tmp_path / "work" / name),
                   "out-dir": str(tmp_path / "out" / name), **({"label": "default_12m"} if "bank-" in name else {})}
            services[name] = make_app(cfg, pool)
        yield ServiceGrid(services, dict(REGISTRY)), tmp_path


def _job(grid: ServiceGrid, bank: str, run: int, registry=REGISTRY, hosts=("tax", "utilities")) -> dict:
    grid.run = run
    result: dict = {}
    run_job(grid, SETTINGS, ["bank", *hosts], result, run_id=f"job-{run}", timeout=30, registry=registry,
            bank_name=bank)
    return result


def _traces(tmp: Path, name: str) -> list[str]:
    """The runs a node keeps anything of: its run folders (and their lock files) in its work and out folders."""
    return sorted({str(p.relative_to(tmp)).removesuffix(".lock") for folder in ("work", "out")
                   for p in (tmp / folder / name).glob("run-*")})


def test_two_banks_jobs_reach_only_their_nodes_and_write_only_at_their_bank(federation):
    grid, tmp = federation
    a = _job(grid, "bank-a", 1)
    assert "error" not in a, a.get("error")
    assert {nid for nid, _, _ in grid.sent} == {REGISTRY[n] for n in ("bank-a", "tax", "utilities")}
    assert _traces(tmp, "bank-b") == []  # bank-b was sent nothing, not even query.role, and kept nothing
    assert (tmp / "out" / "bank-a" / "run-1" / "scores.parquet").exists()
    assert (tmp / "out" / "bank-a" / "run-1" / "audit" / "bank.jsonl").exists()  # it played the bank
    b = _job(grid, "bank-b", 2)
    assert "error" not in b, b.get("error")
    assert {nid for nid, _, run in grid.sent if run == 2} == {REGISTRY[n] for n in ("bank-b", "tax", "utilities")}
    assert REGISTRY["bank-a"] not in {nid for nid, _, run in grid.sent if run == 2}
    assert _traces(tmp, "bank-a") == ["out/bank-a/run-1", "work/bank-a/run-1"]
    assert _traces(tmp, "bank-b") == ["out/bank-b/run-2", "work/bank-b/run-2"]
    assert a["metrics"]["auc"] != b["metrics"]["auc"]  # different labels, different models
    for host in ("tax", "utilities"):
        assert _traces(tmp, host) == [f"out/{host}/run-1", f"out/{host}/run-2", f"work/{host}/run-1",
                                      f"work/{host}/run-2"]
        assert not (tmp / "out" / host / "run-1" / "scores.parquet").exists()


def test_without_a_registry_every_node_is_asked_its_name_and_only_the_jobs_get_the_job(federation):
    grid, tmp = federation
    result = _job(grid, "bank-b", 3, registry=None, hosts=("tax",))
    assert "error" not in result, result.get("error")
    kinds = {nid: {kind for n, kind, _ in grid.sent if n == nid} for nid in REGISTRY.values()}
    assert kinds[REGISTRY["bank-a"]] == kinds[REGISTRY["utilities"]] == {"query.role"}
    assert kinds[REGISTRY["bank-b"]] == kinds[REGISTRY["tax"]] == {"query.role", "query.step"}
    assert _traces(tmp, "bank-a") == [] and _traces(tmp, "utilities") == []


def test_a_bank_without_a_label_and_a_node_with_the_wrong_key_are_refused(federation):
    grid, tmp = federation
    result = _job(grid, "tax", 4, hosts=("utilities",))
    assert "node tax failed" in result["error"] and "has no label column" in result["error"], result["error"]
    assert not (tmp / "out" / "tax" / "run-4").exists()  # refused before its agent read anything
    swapped = {**REGISTRY, "bank-a": REGISTRY["bank-b"], "bank-b": REGISTRY["bank-a"]}
    result = _job(grid, "bank-a", 5, registry=swapped)
    assert "holds the key registered for 'bank-a' but says it is 'bank-b'" in result["error"]
    assert {kind for nid, kind, run in grid.sent if run == 5} == {"query.role"}
    result = _job(grid, "bank-c", 6)
    assert "bank-c of this job have no registered key" in result["error"]


def test_two_nodes_claiming_one_name_are_refused(federation):
    grid, _ = federation
    grid.services["tax-twin"] = grid.services["tax"]
    grid.ids["tax-twin"] = 299
    result = _job(grid, "bank-a", 7, registry=None)
    assert "two nodes claim the name 'tax'" in result["error"]
    assert {kind for _, kind, run in grid.sent if run == 7} == {"query.role"}


def test_certs_for_two_banks_and_a_bank_joining_later(tmp_path):
    from typer.testing import CliRunner

    from fedcredit.cli import app
    from fedcredit.deploy.certs import node_public_keys

    runner = CliRunner()
    res = runner.invoke(app, ["certs", "make", "--out", str(tmp_path), "--nodes", "bank-a,bank-b,tax,utilities"])
    assert res.exit_code == 0, res.output
    assert sorted(node_public_keys(tmp_path)) == ["bank-a", "bank-b", "tax", "utilities"]
    res = runner.invoke(app, ["certs", "add", "--out", str(tmp_path), "--nodes", "bank-c"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "nodes" / "bank-c.key").stat().st_mode & 0o777 == 0o600 and "bank-c" in node_public_keys(tmp_path)
    res = runner.invoke(app, ["certs", "add", "--out", str(tmp_path), "--nodes", "bank-b"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "already in" in res.output and "bank-b" in res.output
    res = runner.invoke(app, ["certs", "add", "--out", str(tmp_path / "none"), "--nodes", "bank-d"])
    assert res.exit_code == 1 and "no ca.pem" in res.output
