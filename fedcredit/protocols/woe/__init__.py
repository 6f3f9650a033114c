"""Federated WoE/IV binning and feature selection (bank: labels and key; hosts: bins and counts)."""

from fedcredit.protocols.woe.config import KINDS, SELECTED, WoeConfig
from fedcredit.protocols.woe.coordinator import WoeCoordinator
from fedcredit.protocols.woe.party import WoeBank, WoeHost, WoeParty, woe_party

__all__ = ["KINDS", "SELECTED", "WoeBank", "WoeConfig", "WoeCoordinator", "WoeHost", "WoeParty", "woe_party"]
