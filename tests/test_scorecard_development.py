"""A federated scorecard's development outputs: IV tables, points tables that add up to the published score,
WoE features, selection, job-file settings."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.validate import load_node
from fedcredit.jobs.jobfile import read_job
from fedcredit.jobs.in_process import run_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.outputs import publication_for
from fedcredit.scoring.policy import LimitPolicy

ROLES = ("bank", "tax", "utilities")
POLICY = {"scorecard": {"base_points": 500, "base_odds": 20, "pdo": 40}}


def _job(tmp_path, features, binning="monotone", rows=4000, **extra):
    paths = synth.write_nodes(synth.generate(rows, 11), tmp_path / "data")
    out = tmp_path / "out"
    nodes = [NodeConfig(r, str(paths[r]), out_dir=str(out), publish_feature_names=(r == "tax")) for r in ROLES]
    settings = ModelSettings(key_bits=1024, backend="mock", mode=features, binning=binning, **extra)
    result = run_job(nodes, settings, publication=publication_for(LimitPolicy.from_dict(POLICY, "test")))
    return result, nodes, out


@pytest.fixture(scope="module", params=["woe", "binned"])
def job(tmp_path_factory, request):
    return _job(tmp_path_factory.mktemp(request.param), request.param)


def test_points_tables_add_up_to_the_published_score(job):
    result, nodes, out = job
    pub = result["publication"]
    total = np.zeros(len(pub["uscc"]))
    for node in nodes:
        table = pd.read_csv(out / "model" / node.role / "scorecard.csv")
        prep = FeaturePrep.from_json((out / "model" / node.role / "prep.json").read_text())
        data = load_node(node.data, node.schema())
        position = {i: k for k, i in enumerate(data.ids)}
        frame = data.features.iloc[[position[i] for i in pub["uscc"]]].reset_index(drop=True)
        bins = prep.bins(frame)
        if node.role == "bank":
            base = table[table.feature == "(base points)"]
            assert len(base) == 1
            total += float(base.points.iloc[0])
        table = table[table.feature != "(base points)"]
        assert list(dict.fromkeys(table.feature)) == prep.names  # the selected features, in order
        for j, name in enumerate(prep.names):
            points = table[table.feature == name].sort_values("bin").points.to_numpy()
            total += points[bins[:, j]]
    assert np.max(np.abs(total - np.asarray(pub["score"]))) < 1e-9


def test_iv_tables_say_what_was_kept_and_why(job):
    result, nodes, out = job
    for node in nodes:
        iv = pd.read_csv(out / "model" / node.role / "iv.csv")
        assert list(iv.columns) == ["feature", "iv", "bins", "trend", "kept", "reason"]
        assert (iv.kept == (iv.reason == "kept")).all()
        assert (iv[~iv.kept].iv < 0.02).all() or iv[~iv.kept].reason.str.contains("bin").all()
        prep = FeaturePrep.from_json((out / "model" / node.role / "prep.json").read_text())
        assert prep.names == iv[iv.kept].feature.tolist()
        assert all(spec.bin_map and len(spec.woe) == spec.n_bins() for spec in prep.specs)


def test_monotone_bins_have_monotone_woe(job):
    _, nodes, out = job
    for node in nodes:
        table = pd.read_csv(out / "model" / node.role / "scorecard.csv")
        iv = pd.read_csv(out / "model" / node.role / "iv.csv").set_index("feature")
        prep = FeaturePrep.from_json((out / "model" / node.role / "prep.json").read_text())
        for spec in prep.specs:
            trend = iv.loc[spec.name, "trend"]
            if trend not in ("ascending", "descending"):
                continue
            woe = np.asarray(spec.woe)
            missing = spec.bin_map[spec.raw_n_bins() - 1]
            alone = spec.bin_map.count(missing) == 1
            values = woe[:-1] if alone else woe
            steps = np.diff(values)
            assert (steps > 0).all() if trend == "ascending" else (steps < 0).all(), (spec.name, values)
        assert len(table)


def test_woe_features_fit_one_coefficient_per_feature(job):
    result, nodes, out = job
    weights = json.loads((out / "model" / "tax" / "weights.json").read_text())["parameters"]
    prep = FeaturePrep.from_json((out / "model" / "tax" / "prep.json").read_text())
    if prep.mode == "woe":
        assert [p["column"] for p in weights] == [f"{n} (WoE)" for n in prep.names]
    else:
        assert len(weights) == sum(s.n_bins() for s in prep.specs)
    assert result["metrics"]["auc"] > 0.7


def test_job_file_accepts_and_refuses_the_new_settings(tmp_path):
    path = tmp_path / "job.toml"
    base = '[nodes.bank]\ndata = "b.parquet"\n[nodes.tax]\ndata = "t.parquet"\npublish_feature_names = true\n'
    path.write_text('[model]\nfeatures = "woe"\nbinning = "monotone"\ntrend = "descending"\nmin_iv = 0.05\n'
                    'top_k = 8\nmax_correlation = 0.8\nmin_bin_share = 0.1\nl2_grid = [0.1, 0.01]\n' + base)
    job = read_job(path)
    s = job.settings
    assert (s.mode, s.binning, s.trend, s.min_iv, s.top_k, s.max_correlation, s.l2_grid) == \
        ("woe", "monotone", "descending", 0.05, 8, 0.8, [0.1, 0.01])
    assert job.node_configs()[1].publish_feature_names is True
    for bad, key in [('binning = "optimal"', "binning"), ('min_iv = "0.02"', "min_iv"), ("min_bin_share = 0.7", "min_bin_share"),
                     ('trend = "up"', "trend"), ("top_k = -1", "top_k"), ("l2_grid = [0.1, -1]", "l2_grid"),
                     ('type = "secureboost"\nfeatures = "woe"', "features must be 'binned'"), ("tree_monotone = true", "monotone")]:
        path.write_text(f"[model]\n{bad}\n" + base)
        with pytest.raises(FedCreditError, match=key):
            read_job(path)
    path.write_text("[model]\n" + base.replace("true", '"yes"'))
    with pytest.raises(FedCreditError, match="publish_feature_names"):
        read_job(path)


def test_selection_off_keeps_every_feature(tmp_path):
    result, nodes, out = _job(tmp_path, "binned", binning="quantile", rows=2500, min_iv=0.0)
    for node in nodes:
        iv = pd.read_csv(out / "model" / node.role / "iv.csv")
        assert iv.kept.all() or (iv[~iv.kept].bins < 2).all()
    assert pq.read_table(out / "scores.parquet").num_rows == result["intersection"]


def test_l2_grid_picks_the_best_validation_auc_with_warm_starts(tmp_path):
    paths = synth.write_nodes(synth.generate(3000, 5), tmp_path / "data")
    nodes = [NodeConfig(r, str(paths[r])) for r in ROLES]
    single = run_job(nodes, ModelSettings(key_bits=1024, backend="mock", l2=1e-3))
    grid = run_job(nodes, ModelSettings(key_bits=1024, backend="mock", l2_grid=[1e-3, 1.0, 0.03]))
    reg = grid["regularization"]
    assert [p["l2"] for p in reg["path"]] == [1.0, 0.03, 1e-3]  # strongest first
    best = max(reg["path"], key=lambda p: p["val_auc"])
    assert reg["chosen_l2"] == best["l2"]
    fits = [r.get("fit") for r in grid["history"]]
    assert fits[0] == 0 and fits[-1] == 2 and sorted(set(fits)) == [0, 1, 2]
    later = [p["iterations"] for p in reg["path"][1:]]
    assert sum(later) < 2 * single["history"][-1]["iteration"] + 4  # warm starts: the later fits are short
    assert grid["metrics"]["auc"] > 0.7


def test_trees_follow_the_woe_trends_when_asked(tmp_path):
    from fedcredit.jobs.centralized import centralized_auc

    paths = synth.write_nodes(synth.generate(2500, 8), tmp_path / "data")
    nodes = [NodeConfig(r, str(paths[r]), out_dir=str(tmp_path / "out")) for r in ROLES]
    settings = ModelSettings(model="secureboost", key_bits=1024, backend="mock", trees=3, max_depth=3,
                             binning="monotone", tree_monotone=True)
    result = run_job(nodes, settings)
    ids = pq.read_table(tmp_path / "out" / "scores.parquet")["id"].to_numpy()
    assert result["metrics"]["auc"] == pytest.approx(centralized_auc(nodes, ids, settings), abs=1e-9)
    unconstrained = centralized_auc(nodes, ids, ModelSettings(**{**settings.__dict__, "tree_monotone": False}))
    assert unconstrained != pytest.approx(result["metrics"]["auc"], abs=1e-9)
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Model development" in report
    assert (tmp_path / "out" / "model" / "tax" / "report.html").exists()
