"""Monitoring: a drifted later month, each node's feature CSI, and ``fedcredit monitor``'s warnings.

One small federation trains on month 1 and scores month 2 (the generator's drift plus one
planted enterprise whose data collapses at every node); the checks share those two runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import Identity
from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.validate import load_node
from fedcredit.jobs import runner
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.monitoring import collect_csi, report_stability
from fedcredit.protocols.job.settings import SCORED
from fedcredit.scoring.monitor import COLUMNS, MonitorError, monitor
from fedcredit.scoring.policy import LimitPolicy, PolicyError
from fedcredit.scoring.publish import VerificationError, publish_limits

ROWS, SEED = 2000, 5
SETTINGS = ModelSettings(key_bits=1024, max_iter=8, bank_only_baseline=False, seed=3)
ROLES = ("bank", "tax", "utilities")


def _frames(month: int) -> dict[str, pd.DataFrame]:
    return {role: table.to_pandas() for role, table in synth.generate(ROWS, SEED, month=month).items()}


def _plant(frames: dict[str, pd.DataFrame], uscc: str) -> None:
    """``uscc``'s records collapse at every node: late loans, tax arrears, unpaid bills."""
    for role, updates in {"bank": {"max_dpd_24m": 120, "overdraft_days_12m": 90, "credit_utilization": 1.3},
                          "tax": {"tax_arrears_cny": 5e6, "taxpayer_credit_rating": "D", "ontime_filing_months_12m": 2,
                                  "revenue_growth_yoy": -0.9},
                          "utilities": {"late_payments_12m": 12, "disconnection_notices_24m": 6,
                                        "avg_days_to_pay": 120.0}}.items():
        frame = frames[role]
        for column, value in updates.items():
            frame.loc[frame.uscc == uscc, column] = value


def _write(frames: dict[str, pd.DataFrame], folder, month: int) -> dict[str, str]:
    schemas = {role: t.schema for role, t in synth.generate(20, 0).items()}
    tables = {role: pa.Table.from_pandas(f, schema=schemas[role], preserve_index=False) for role, f in frames.items()}
    return {role: str(path) for role, path in synth.write_nodes(tables, folder / f"month{month}").items()}


