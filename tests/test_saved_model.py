"""A scoring job on a federation: the coordinator finds the bank's saved model and the publication to follow."""

import json
from dataclasses import asdict

import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity
from fedcredit.flower.saved_model import scoring_plan
from fedcredit.protocols import ModelSettings
from fedcredit.scoring.lineage import Lineage, following
from tests.test_lineage import publish

SETTINGS = ModelSettings(key_bits=1024, max_iter=3)


@pytest.fixture
def bank_runs(tmp_path):
    """A bank's folder at the coordinator: its training run 'm1' and one scoring run after it."""
    signer = Identity.generate("coordinator")
    root = tmp_path / "out" / "bank-a"
    trained = publish(root / "may", signer, Lineage.first("m1"), "m1", task="train")
    doc = {"run_id": "m1", "task": "train", "bank": "bank-a", "settings": asdict(SETTINGS),
           "roles": ["bank", "tax", "utilities"]}
    (trained / "run.json").write_text(json.dumps(doc))
    publish(root / "june", signer, following(trained), "s2", seed=1)
    return root, signer


def test_plan_takes_the_models_settings_and_follows_its_newest_publication(bank_runs):
    root, signer = bank_runs
    plan = scoring_plan({"model-run": "m1", "bank": "bank-a"}, root / "july", signer.public)
    assert plan.settings == SETTINGS and plan.roles == ["bank", "tax", "utilities"]
    assert plan.trained == root / "may"
    assert (plan.lineage.model, plan.lineage.version, plan.lineage.previous["run_id"]) == ("m1", 3, "s2")
    assert plan.saved == {"model": "m1", "previous": "s2"}  # the nodes' own distribution of run s2
    (root / "june" / "limits.sig.json").unlink()  # without the scoring publication: follow the training run
    first = scoring_plan({"model-run": "m1", "bank": "bank-a"}, root / "july", signer.public)
    assert first.lineage.version == 2 and first.saved == {"model": "m1", "previous": None}


@pytest.mark.parametrize("cfg,message", [
    ({"bank": "bank-a"}, "must name the training run"),
    ({"model-run": "s2", "bank": "bank-a"}, "no training run 's2'"),  # a scoring run is not a model
    ({"model-run": "zz", "bank": "bank-a"}, "no training run 'zz'"),
    ({"model-run": "m1", "bank": "bank-b"}, "belongs to bank 'bank-a', not to 'bank-b'"),
])
def test_plan_refuses_what_is_not_this_banks_model(bank_runs, cfg, message):
    root, signer = bank_runs
    with pytest.raises(FedCreditError, match=message):
        scoring_plan(cfg, root / "july", signer.public)


def test_plan_refuses_a_publication_signed_by_another_key(bank_runs):
    root, _ = bank_runs
    with pytest.raises(FedCreditError, match="wrong key"):
        scoring_plan({"model-run": "m1", "bank": "bank-a"}, root / "july", Identity.generate("x").public)


def node_run(out_root, flower_run: int, job_run: str, role: str, with_part: bool = True):
    """A deployed node's outputs of one Flower run: its audit log (job run id in every record) and its model part."""
    folder = out_root / f"run-{flower_run}"
    (folder / "audit").mkdir(parents=True)
    (folder / "audit" / f"{role}.jsonl").write_text(json.dumps({"run_id": job_run, "seq": 0}) + "\n")
    if with_part:
        (folder / "model" / role).mkdir(parents=True)
    return folder


def hello(meta: dict):
    from fedcredit.common.wire import Message
    from fedcredit.protocols import HELLO

    return [Message(HELLO, "coordinator", "tax", "s3", 0, meta)]


def test_a_deployed_node_finds_its_part_and_last_publication_by_run_id(tmp_path):
    from fedcredit.node.models import saved_parts
    from fedcredit.protocols import NodeConfig

    out = tmp_path / "nodes-out"
    trained = node_run(out, 7, "m1", "tax")
    june = node_run(out, 9, "s2", "tax", with_part=False)
    node_run(out, 8, "other", "tax")
    node = NodeConfig("tax", "tax.parquet")
    assert saved_parts(node, str(out), hello({"task": "train"})) == node  # only scoring hellos
    found = saved_parts(node, str(out), hello({"task": "score", "model": "m1", "previous": "s2"}))
    assert found.model_dir == str(trained / "model" / "tax") and found.previous_dir == str(june)
    first = saved_parts(node, str(out), hello({"task": "score", "model": "m1"}))
    assert first.previous_dir == str(trained)
    with pytest.raises(FedCreditError, match="no run 'm9' in its out-dir"):
        saved_parts(node, str(out), hello({"task": "score", "model": "m9"}))
    with pytest.raises(FedCreditError, match="left no model part"):
        saved_parts(node, str(out), hello({"task": "score", "model": "s2"}))
    with pytest.raises(FedCreditError, match="needs the node's out-dir"):
        saved_parts(node, None, hello({"task": "score", "model": "m1"}))
