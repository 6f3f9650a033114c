"""One wording for a model's progress, whichever screen shows it (rich display, ServerApp stream)."""

from __future__ import annotations


def step_line(info: dict, steps: int) -> str:
    """"federated model: tree 3/30, loss 0.31250, validation AUC 0.8612" for one progress event."""
    name = "bank-only baseline" if str(info.get("model", "")).endswith("-bank") else "federated model"
    unit = "tree" if "tree" in info else "iteration"
    loss = f", loss {info['loss']:.5f}" if isinstance(info.get("loss"), float) else ""
    auc = f", validation AUC {info['val_auc']:.4f}" if isinstance(info.get("val_auc"), float) else ""
    return f"{name}: {unit} {info['iteration']}/{steps}{loss}{auc}"