def _nodes(paths: dict[str, str]) -> list[NodeConfig]:
    return [NodeConfig(role, paths[role], publish_feature_names=role == "utilities") for role in ROLES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train on month 1, plant a collapsing enterprise (grade A in training) into month 2, score month 2."""
    tmp = tmp_path_factory.mktemp("monitoring")
    month1, month2 = _frames(1), _frames(2)
    quiet = Console(quiet=True)
    runner.run(_nodes(_write(month1, tmp, 1)), SETTINGS, tmp / "train", engine="in-process", console=quiet)
    trained = pd.read_parquet(tmp / "train" / "limits.parquet")
    hit = set().union(*synth.drift_hits(ROWS, SEED, month=2).values())
    best = trained[(trained.grade == "A") & ~trained.uscc.isin(hit)].sort_values("pd")
    planted = str(best.uscc.iloc[len(best) // 2])
    _plant(month2, planted)
    metrics = runner.run(_nodes(_write(month2, tmp, 2)), SETTINGS, tmp / "score", engine="in-process", console=quiet,
                         model=tmp / "train")
    return {"tmp": tmp, "planted": planted, "metrics": metrics, "month2": month2}


@pytest.fixture(scope="module")
def monitored(runs):
    summary = monitor(runs["tmp"] / "train", runs["tmp"] / "score", runs["tmp"] / "monitor")
    return summary, pd.read_parquet(runs["tmp"] / "monitor" / "warnings.parquet")


# ---------------------------------------------------------------- the drifted month

def test_month_one_is_unchanged():
    """The tables of month 1 are those generate() gave before months existed (a hash taken then)."""
    tables = synth.generate(500, 0)
    h = hashlib.sha256()
    for role in sorted(tables):
        h.update(role.encode())
        h.update(str(tables[role].to_pydict()).encode())
    assert h.hexdigest() == "0cd9c16f8dca288dee160b3bac8bdddef07d1c9126282fe55f785632e4771e25"
    assert all(tables[r].equals(t) for r, t in synth.generate(500, 0, month=1).items())


def test_month_two_keeps_the_enterprises_and_moves_their_data():
    one, two = _frames(1), _frames(2)
    hits = synth.drift_hits(ROWS, SEED, month=2)
    moved = set().union(*hits.values())
    for role in ROLES:
        assert one[role].uscc.tolist() == two[role].uscc.tolist()  # same IDs at the same node, same order
        still = ~one[role].uscc.isin(moved)  # nothing happened to them: the same records, the same label
        assert one[role][still].equals(two[role][still])
        assert not one[role][~still].reset_index(drop=True).equals(two[role][~still].reset_index(drop=True))
    tax1, tax2 = one["tax"], two["tax"]
    sector = tax1.uscc.isin(hits["sector"]).to_numpy()
    ratio = tax2.declared_revenue_cny / tax1.declared_revenue_cny
    assert ratio[sector].median() < 0.9 and abs(ratio[~sector].median() - 1.0) < 1e-6
    util1, util2 = one["utilities"], two["utilities"]
    slow = util1.uscc.isin(hits["slowdown"]).to_numpy()
    assert util2.late_payments_12m[slow].mean() > 1.3 * util1.late_payments_12m[slow].mean()
    bank1, bank2 = one["bank"], two["bank"]
    distressed = bank1.uscc.isin(hits["distressed"]).to_numpy()
    assert distressed.sum() > 20
    assert bank2.default_12m[distressed].mean() > bank1.default_12m[distressed].mean() + 0.3  # labels follow the risk
    assert bank2.default_12m.mean() > bank1.default_12m.mean()
    three = synth.drift_hits(ROWS, SEED, month=3)  # month 3 takes month 2's step, then one more
    assert set(hits["distressed"]) <= set(three["distressed"]) and len(three["distressed"]) > len(hits["distressed"])
    with pytest.raises(FedCreditError, match="--month must be 1 or later"):
        synth.generate(50, 0, month=0)


def test_synth_cli_writes_a_later_month(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--rows", "300", "--month", "2"])
    assert result.exit_code == 0, result.output
    assert "month 2" in result.output
    two = synth.generate(300, 0, month=2)["tax"]
    assert pq.read_table(tmp_path / "tax.parquet").equals(two)


# ---------------------------------------------------------------- CSI at each node

def test_every_node_reports_its_features_csi_and_only_that(runs):
    csi = runs["metrics"]["csi"]
    assert set(csi) == set(ROLES)
    prep = {role: FeaturePrep.from_json((runs["tmp"] / "train" / "model" / role / "prep.json").read_text())
            for role in ROLES}
    assert set(csi["bank"]) == set(prep["bank"].names)  # the bank's own names
    assert set(csi["utilities"]) == set(prep["utilities"].names)  # it publishes its names
    assert set(csi["tax"]) == {f"tax f{j}" for j in range(prep["tax"].n_features)}  # private: numbered
    assert all(isinstance(v, float) and v >= 0 for feats in csi.values() for v in feats.values())
    run_doc = json.loads((runs["tmp"] / "score" / "run.json").read_text())
    assert run_doc["csi"] == csi  # numbers, never the shares behind them
    # the sector downturn moves revenue growth most; the slowdown moves the bills
    worst_tax = max(csi["tax"], key=csi["tax"].get)
    assert prep["tax"].names[int(worst_tax.split(" f")[1])] == "revenue_growth_yoy"
    assert max(csi["utilities"], key=csi["utilities"].get) in ("avg_days_to_pay", "late_payments_12m")
    shares = json.loads((runs["tmp"] / "score" / "monitor" / "tax.json").read_text())
    assert set(shares["features"]) == set(csi["tax"]) and abs(sum(shares["features"][worst_tax]) - 1) < 1e-9
    trained = json.loads((runs["tmp"] / "train" / "monitor" / "tax.json").read_text())
    assert shares["model"] == trained["model"] == trained["run_id"] and shares["bins"] == trained["bins"]


def test_a_node_recomputes_its_csi_and_says_when_it_has_nothing_to_compare(runs, tmp_path):
    """The same figures from the node's own files; no previous shares: a note and no CSI."""
    tmp = runs["tmp"]
    prep = FeaturePrep.from_json((tmp / "train" / "model" / "utilities" / "prep.json").read_text())
    cfg = NodeConfig("utilities", str(tmp / "month2" / "utilities.parquet"), publish_feature_names=True,
                     model_dir=str(tmp / "train" / "model" / "utilities"))
    node = load_node(cfg.data, cfg.schema())
    features = cfg.pick_features(node)
    aligned = np.flatnonzero(np.isin(node.ids, pd.read_parquet(tmp / "score" / "limits.parquet").uscc))
    split = np.full(len(aligned), SCORED, dtype=np.int8)
    got = report_stability(cfg, "rerun", prep, features, aligned, split)
    assert got["csi"] == pytest.approx(runs["metrics"]["csi"]["utilities"])
    empty = NodeConfig(**{**cfg.__dict__, "previous_dir": str(tmp_path)})
    assert "csi" not in report_stability(empty, "rerun", prep, features, aligned, split)
    assert "no bin shares of the previous publication" in report_stability(empty, "x", prep, features, aligned,
                                                                           split)["csi_note"]


def test_the_coordinator_refuses_bin_shares():
    def reported(meta):
        return {"tax": Message("job.reported", "tax", "coordinator", "r", 6, meta)}

    assert collect_csi(reported({"csi": {"tax f0": 0.12}})) == {"csi": {"tax": {"tax f0": 0.12}}}
    assert collect_csi(reported({"metrics": {}})) == {}  # a training run
    with pytest.raises(ProtocolError, match="one non-negative number"):
        collect_csi(reported({"csi": {"tax f0": [0.2, 0.3, 0.5]}}))


# ---------------------------------------------------------------- fedcredit monitor

def test_monitor_writes_warnings_matrix_and_page(runs, monitored):
    summary, warnings = monitored
    assert tuple(warnings.columns) == COLUMNS
    planted = warnings[warnings.uscc == runs["planted"]].iloc[0]
    assert planted.old_grade == "A" and planted.warning == "red"
    assert planted.reasons.startswith(f"grade_down_{'ABCD'.index(planted.new_grade)}")
    assert "bank:" in planted.reasons  # the new publication's reason codes follow the rules that fired
    assert set(warnings.warning) == {"red", "amber", "green"}
    assert (warnings[warnings.warning == "green"].reasons == "").all()
    counts = np.array(summary["migration"]["counts"])
    assert counts.sum() == len(warnings) == summary["enterprises"]["both"]
    assert summary["warnings"]["red"] == int((warnings.warning == "red").sum())
    assert summary["csi"]["tax"] and all(doc["verdict"] in ("stable", "watch", "shifted")
                                         for feats in summary["csi"].values() for doc in feats.values())
    assert summary["psi"]["value"] > 0
    assert "rows digest verified" in summary["notes"][0]  # the scoring run's limits follow the training run's
    page = (runs["tmp"] / "monitor" / "monitoring.html").read_text()
    assert "Grade migration" in page and "Early warnings" in page and "data:image/png;base64," in page


def test_monitor_lists_enterprises_only_in_one_publication(runs, tmp_path):
    """NEW re-signed without one enterprise (same chain metadata): it is listed as only in OLD."""
    new = tmp_path / "new"
    shutil.copytree(runs["tmp"] / "score", new, ignore=shutil.ignore_patterns("audit", "model"))
    limits = pd.read_parquet(new / "limits.parquet")
    metadata = json.loads((new / "limits.sig.json").read_text()).get("metadata")
    dropped = str(limits.uscc.iloc[0])
    publish_limits(limits.iloc[1:], new, Identity.load(new / "keys" / "coordinator.key.json"),
                   str(limits.model_version.iloc[0]), metadata=metadata)
    summary = monitor(runs["tmp"] / "train", new, tmp_path / "out")
    assert summary["enterprises"]["only_old"] == 1 and summary["only_old"] == [dropped]
    assert summary["enterprises"]["both"] == len(limits) - 1


def test_monitor_cli_shows_counts_and_refuses_bad_inputs(runs, tmp_path):
    tmp, cli = runs["tmp"], CliRunner()
    result = cli.invoke(app, ["monitor", str(tmp / "train"), str(tmp / "score"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "red" in result.output and "amber" in result.output and "score PSI" in result.output
    missing = cli.invoke(app, ["monitor", str(tmp_path / "nowhere"), str(tmp / "score"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "no such folder" in missing.output
    bad = tmp_path / "policy.toml"
    bad.write_text("[monitoring]\nred_grade_drop = 1\namber_grade_drop = 1\n")
    result = cli.invoke(app, ["monitor", str(tmp / "train"), str(tmp / "score"), "--out", str(tmp_path / "x"),
                              "--policy", str(bad)])
    assert result.exit_code == 1 and "amber_grade_drop (1) must be smaller" in result.output
    with pytest.raises(PolicyError, match="monitoring.csi_watch"):
        LimitPolicy.from_dict({"monitoring": {"csi_watch": 0.3, "csi_shifted": 0.2}})


def test_monitor_refuses_tampered_limits(runs, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(runs["tmp"] / "score", new, ignore=shutil.ignore_patterns("audit", "model"))
    table = pq.read_table(new / "limits.parquet").to_pandas()
    table.loc[0, "grade"] = "A" if table.loc[0, "grade"] != "A" else "B"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), new / "limits.parquet")
    with pytest.raises(VerificationError, match="does not match its signature"):
        monitor(runs["tmp"] / "train", new, tmp_path / "out")
    assert not (tmp_path / "out" / "warnings.parquet").exists()


def test_monitor_follows_the_signed_chain(runs, tmp_path):
    """NEW's signature names its predecessor's digest: OLD must be it."""
    tmp = runs["tmp"]
    new = tmp_path / "new"
    shutil.copytree(tmp / "score", new, ignore=shutil.ignore_patterns("audit", "model"))
    limits = pd.read_parquet(new / "limits.parquet")
    signer = Identity.load(new / "keys" / "coordinator.key.json")
    summary = monitor(tmp / "train", tmp / "score", tmp_path / "first")
    chain = {"model": "m", "version": 2, "run_id": "r2",
             "previous": {"run_id": "r1", "version": 1, "digest": summary["old"]["digest"]}}
    publish_limits(limits, new, signer, str(limits.model_version.iloc[0]), metadata={"publication": chain})
    assert "rows digest verified" in monitor(tmp / "train", new, tmp_path / "ok")["notes"][0]
    chain["previous"]["digest"] = "0" * 64
    publish_limits(limits, new, signer, str(limits.model_version.iloc[0]), metadata={"publication": chain})
    with pytest.raises(MonitorError, match="OLD is not NEW's previous publication"):
        monitor(tmp / "train", new, tmp_path / "broken")


def test_score_compares_with_the_previous_publication_it_is_given(runs, tmp_path):
    """--previous: the same month scored again against the month-2 run: nothing moved, every CSI is 0."""
    tmp = runs["tmp"]
    paths = {role: str(tmp / "month2" / f"{role}.parquet") for role in ROLES}
    metrics = runner.run(_nodes(paths), SETTINGS, tmp_path / "again", engine="in-process", console=Console(quiet=True),
                         model=tmp / "train", previous=tmp / "score")
    assert set(metrics["csi"]) == set(ROLES)
    assert all(v == 0.0 for feats in metrics["csi"].values() for v in feats.values())
    result = CliRunner().invoke(app, ["score", "--job", str(tmp_path / "job.toml"), "--model", str(tmp / "train"),
                                      "--out", str(tmp_path / "x"), "--previous", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "--previous" in result.output and "no such folder" in result.output
