"""Shared set-up for vertical LR tests: aligned synthetic parties without PSI (the job tests cover PSI)."""

import numpy as np

from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.reference import feature_names, join_nodes
from fedcredit.protocols.design import Design
from fedcredit.protocols.job import split_assignment
from fedcredit.protocols.vertical_lr import LrParty, PartyData


def aligned_parties(rows: int, seed: int = 0, roles=("bank", "tax", "utilities"), pool=None):
    joined = join_nodes(synth.generate(rows, seed))
    y = joined["default_12m"].to_numpy()
    split = split_assignment(joined["uscc"].tolist(), seed, 0.6, 0.2)
    train, val = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    parties, designs = {}, {}
    for role in roles:
        frame = joined[feature_names(role)]
        prep = FeaturePrep.fit(frame.iloc[train])
        bank = role == "bank"
        designs[role] = Design(prep, frame, intercept=bank)
        data = PartyData(Design(prep, frame.iloc[train], intercept=bank), designs[role], train, val, y if bank else None)
        parties[role] = LrParty(role, data, pool=pool)
    return parties, designs, y, split


def one_hot(design: Design) -> np.ndarray:
    out = np.zeros((design.rows, design.width))
    out[np.arange(design.rows)[:, None], design.offsets + design.bins] = 1.0
    return out
