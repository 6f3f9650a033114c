"""A serving run submitted to a named federation: the run config of ``fedcredit serve`` (docs/query.md).

It is a scoring job's submission (``plan_scoring``: the training run id, the bank, the
purpose, the federation's coordinator-side paths, the limit policy) with the task
``query``, the endpoint's address and, when the federation names them, the
coordinator's token digests. The coordinator takes the model's nodes from its own
record of the training run, as for a scoring run.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fedcredit.common.errors import FedCreditError
from fedcredit.deploy.federations import Federation
from fedcredit.jobs import submission

FOREVER_S = 10 * 365 * 86400.0  # a serving run lasts until it is stopped


def listen_address(fed: Federation, listen: str | None) -> str:
    """HOST:PORT the endpoint binds: ``--listen``, else the host and port of the federation's ``query`` URL."""
    if listen:
        return listen
    if not fed.query:
        raise FedCreditError(f"{fed.source}: [federations.{fed.name}] has no 'query' URL; give --listen HOST:PORT "
                             "or add it (fedcredit federation add ... --query https://HOST:PORT)")
    parts = urlsplit(fed.query)
    return f"{parts.hostname}:{parts.port}"


def plan(fed: Federation, model_run: str, bank: str, out: Path, *, listen: str | None = None,
         purpose: str = "credit-scoring", policy: Path | None = None, timeout: float = 600.0) -> submission.Submission:
    """The serving run's submission (run config keys of pyproject.toml's [tool.flwr.app.config])."""
    sub = submission.plan_scoring(fed, model_run, bank, purpose, out, policy)
    sub.run_config.update({"task": "query", "query-listen": listen_address(fed, listen), "timeout": float(timeout)})
    if fed.query_tokens:
        sub.run_config["query-tokens"] = fed.query_tokens
    return sub


def serve(sub: submission.Submission, out: Path, *, echo=print, timeout: float = FOREVER_S) -> dict:
    """Submit the serving run and stream its lines until it is stopped (Ctrl-C here stops it at the coordinator)."""
    return submission.run(sub, out, echo=echo, timeout=timeout)
