"""A node's model-development record from its own features: what its report shows and how trees are constrained.

Everything here is computed at the node from what it holds: its bins, the WoE and IV the
binning step decided, its model part, its own rows' bin shares (training vs test or
scored rows). The bank adds what hosts allowed it to see of their selection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcredit.protocols import secureboost, vertical_lr
from fedcredit.protocols.woe import WoeBank, WoeParty
from fedcredit.scoring.development import Development, characteristic_stability
from fedcredit.scoring.woe_binning import trend_directions

def tree_directions(binning: WoeParty) -> dict[str, list[int]]:
    """The bank's monotone constraints from the WoE trends: its own selected features now, each host's once its
    selection arrived (a host's list follows the order of its selected features, as its histograms do)."""
    out = {vertical_lr.BANK: binning.binning.directions()}
    if isinstance(binning, WoeBank):
        for host, table in binning.host_tables.items():
            out[host] = trend_directions(binning.host_decisions[host], table.kept)
    return out


def node_development(role: str, binning: WoeParty, prep, frame: pd.DataFrame, split: np.ndarray, party,
                     points: pd.DataFrame | None, model: str) -> Development:
    """This node's development section: selection, bins (with points for a binned scorecard), coefficients or the
    bank's tree importance, and the CSI of its selected features (training rows vs test rows)."""
    selection = binning.binning.selection_table()
    bins = binning.binning.bin_table()
    base = None
    if points is not None:
        base_rows = points[points.feature == "(base points)"]
        base = float(base_rows.points.iloc[0]) if len(base_rows) else None
        bins = points[points.feature != "(base points)"].reset_index(drop=True)
    importance = None
    if isinstance(party, secureboost.SbParty) and role == vertical_lr.BANK and party.trees:
        imp = party.importance()["features"]
        importance = pd.DataFrame([{"feature": prep.names[j], "splits": v["splits"], "gain": v["gain"]}
                                   for j, v in imp.items()], columns=["feature", "splits", "gain"])
    stability = None
    held_out = split == 2
    if prep.specs and held_out.any() and (split == 0).any():
        every = prep.bins(frame)
        stability = characteristic_stability(every[split == 0], every[held_out], [s.n_bins() for s in prep.specs],
                                             prep.names)
    hosts = dict(binning.host_tables) if isinstance(binning, WoeBank) else {}
    return Development(role=role, selection=selection, bins=bins, model=model, importance=importance,
                       stability=stability, hosts=hosts, base_points=base)
