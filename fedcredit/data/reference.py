"""Centralized reference models over joined node tables — for synthetic data only.

A real federation can never join its nodes' tables; this is the yardstick that
federated models are compared with (same accuracy as a centralized model), and
the check that the synthetic label really needs every node.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from fedcredit.data.schema import CATEGORY, schema_for


def join_nodes(tables: dict[str, pa.Table], how: str = "inner") -> pd.DataFrame:
    """The bank's rows joined with every host on USCC (``how='inner'``: enterprises known to all)."""
    joined = tables["bank"].to_pandas()
    for role, table in tables.items():
        if role != "bank":
            joined = joined.merge(table.to_pandas(), on="uscc", how=how)
    for role in tables:
        for col in schema_for(role).columns:
            if col.kind == CATEGORY and col.name in joined:
                joined[col.name] = pd.Categorical(joined[col.name], categories=list(col.values))
    return joined


def feature_names(role: str) -> list[str]:
    return [c.name for c in schema_for(role).feature_columns]


def holdout_auc(joined: pd.DataFrame, roles: list[str], seed: int = 0, test_size: float = 0.3) -> float:
    """Test AUC of a gradient-boosted model on the features of ``roles`` (stratified hold-out)."""
    cols = [c for role in roles for c in feature_names(role)]
    y = joined["default_12m"].to_numpy()
    x_tr, x_te, y_tr, y_te = train_test_split(joined[cols], y, test_size=test_size, random_state=seed, stratify=y)
    model = HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.05, categorical_features="from_dtype", early_stopping=True, random_state=seed
    )
    model.fit(x_tr, y_tr)
    return float(roc_auc_score(y_te, model.predict_proba(x_te)[:, 1]))


def signal_split(tables: dict[str, pa.Table], seed: int = 0) -> dict[str, float]:
    """Hold-out AUC of bank-only, bank+each host, and all-node models on the common enterprises."""
    joined = join_nodes(tables)
    hosts = [r for r in tables if r != "bank"]
    out = {"bank": holdout_auc(joined, ["bank"], seed)}
    for host in hosts:
        out[f"bank+{host}"] = holdout_auc(joined, ["bank", host], seed)
    out["all"] = holdout_auc(joined, ["bank", *hosts], seed)
    out["gain_all_vs_bank"] = out["all"] - out["bank"]
    out["rows"] = float(len(joined))
    return out
