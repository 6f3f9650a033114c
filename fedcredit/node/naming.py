"""Which protocol role this node plays in a job, decided from the job's first message.

A node has a name (``role`` in its node config: ``bank-a``, ``tax``, ...). In a job the
node named as the job's bank plays the protocol role ``bank``; a host plays its own name
(``fedcredit.deploy.naming``). The coordinator addresses the job's ``job.hello`` to the
role it wants this node to play and names the job's bank in its meta (``bank``); the
node checks both against its own name and columns before its agent is made, so a node
never plays the bank for another bank's job, nor a bank without its label.
"""

from __future__ import annotations

from dataclasses import replace

from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message
from fedcredit.protocols import BANK, HELLO, NodeConfig


def job_node(node: NodeConfig, messages: list[Message]) -> NodeConfig:
    """The settings this node's agent runs a job with: ``node`` (named by its config's ``role``) in the role
    its job's ``job.hello`` among ``messages`` gives it; refuses a role that is not this node's to play.

    Without a ``job.hello`` the settings stay as they are (the agent refuses such a first message itself).
    """
    hello = next((m for m in messages if m.kind == HELLO), None)
    if hello is None:
        return node
    name, bank = node.role, hello.meta.get("bank", BANK)
    if not isinstance(bank, str):
        raise FedCreditError(f"{hello.describe()}: meta 'bank' must name the job's bank, got {bank!r}")
    if hello.receiver == BANK:  # (a node named "bank" is never a host of another bank's job: it is refused here)
        if bank != name:
            raise FedCreditError(f"node {name} was asked to play the bank of a job whose bank is {bank!r}; refused")
        if node.label is None and name != BANK:
            raise FedCreditError(f"node {name} is named as the job's bank but its node config has no label column "
                                 "(set [columns] label in its node.toml)")
        return replace(node, role=BANK, name=name if name != BANK else None)  # its policy names it by its name
    if hello.receiver != name:
        raise FedCreditError(f"node {name} received a job's first message for {hello.receiver!r}; refused")
    return replace(node, label=None)  # a host's own label (if it is a bank too) never enters another bank's job
