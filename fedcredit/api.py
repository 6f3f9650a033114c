"""Python API for notebooks: one object per federated job, results as pandas objects.

Every accessor returns only what the named party may see: the bank sees scores and
labels-based evaluation of its own customers, every node its own model part, anyone
the published limits. In a notebook all parties sit in one process (the embedded
engine), so the API keeps their views apart on purpose.

Without ``out=`` a federation works in a temporary folder of its own (data, keys, audit logs,
model parts, scores) and removes it when it is closed (``close()``, or leaving a ``with`` block),
when it is garbage-collected, or when Python exits; with ``out=`` everything stays there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fedcredit.jobs import runner
from fedcredit.data import synth
from fedcredit.data.schema import NODE_ROLES
from fedcredit.common.errors import FedCreditError
from fedcredit.protocols.job import ModelSettings, NodeConfig


class TemporaryFolder:
    """A folder under the system's temporary directory, removed by ``remove()``, when nothing refers to
    it any more, or at interpreter exit, whichever comes first."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="fedcredit-"))
        self.remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


class Federation:
    """A federated job over node files: ``fit()``, then ``evaluate()``, ``score()``, ``model()``, ``limits()``.

    ``out``: where the job's outputs stay; without it a temporary folder removed by ``close()``.
    """

    def __init__(self, nodes: list[NodeConfig], settings: ModelSettings | None = None, *, out: str | Path | None = None,
                 engine: str = "in-process"):
        if not nodes or nodes[0].role != "bank":
            raise FedCreditError("a federation needs the bank first and at least one host")
        self.nodes, self.settings, self.engine = list(nodes), settings or ModelSettings(), engine
        self._temporary = TemporaryFolder() if out is None else None
        self.out = Path(out) if out is not None else self._temporary.path
        self._own: tuple[str, ...] = ()  # entries of ``out`` this federation made itself (synthetic data)
        self.metrics: dict | None = None

    @classmethod
    def synthetic(cls, rows: int = 20_000, seed: int = 42, *, out: str | Path | None = None, **settings) -> "Federation":
        """Three nodes (bank, tax, utilities) on freshly generated synthetic SME data (in ``out``/data)."""
        temporary = TemporaryFolder() if out is None else None
        out = Path(out) if out is not None else temporary.path
        paths = synth.write_nodes(synth.generate(rows, seed), out / "data")
        nodes = [NodeConfig(role, str(paths[role])) for role in NODE_ROLES]
        federation = cls(nodes, ModelSettings(seed=seed, **settings), out=out)
        federation._temporary, federation._own = temporary, ("data",)
        return federation

    def close(self) -> None:
        """Remove the temporary folder (when no ``out`` was given); the results are gone with it."""
        if self._temporary is not None:
            self._temporary.remove()

    def __enter__(self) -> "Federation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fit(self, *, centralized: bool = True, console=None, allow_weak_model: bool = False) -> "Federation":
        """Run the whole job (validate, align, split, prepare, train, score) on the chosen engine.
        A model that fails the quality gate raises unless ``allow_weak_model`` (docs/limits.md).

        Progress: one block updated in place in a notebook, rich's live display on a terminal,
        plain lines elsewhere (fedcredit.jobs.display)."""
        self.metrics = runner.run(self.nodes, self.settings, self.out, engine=self.engine, console=console,
                                  centralized=centralized, allow_weak_model=allow_weak_model, own=self._own)
        return self

    def _require_fit(self) -> None:
        if self.metrics is None:
            raise FedCreditError("call fit() first")

    def evaluate(self) -> pd.Series:
        """The job's published metrics (test AUC, KS, Gini, bank-only and centralized AUC, rounds, seconds)."""
        self._require_fit()
        return pd.Series(self.metrics, name="value")

    def history(self) -> pd.DataFrame:
        """Loss and validation AUC/KS per evaluation, as the progress display showed them."""
        self._require_fit()
        run = json.loads((self.out / "run.json").read_text())
        return pd.DataFrame(run["history"])

    def score(self, party: str = "bank") -> pd.DataFrame:
        """The bank's scores of every aligned enterprise (only the bank may see them)."""
        self._require_fit()
        if party != "bank":
            raise FedCreditError(f"{party} cannot see scores: only the bank learns them")
        return pq.read_table(self.out / "scores.parquet").to_pandas()

    def labelled_scores(self) -> pd.DataFrame:
        """The bank's view for its own evaluation plots: scores joined with its own labels."""
        bank = self.nodes[0]
        from fedcredit.data.validate import load_node

        node = load_node(bank.data, bank.schema())
        labels = pd.DataFrame({"id": node.ids, "default": node.label})
        return self.score("bank").merge(labels, on="id")

    def model(self, party: str) -> pd.DataFrame:
        """One node's own part of the model: scorecard design columns and weights; for SecureBoost the
        bank's tree nodes (host splits only as record numbers) or a host's lookup table with its rules."""
        self._require_fit()
        from fedcredit.scoring.outputs import TREE_PART, read_tree_part

        folder = self.out / "model" / party
        if (folder / TREE_PART).exists():
            doc = read_tree_part(folder, party)[1]
            if "lookup" in doc:
                return pd.DataFrame(doc["lookup"])
            return pd.DataFrame([{"tree": t, **node} for t, nodes in enumerate(doc["trees"]) for node in nodes])
        path = folder / "weights.json"
        if not path.exists():
            raise FedCreditError(f"no model part for {party!r}; nodes: {[n.role for n in self.nodes]}")
        return pd.DataFrame(json.loads(path.read_text())["parameters"])

    def with_engine(self, engine: str) -> "Federation":
        """The same federation on another engine ("simulation" runs Flower)."""
        other = Federation([replace(n) for n in self.nodes], self.settings, out=self.out, engine=engine)
        other._temporary, other._own = self._temporary, self._own  # one folder: removed when neither uses it
        return other

    def limits(self) -> pd.DataFrame:
        """The published, signed pre-credit limits (anyone may see them); verified before they are returned."""
        self._require_fit()
        from fedcredit.scoring.publish import verify_limits

        verify_limits(self.out / "limits.parquet", self.out / "keys" / "coordinator.pub.json")
        return pq.read_table(self.out / "limits.parquet").to_pandas()

    @property
    def report_path(self) -> Path:
        """The bank's HTML report (ROC, KS, score distributions, grades, limits, PSI)."""
        self._require_fit()
        return self.out / "report.html"
