"""A job's nodes: each node's NAME and the protocol ROLE it plays in the job.

A federation serves several banks: its nodes have names (the key each one registered,
``[node] role`` in its node.toml, the ``[nodes.<name>]`` section of a local job file), e.g.
``bank-a``, ``bank-b``, ``tax``, ``utilities``. A job names its bank and its hosts, a subset
of the federation's nodes. The protocols know one label holder, the role ``"bank"``: the
job's bank plays it, and every host plays its own name. The mapping lives here, in the
transport and job layers (the coordinator's ServerApp, the node service, job files); the
protocols never see a node's name. Today's single-bank federations name their bank
``bank``, so name and role coincide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedcredit.common.errors import FedCreditError

BANK = "bank"  # the protocol role of a job's label holder (``BANK`` of the protocols)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class JobNodes:
    """The job's bank (a node name) and its hosts (node names, which are also their roles)."""

    bank: str
    hosts: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [self.bank, *self.hosts]

    @property
    def roles(self) -> list[str]:
        return [BANK, *self.hosts]

    def name_of(self, role: str) -> str:
        return self.bank if role == BANK else role

    def role_of(self, name: str) -> str:
        if name == self.bank:
            return BANK
        if name in self.hosts:
            return name
        raise FedCreditError(f"node {name!r} is not in this job (its nodes: {', '.join(self.names)})")


def job_nodes(bank: str, hosts, where: str = "job") -> JobNodes:
    """The job's nodes, checked: plain names, at least one host, no name twice, and no host named ``bank``
    when another node is the job's bank (that name is the label holder's role)."""
    hosts = tuple(hosts)
    for name in (bank, *hosts):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise FedCreditError(f"{where}: node name {name!r} must be letters, digits, '_' or '-' (at most 64)")
    if not hosts:
        raise FedCreditError(f"{where}: a job needs its bank ({bank}) and at least one host")
    if len(set(hosts)) != len(hosts) or bank in hosts:
        raise FedCreditError(f"{where}: each node may appear once; bank {bank!r}, hosts {list(hosts)}")
    if BANK in hosts:
        raise FedCreditError(f"{where}: a host may not be named {BANK!r} while {bank!r} is the job's bank "
                             f"({BANK!r} is the label holder's role in every job)")
    return JobNodes(bank, hosts)


def job_nodes_for_roles(roles: list[str], bank: str = BANK, where: str = "job") -> JobNodes:
    """The job's nodes from its protocol roles (the bank's role first) and the name of its bank."""
    if not roles or roles[0] != BANK:
        raise FedCreditError(f"{where}: roles must list {BANK!r} (the job's bank) first, got {roles!r}")
    return job_nodes(bank, roles[1:], where)
