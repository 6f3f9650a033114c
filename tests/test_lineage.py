"""Publication versions: each publication of a model names, under its signature, the one it follows."""

import json

import pytest

from fedcredit.crypto import Identity
from fedcredit.scoring.lineage import Lineage, LineageError, following, latest, published
from fedcredit.scoring.publish import VerificationError, publish_limits, verify_limits
from tests.test_publish import limits_table


@pytest.fixture(scope="module")
def signer():
    return Identity.generate("coordinator")


def publish(folder, signer, lineage: Lineage, run_id: str, seed=0, task="score"):
    """A run folder as the coordinator leaves it: signed limits, its key, run.json."""
    folder.mkdir(parents=True, exist_ok=True)
    publish_limits(limits_table(seed=seed), folder, signer, lineage.model,
                   metadata={"publication": lineage.metadata(run_id)})
    signer.public.save(folder / "keys" / "coordinator.pub.json")
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "task": task}))
    return folder


def test_versions_chain_from_the_training_run(tmp_path, signer):
    trained = publish(tmp_path / "train", signer, Lineage.first("m1"), "m1", task="train")
    second = following(trained)
    assert (second.model, second.version) == ("m1", 2)
    assert second.previous["run_id"] == "m1" and second.previous["version"] == 1
    assert second.previous["digest"] == verify_limits(trained / "limits.parquet", signer.public).digest
    scored = publish(tmp_path / "june", signer, second, "s2", seed=1)
    third = following(scored)
    assert (third.version, third.previous["run_id"]) == (3, "s2")
    publish(tmp_path / "july", signer, third, "s3", seed=2)
    publish(tmp_path / "other", signer, Lineage.first("m9"), "m9", task="train")
    assert latest(tmp_path, "m1") == tmp_path / "july"
    assert latest(tmp_path, "m9") == tmp_path / "other"
    assert latest(tmp_path, "nope") is None
    assert published(tmp_path / "july")["version"] == 3


def test_a_publication_from_before_versions_counts_as_version_one_of_its_training_run(tmp_path, signer):
    folder = tmp_path / "old"
    folder.mkdir()
    publish_limits(limits_table(), folder, signer, "m0")
    signer.public.save(folder / "keys" / "coordinator.pub.json")
    (folder / "run.json").write_text(json.dumps({"run_id": "m0", "task": "train"}))
    assert following(folder).version == 2 and latest(tmp_path, "m0") == folder
    (folder / "run.json").write_text(json.dumps({"run_id": "s0", "task": "score"}))
    with pytest.raises(LineageError, match="place in the model's publications is unknown"):
        following(folder)


def test_refuses_to_chain_to_what_it_cannot_verify(tmp_path, signer):
    with pytest.raises(LineageError, match="no published limits"):
        following(tmp_path)
    trained = publish(tmp_path / "train", signer, Lineage.first("m1"), "m1", task="train")
    with pytest.raises(LineageError, match="publishes model m1, not m2"):
        following(trained, model="m2")
    other = Identity.generate("someone")
    with pytest.raises(VerificationError, match="wrong key"):
        following(trained, key=other.public)
    sig = trained / "limits.sig.json"
    doc = json.loads(sig.read_text())
    doc["metadata"]["publication"]["version"] = 7  # a raised version without a new signature
    sig.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="signature does not verify"):
        following(trained)
    (trained / "keys" / "coordinator.pub.json").unlink()
    with pytest.raises(LineageError, match="no coordinator key"):
        following(trained)
